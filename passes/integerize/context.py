"""The state of one integerize rewrite and the helpers that rules share.

``Context`` holds the BlockBuilder that builds the new ``main``, the map from original values to
their integer versions, the calibration, the options and the report. Its helpers emit what every
rule needs: a value at a calibrated scale (``act_scale``, ``requant``, ``as_int``,
``fitting_input``), a dtype (``as_dtype``), a TE kernel (``emit_te``), a constant add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import tvm
from tvm import relax

from shiftc.calibrate import Calibration
from shiftc.core.contract import Requantize
from shiftc.core.errors import InputError, UnsupportedModelError
from shiftc.core.provenance import OnnxNode, nodes_of, with_consumers
from shiftc.kernels import integer as K
from shiftc.reference.constant_add import constant_room
from shiftc.reference.quant import bias_codes, pow2_up

from .scales import SATURATING_RATIO, bits_for, requant_params
from .value import ACT_BITS, WIDE_BITS, IntOptions, IntReport, Q, dtype, int_dtype, shape


class Uncovered(NamedTuple):
    op: str  # the Relax op (or marked function) without an integer form
    value: str  # the Relax value it computes
    node: OnnxNode | None  # the ONNX node it came from (None: a value shiftc created)

    def describe(self) -> str:
        return self.node.describe() if self.node is not None else f"value {self.value}"


@dataclass
class Context:
    mod: tvm.IRModule
    calib: Calibration
    opts: IntOptions
    bb: relax.BlockBuilder = field(default_factory=relax.BlockBuilder)
    report: IntReport = field(default_factory=IntReport)
    vals: dict = field(default_factory=dict)  # original Var -> Q | np.ndarray (constant) | list (tuple)
    unsupported: list = field(default_factory=list)  # Uncovered: every op left without an integer form
    nominal: bool = False  # a coverage check on nominal scales (driver.coverage): no width search
    nodes: dict = field(default_factory=dict, init=False)  # value name -> OnnxNode (shiftc.core.provenance)
    _readers: dict | None = field(default=None, init=False)  # value name -> ops reading it (``readers``)

    def __post_init__(self):
        table = nodes_of(self.mod)
        self.nodes = with_consumers(self.mod["main"], table) if table else {}

    def node(self, name: str) -> str:
        """The ONNX node (``'name' (OpType)``) that value ``name`` came from, else the value's name."""
        n = self.nodes.get(name)
        return n.describe() if n is not None else f"value {name}"

    def uncovered(self, var, op: str) -> None:
        """Record ``var``'s op as having no integer form (a float island with ``float_fallback``)."""
        n = self.nodes.get(var.name)
        self.unsupported.append(Uncovered(op, var.name, n))
        self.report.float_ops.append({"op": op, "value": var.name, "node": n.name if n else "",
                                      "onnx_op": n.op_type if n else ""})

    @property
    def pow2(self) -> bool:
        return self.opts.requant == "pow2"

    def get(self, expr):
        """The rewritten form of an original argument: Q, a NumPy constant, a list (tuple) or the
        expression itself (ShapeExpr, PrimValue, ...)."""
        if isinstance(expr, tvm.ir.expr.Constant):
            v = expr.value
            return v.numpy() if hasattr(v, "numpy") else np.asarray(v, dtype=str(expr.ty.dtype))
        if isinstance(expr, relax.Var):
            return self.vals[expr]
        if isinstance(expr, relax.Tuple):
            return [self.get(f) for f in expr.fields]
        return expr

    def emit(self, expr) -> relax.Var:
        return self.bb.emit(expr)

    def emit_te(self, fn, *args, name: str, attrs: dict | None = None, **kw) -> relax.Var:
        return self.bb.emit(self.bb.call_te(fn, *args, primfunc_name_hint=name, primfunc_attrs=attrs, **kw))

    def same_op(self, call: relax.Call, new_args) -> relax.Var:
        """``call`` again with its leading arguments replaced by ``new_args``."""
        full = list(new_args) + list(call.args[len(new_args):])
        return self.bb.emit(relax.Call(call.op, full, call.attrs, call.ty_args))

    def act_scale(self, name: str, bits: int, unsigned: bool = False) -> float:
        """The calibrated per-tensor scale of value ``name`` at ``bits`` bits (signed or unsigned);
        a value mixed precision widened (``IntOptions.wide``) takes its full range at int16."""
        if name not in self.calib.thresholds:
            if self.calib.recorded:
                raise InputError(f"the model's recorded activation thresholds have none for {self.node(name)} "
                                 f"(value {name!r}): record them again with shiftc finetune --integer-only")
            raise UnsupportedModelError(f"integerize: value {name!r} has no calibration statistics")
        s = self.calib.scale(name, bits, unsigned, full_range=bits > ACT_BITS and name in self.opts.wide)
        return pow2_up(s) if self.pow2 else s

    def operand_bits(self, name: str) -> int:
        """The width of value ``name`` as a matmul / conv operand: int16 where mixed precision chose
        it (``IntOptions.wide``), else int8."""
        return WIDE_BITS if name in self.opts.wide else ACT_BITS

    def readers(self, name: str) -> list[str]:
        """The ops (Relax op names; "" for other expressions) of every binding that reads value ``name``."""
        if self._readers is None:
            self._readers = {}
            for block in self.mod["main"].body.blocks:
                for b in block.bindings:
                    op = b.value.op.name if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op) else ""
                    for v in relax.analysis.free_vars(b.value):
                        self._readers.setdefault(v.name, []).append(op)
            for v in relax.analysis.free_vars(self.mod["main"].body.body):
                self._readers.setdefault(v.name, []).append("")
        return self._readers.get(name, [])

    def unsigned_ok(self, name: str) -> bool:
        """Whether value ``name`` may take unsigned codes: calibration saw it non-negative on every
        sample (not with ``--requant pow2``, whose accelerator stores signed values)."""
        return name in self.calib.nonnegative and not self.pow2

    def requant(self, q: Q, s_out: float, bits: int, unsigned: bool = False) -> Q:
        """``q`` -> per-tensor ``bits``-bit integers at ``s_out`` (a ratio so large that every
        nonzero input saturates is clamped to one that does the same: ``requant_params``);
        ``unsigned``: saturated to ``[0, 2**bits - 1]``."""
        ratio = np.asarray(q.scale, np.float64) / s_out
        if np.any(ratio > SATURATING_RATIO):
            self.report.notes.append(f"{int(np.sum(ratio > SATURATING_RATIO))} channel(s) requantised at ratio > 2^29 "
                                     "(input range far below one output step): nonzero inputs saturate")
        m, e = requant_params(ratio, self.pow2, out_bits=bits)
        if q.per_axis:  # the attributes let a target recognise the op (targets/vta)
            attrs = Requantize(bits=int(bits), axis=int(q.axis), unsigned=unsigned).to_attrs()
            mc, ec = relax.const(np.asarray(m, np.int64)), relax.const(np.asarray(e, np.int32))
            out = self.emit_te(K.requantize_per_axis, q.expr, mc, ec, q.axis, bits, name="requant_axis", attrs=attrs,
                               unsigned=unsigned)
        else:
            attrs = Requantize(bits=int(bits), m=int(m), e=int(e), unsigned=unsigned).to_attrs()
            out = self.emit_te(K.requantize, q.expr, int(m), int(e), bits, name="requant", attrs=attrs, unsigned=unsigned)
        return Q(out, s_out, bits, unsigned=unsigned)

    def as_int(self, name: str, q: Q, bits: int, unsigned_ok: bool = False) -> Q:
        """``q`` as per-tensor integers of at most ``bits`` bits (requantised to ``name``'s
        calibrated scale when it is wider or per axis). ``unsigned_ok``: the consumer takes
        unsigned codes, and a value proved non-negative (``unsigned_ok(name)``) gets them."""
        if not q.per_axis and q.bits <= bits and not q.unsigned:
            return q
        unsigned = unsigned_ok and self.unsigned_ok(name)
        if q.unsigned and q.bits <= bits and unsigned:
            return q
        return self.requant(q, self.act_scale(name, bits, unsigned), bits, unsigned)

    def fitting_input(self, name: str, q: Q, ok, **widths) -> Q | None:
        """``q`` as per-tensor integers at the widest width (``bits_for``) whose calibrated scale
        an op accepts (``ok(scale, bits)``); requantised again if its current scale is not
        accepted. None when no width fits. On nominal scales (``nominal``) the widest width is
        taken: whether one fits depends on the calibrated scale, which the check does not know."""
        if self.nominal:
            return self.as_int(name, q, widths.get("widest", 16))
        bits = bits_for(lambda b: ok(self.act_scale(name, b), b), **widths)
        if bits is None:
            return None
        x = self.as_int(name, q, bits)
        if not ok(float(x.scale), x.bits):
            x = self.requant(q, self.act_scale(name, bits), bits)
        return x

    def as_dtype(self, q: Q, bits: int) -> relax.Expr:
        dt = int_dtype(bits, q.unsigned)
        return q.expr if dtype(q.expr) == dt else self.bb.emit(relax.op.astype(q.expr, dt))

    def narrow(self, q: Q, r: int, name: str, why: str) -> Q:
        """``q`` (any integer dtype, |q| <= ``q.max_abs``) as int32 ``rshift_round(q, r)`` at scale
        ``q.scale * 2**r``; the report notes it (NUMERICS.md §2.8)."""
        if r == 0:
            return q
        attrs = Requantize(bits=32, m=1, e=int(r)).to_attrs()
        out = self.emit_te(K.requantize, q.expr, 1, int(r), 32, name="requant", attrs=attrs)
        b = np.asarray(q.bound if q.bound is not None else q.max_abs, np.int64)
        bound = (b + ((1 << r) >> 1)) >> r
        self.report.notes.append(f"{name}: {why}; int32 value narrowed by >> {r} (scale x 2^{r})")
        return Q(out, np.asarray(q.scale, np.float64) * 2.0**r if q.per_axis else float(q.scale) * 2.0**r, 32, q.axis,
                 bound=bound if q.per_axis else int(bound.max()))

    def _room_for(self, q: Q, c: np.ndarray, like, name: str) -> Q:
        """``q`` narrowed, per channel where it is per axis, until ``|q| + max|round(c / s)|``
        provably fits int32 (``reference.constant_add``: a channel needing a shift above 62 has
        its accumulator dropped). Returns ``q`` itself when it already fits."""
        s = q.scales_like(like)
        t = np.abs(np.broadcast_to(c, shape(like)) / s)
        if q.per_axis:
            ax = q.axis % t.ndim
            t = np.max(t, axis=tuple(i for i in range(t.ndim) if i != ax), initial=0.0)
            b = np.broadcast_to(np.asarray(q.bound if q.bound is not None else q.max_abs, np.int64), t.shape)
        else:
            t, b = float(np.max(t, initial=0.0)), q.max_abs
        m, e, r = constant_room(b, t)
        if not np.any(r) and np.all(m == 1):
            return q
        narrowed, dropped = int(np.sum(r > 0)), int(np.sum(m == 0))
        self.report.notes.append(f"{name}: constant up to {float(np.max(t)):,.0f} steps could leave int32; "
                                 f"{narrowed} channel(s) narrowed by up to >> {int(r.max())} (scale x 2^r)"
                                 + (f", {dropped} with a negligible accumulator dropped" if dropped else ""))
        bound = np.where(m == 0, 0, (b + ((1 << r) >> 1)) >> r)
        if q.per_axis:
            mc, ec = relax.const(m), relax.const(e.astype(np.int32))
            attrs = Requantize(bits=32, axis=int(q.axis)).to_attrs()
            out = self.emit_te(K.requantize_per_axis, q.expr, mc, ec, q.axis, 32, name="requant_axis", attrs=attrs)
            return Q(out, np.asarray(q.scale, np.float64) * 2.0**r, 32, q.axis, bound=bound.astype(np.int64))
        attrs = Requantize(bits=32, m=int(m[0]), e=int(e[0])).to_attrs()
        out = self.emit_te(K.requantize, q.expr, int(m[0]), int(e[0]), 32, name="requant", attrs=attrs)
        return Q(out, float(q.scale) * 2.0 ** int(r[0]), 32, bound=int(bound[0]))

    def add_const(self, q: Q, c: np.ndarray, like, negate_q: bool = False) -> Q | None:
        """``q + c`` (``-q + c``) for a float constant ``c``: int32 ``q + round(c / s)`` at ``q``'s
        scale (per channel for per-axis ``q``), ``q`` narrowed first when the sum's bound
        ``max|q| + max|c / s|`` could leave int32. None when ``c`` does not broadcast to ``like``."""
        out_shape = shape(like)
        if np.shape(c) != out_shape and np.broadcast_shapes(np.shape(c), out_shape) != out_shape:
            return None
        q = self._room_for(q, c, like, like.name if hasattr(like, "name") else "add")
        cq = bias_codes(c, q.scales_like(like))
        x = self.as_dtype(q, 32)
        if negate_q:
            x = self.bb.emit(relax.op.negative(x))
        out = self.bb.emit(relax.op.add(x, relax.const(cq)))
        return Q(out, q.scale, 32, q.axis, bound=q.max_abs + int(np.max(np.abs(cq.astype(np.int64)), initial=0)))
