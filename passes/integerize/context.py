"""The state of one integerize rewrite and the helpers that rules share.

``Context`` holds the BlockBuilder that builds the new ``main``, the map from original values to
their integer versions, the calibration, the options and the report. Its helpers emit what every
rule needs: a value at a calibrated scale (``act_scale``, ``requant``, ``as_int``,
``fitting_input``), a dtype (``as_dtype``), a TE kernel (``emit_te``), a constant add.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from shiftc.calibrate import Calibration
from shiftc.core.contract import Requantize
from shiftc.core.errors import UnsupportedModelError
from shiftc.kernels import integer as K
from shiftc.reference.overflow import NARROW_LIMIT
from shiftc.reference.quant import bias_codes, pow2_up
from shiftc.reference.rounding import INT32_MAX

from .scales import bits_for, requant_params
from .value import IntOptions, IntReport, Q, dtype, int_dtype, shape


@dataclass
class Context:
    mod: tvm.IRModule
    calib: Calibration
    opts: IntOptions
    bb: relax.BlockBuilder = field(default_factory=relax.BlockBuilder)
    report: IntReport = field(default_factory=IntReport)
    vals: dict = field(default_factory=dict)  # original Var -> Q | np.ndarray (constant) | list (tuple)
    unsupported: list = field(default_factory=list)  # "op (value)" of every op without an integer form

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

    def act_scale(self, name: str, bits: int) -> float:
        """The calibrated per-tensor scale of value ``name`` at ``bits`` bits."""
        if name not in self.calib.thresholds:
            raise UnsupportedModelError(f"integerize: value {name!r} has no calibration statistics")
        s = self.calib.scale(name, bits)
        return pow2_up(s) if self.pow2 else s

    def requant(self, q: Q, s_out: float, bits: int) -> Q:
        """``q`` -> per-tensor ``bits``-bit integers at ``s_out``."""
        m, e = requant_params(np.asarray(q.scale, np.float64) / s_out, self.pow2)
        if q.per_axis:  # the attributes let a target recognise the op (targets/vta)
            attrs = Requantize(bits=int(bits), axis=int(q.axis)).to_attrs()
            mc, ec = relax.const(np.asarray(m, np.int64)), relax.const(np.asarray(e, np.int32))
            out = self.emit_te(K.requantize_per_axis, q.expr, mc, ec, q.axis, bits, name="requant_axis", attrs=attrs)
        else:
            attrs = Requantize(bits=int(bits), m=int(m), e=int(e)).to_attrs()
            out = self.emit_te(K.requantize, q.expr, int(m), int(e), bits, name="requant", attrs=attrs)
        return Q(out, s_out, bits)

    def as_int(self, name: str, q: Q, bits: int) -> Q:
        """``q`` as per-tensor integers of at most ``bits`` bits (requantised to ``name``'s
        calibrated scale when it is wider or per axis)."""
        if not q.per_axis and q.bits <= bits:
            return q
        return self.requant(q, self.act_scale(name, bits), bits)

    def fitting_input(self, name: str, q: Q, ok, **widths) -> Q | None:
        """``q`` as per-tensor integers at the widest width (``bits_for``) whose calibrated scale
        an op accepts (``ok(scale, bits)``); requantised again if its current scale is not
        accepted. None when no width fits."""
        bits = bits_for(lambda b: ok(self.act_scale(name, b), b), **widths)
        if bits is None:
            return None
        x = self.as_int(name, q, bits)
        if not ok(float(x.scale), x.bits):
            x = self.requant(q, self.act_scale(name, bits), bits)
        return x

    def as_dtype(self, q: Q, bits: int) -> relax.Expr:
        dt = int_dtype(bits)
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
        """``q`` narrowed until ``max|q| + max|round(c / s)|`` provably fits int32."""
        b, cmax = q.max_abs, float(np.max(np.abs(c / q.scales_like(like)), initial=0.0))
        r = 0
        while ((b + ((1 << r) >> 1)) >> r) + cmax / 2.0**r + 1 > INT32_MAX:
            r += 1
        why = f"bound {b:,} + constant {cmax:,.0f} could leave int32"
        return self.narrow(q, r, name, why) if r else q

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
