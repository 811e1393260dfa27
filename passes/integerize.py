"""Integerize: a calibrated float Relax ``main`` -> integer-only arithmetic between a quantiser at
the inputs and a dequantiser at the outputs.

Rewrite, value by value (every integer value carries its real scale: per tensor, or per axis for
accumulators of per-channel weights)::

    x: f32 input               ->  quantize(x, s_x) : int8                        (float boundary)
    matmul(x, W_const) [+ b]   ->  matmul(x_i8, W_i8, out=int32) [+ b_i32]        scale s_x * s_w[c]
    conv2d(x, W_const) [+ b]   ->  conv2d(x_i8, W_i8, out=int32) [+ b_i32]        scale s_x * s_w[c]
    matmul(a, b)               ->  matmul(a_i8, b_i8, out=int32)                  scale s_a * s_b
    shift kernel (shift pass)  ->  shift_matmul_int / shift_conv2d_int on x_i8     scale s_x * alpha_c * 2**-P
    x * c, x / c  (scalar c>0) ->  x, with its scale times c (no op)
    relu / max_pool2d          ->  the same op on the integers (same scale)
    a + b  (activations)       ->  add_int (both requantised to the sum's scale), int16
    x + c  (constant)          ->  x_i32 + round(c / s_x)
    softmax(x, axis=-1)        ->  Shiftmax(x, n=12)                              int8 at 2**-7
    gelu(x)                    ->  ShiftGELU (row max, n=23) | lambda-ShiftGELU   int32 at s*2**-15
    layer_norm(x, g, b)        ->  I-LayerNorm, then sign(g) * requantize_per_axis(|g| sqrt(C) 2**-30
                                   / s_out) + round(b / s_out), saturated to int8
    mean / avg_pool2d          ->  int_mean / int_avgpool2d (round half up)
    resize2d linear            ->  nearest_upsample                              (upsample="nearest")
    l2_normalize(x)            ->  x                                              (l2norm="remove")
    reshape, permute_dims, ... ->  the same op on the integers
    y: f32 output              ->  dequantize(y_int, s_y)                         (float boundary)

A value is requantised (``requantize`` / ``requantize_per_axis``, dyadic ``m * 2**-e``) to the scale
that calibration gave its float original only when a consumer needs it narrower or per tensor.
Widths: int8 into matmul/conv, int16 for residual sums and the inputs of non-linear ops (narrower
where an op's exponent range demands: ShiftGELU needs ``s >= 2**-8``).

Ops with no integer form stay float only when ``float_fallback`` is set: their inputs are
dequantised and their output quantised again, and each such island is reported. Otherwise the pass
raises ``UnsupportedModelError`` listing them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from shiftc import reference as ref
from shiftc.calibrate import Calibration, qmax
from shiftc.core.errors import UnsupportedModelError
from shiftc.kernels import integer as K
from shiftc.kernels import shift as SK

from . import int_quant as iq

log = logging.getLogger(__name__)

ACT_BITS = 8  # matmul / conv operands
WIDE_BITS = 16  # residual sums, inputs of non-linear ops
# Shiftmax: n = 12 exponent bits (I-ViT: 15). The output is int8 at 2**-7, so exponents below
# 2**-12 of the row max are invisible anyway; a smaller n keeps the row sum S small, and the
# reciprocal floor((2**31-1) / S) precise. Inputs are requantised to the widest width whose
# worst-case row sum (every element at the max) stays <= 2**26.
SHIFTMAX_N = 12
SATURATING_RATIO = float(2**20)
SHIFTMAX_SUM_LIMIT = 1 << 26
_OPAQUE = 8  # TVM kOpaque: keep boundary kernels out of fusion, so the float scan can name them


@dataclass
class Q:
    """An integer value: ``real = expr * scale`` (``scale`` per ``axis`` when it is an array)."""

    expr: relax.Expr
    scale: float | np.ndarray
    bits: int
    axis: int | None = None

    @property
    def per_axis(self) -> bool:
        return self.axis is not None


@dataclass
class IntOptions:
    gelu: str = "shift"  # shift | lambda
    upsample: str = "keep"  # keep | nearest
    l2norm: str = "keep"  # keep | remove
    requant: str = "dyadic"  # dyadic | pow2
    float_fallback: bool = False
    lambdas: dict = field(default_factory=dict)  # gelu input name -> lambda terms


@dataclass
class IntReport:
    rows: list = field(default_factory=list)  # one per rewritten op
    float_ops: list = field(default_factory=list)  # (op, value, reason)
    notes: list = field(default_factory=list)


def _shape(expr) -> tuple[int, ...]:
    ty = expr.ty
    return tuple(int(d) for d in ty.shape.values)


def _along(values: np.ndarray, axis: int, like) -> np.ndarray:
    """Per-channel ``values`` shaped to broadcast along ``axis`` of a value of ``like``'s rank."""
    shape = [1] * len(_shape(like))
    shape[axis] = -1
    return np.asarray(values).reshape(shape)


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _is_float_type(ty) -> bool:
    if isinstance(ty, relax.TupleType):
        return any(_is_float_type(t) for t in ty.fields)
    return isinstance(ty, relax.TensorType) and str(ty.dtype).startswith(("float", "bfloat"))


def _op_name(call) -> str:
    op = call.op
    return op.name if isinstance(op, tvm.ir.Op) else ""


class Integerizer:
    """Rebuilds ``main`` value by value; see the module docstring."""

    def __init__(self, mod: tvm.IRModule, calib: Calibration, opts: IntOptions, func_name: str = "main", probe=()):
        self.mod, self.calib, self.opts, self.func_name = mod, calib, opts, func_name
        self.probe = list(probe)  # also return these values, dequantised (error analysis)
        self.pow2 = opts.requant == "pow2"
        self.bb = relax.BlockBuilder()
        self.vals: dict = {}  # original Var -> Q | np.ndarray (constant) | list (tuple of those)
        self.report = IntReport()
        self._unsupported: list[str] = []

    # ------------------------------------------------------------------ scales
    def act_scale(self, name: str, bits: int) -> float:
        if name not in self.calib.thresholds:
            raise UnsupportedModelError(f"integerize: value {name!r} has no calibration statistics")
        s = self.calib.scale(name, bits)
        return iq.pow2_up(s) if self.pow2 else s

    def emit_te(self, fn, *args, name: str, attrs: dict | None = None, **kw):
        return self.bb.emit(self.bb.call_te(fn, *args, primfunc_name_hint=name, primfunc_attrs=attrs, **kw))

    def requant(self, q: Q, s_out: float, bits: int, name: str) -> Q:
        """``q`` -> per-tensor ``bits``-bit integers at ``s_out``."""
        ratio = np.asarray(q.scale, np.float64) / s_out
        m, e = iq.requant_params(ratio, self.pow2)
        if q.per_axis:
            mc = relax.const(np.asarray(m, np.int64))
            ec = relax.const(np.asarray(e, np.int32))
            attrs = {"shiftc.requant": "per_axis", "shiftc.axis": int(q.axis), "shiftc.bits": int(bits)}
            out = self.emit_te(K.requantize_per_axis, q.expr, mc, ec, q.axis, bits, name="requant_axis", attrs=attrs)
        else:  # the attrs let a target recognise the op (targets/vta)
            attrs = {"shiftc.requant": "per_tensor", "shiftc.m": int(m), "shiftc.e": int(e), "shiftc.bits": int(bits)}
            out = self.emit_te(K.requantize, q.expr, int(m), int(e), bits, name="requant", attrs=attrs)
        return Q(out, s_out, bits)

    def as_int(self, name: str, q: Q, bits: int) -> Q:
        """``q`` as per-tensor integers of at most ``bits`` bits (requantised to ``name``'s
        calibrated scale when it is wider or per axis)."""
        if not q.per_axis and q.bits <= bits:
            return q
        return self.requant(q, self.act_scale(name, bits), bits, name)

    def fitting_input(self, name: str, q: Q, ok, **widths) -> Q | None:
        """``q`` as per-tensor integers at the widest width (``iq.bits_for``) whose calibrated scale
        an op accepts (``ok(scale, bits)``); requantised again if its current scale is not
        accepted. None when no width fits."""
        bits = iq.bits_for(lambda b: ok(self.act_scale(name, b), b), **widths)
        if bits is None:
            return None
        x = self.as_int(name, q, bits)
        if not ok(float(x.scale), x.bits):
            x = self.requant(q, self.act_scale(name, bits), bits, name)
        return x

    def as_dtype(self, q: Q, bits: int) -> relax.Expr:
        dt = iq.int_dtype(bits)
        return q.expr if _dtype(q.expr) == dt else self.bb.emit(relax.op.astype(q.expr, dt))

    # ------------------------------------------------------------------ driver
    def run(self) -> tvm.IRModule:
        func = self.mod[self.func_name]
        params = [relax.Var(p.name, p.ty) for p in func.params]
        with self.bb.function(self.func_name, params, attrs=dict(func.attrs) if func.attrs is not None else None):
            with self.bb.dataflow():
                for p, newp in zip(func.params, params):
                    self.vals[p] = self.input(p, newp)
                for block in func.body.blocks:
                    for b in block.bindings:
                        if not isinstance(b, relax.VarBinding):
                            raise UnsupportedModelError(f"integerize: unsupported binding {type(b).__name__}")
                        try:
                            self.vals[b.var] = self.visit(b.var, b.value)
                        except (ValueError, OverflowError) as exc:  # reference range checks (scales, headroom)
                            if self._unsupported:  # a consequence of an op already listed
                                raise self._unsupported_error() from None
                            raise UnsupportedModelError(f"integerize: cannot rewrite {b.var.name}: {str(exc).splitlines()[0][:200]}") from None
                result = self.output(func.body.body)
                if self.probe:
                    named = {v.name: v for v in self.vals if isinstance(v, relax.Var)}
                    result = relax.Tuple([result] + [self.output(named[n]) for n in self.probe])
                out = self.bb.emit_output(result)
            self.bb.emit_func_output(out)
        if self._unsupported and not self.opts.float_fallback:
            raise self._unsupported_error()
        new = self.bb.get()
        for gv, f in self.mod.functions.items():
            if gv.name_hint != self.func_name and gv.name_hint not in [g.name_hint for g in new.functions.keys()]:
                new[gv] = f  # the GlobalVar itself: fallback calls refer to it; unused helpers go with DCE
        return relax.transform.DeadCodeElimination([self.func_name])(new)

    def _unsupported_error(self) -> UnsupportedModelError:
        more = f" and {len(self._unsupported) - 8} more" if len(self._unsupported) > 8 else ""
        return UnsupportedModelError(
            "integer-only: no integer form for " + "; ".join(self._unsupported[:8]) + more
            + " (pass --float-fallback to keep them in float)"
        )

    def input(self, p, newp):
        if _dtype(p) != "float32":
            return newp  # integer / bool inputs (token ids, masks) are used as they are
        s = self.act_scale(p.name, ACT_BITS)
        out = self.emit_te(iq.quantize_te, newp, s, ACT_BITS, name="quantize", attrs={"op_pattern": _OPAQUE, "shiftc.kernel": iq.QUANTIZE_KERNEL})
        self.report.rows.append({"op": "quantize", "value": p.name, "scale": s})
        return Q(out, s, ACT_BITS)

    def output(self, expr):
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self.output(f) for f in expr.fields])
        v = self.get(expr)
        if isinstance(v, np.ndarray):
            return relax.const(v)
        if not isinstance(v, Q):
            return v
        if _dtype(expr) != "float32":
            return v.expr
        if v.per_axis:
            shape = [1] * len(_shape(expr))
            shape[v.axis] = -1
            scale = relax.const(np.asarray(v.scale, np.float32).reshape(shape))
        else:
            scale = float(v.scale)
        return self.bb.emit(
            self.bb.call_te(iq.dequantize_te, v.expr, scale, primfunc_name_hint="dequantize",
                            primfunc_attrs={"op_pattern": _OPAQUE, "shiftc.kernel": iq.DEQUANTIZE_KERNEL})
        )

    def get(self, expr):
        if isinstance(expr, tvm.ir.expr.Constant):
            v = expr.value
            return v.numpy() if hasattr(v, "numpy") else np.asarray(v, dtype=str(expr.ty.dtype))
        if isinstance(expr, relax.Var):
            return self.vals[expr]
        if isinstance(expr, relax.Tuple):
            return [self.get(f) for f in expr.fields]
        return expr  # ShapeExpr, PrimValue, ...

    # ------------------------------------------------------------------ dispatch
    def visit(self, var, value):
        if isinstance(value, relax.TupleGetItem):
            return self.get(value.tuple_value)[value.index]
        if isinstance(value, relax.Var):
            return self.get(value)
        if isinstance(value, relax.Tuple):
            return [self.get(f) for f in value.fields]
        if not isinstance(value, relax.Call):
            raise UnsupportedModelError(f"integerize: unsupported expression {type(value).__name__} for {var.name}")
        if isinstance(value.op, relax.GlobalVar):
            return self.visit_global_call(var, value)
        op = _op_name(value)
        args = [self.get(a) for a in value.args]
        if all(not isinstance(a, (Q, list)) for a in args):
            folded = self.fold(op, value, args)
            if folded is not None:
                return folded
            if not _is_float_type(var.ty) and any(isinstance(a, relax.Expr) and not isinstance(a, (relax.ShapeExpr, relax.GlobalVar)) for a in args):
                # integer bookkeeping on integer inputs (index wrap-around, masks): unchanged
                new_args = [relax.const(a, str(a.dtype)) if isinstance(a, np.ndarray) else a for a in args]
                return self.bb.emit(relax.Call(value.op, new_args, value.attrs, value.ty_args))
        handler = getattr(self, "op_" + op.replace("relax.", "").replace(".", "_"), None)
        if handler is not None:
            out = handler(var, value, args)
            if out is not None:
                return out
        return self.fallback(var, value, args, f"{op}")

    # ------------------------------------------------------------------ constants
    _FOLD = {
        "relax.reshape": lambda v, a: a[0].reshape(_shape(v)),
        "relax.permute_dims": lambda v, a: np.transpose(a[0], [int(x) for x in v.attrs.axes]) if v.attrs.axes is not None else a[0].T,
        "relax.squeeze": lambda v, a: a[0].reshape(_shape(v)),
        "relax.expand_dims": lambda v, a: a[0].reshape(_shape(v)),
        "relax.flatten": lambda v, a: a[0].reshape(_shape(v)),
        "relax.broadcast_to": lambda v, a: np.broadcast_to(a[0], _shape(v)).copy(),
        "relax.add": lambda v, a: (a[0] + a[1]),
        "relax.subtract": lambda v, a: (a[0] - a[1]),
        "relax.multiply": lambda v, a: (a[0] * a[1]),
        "relax.divide": lambda v, a: (a[0] / a[1]),
        "relax.sqrt": lambda v, a: np.sqrt(a[0]),
        "relax.astype": lambda v, a: a[0].astype(str(v.attrs.dtype)),
        "relax.isnan": lambda v, a: np.isnan(a[0]),
        "relax.where": lambda v, a: np.where(a[0], a[1], a[2]),
        "relax.maximum": lambda v, a: np.maximum(a[0], a[1]),
        "relax.take": lambda v, a: np.take(a[0], a[1], axis=int(v.attrs.axis), mode="wrap" if str(v.attrs.mode) == "wrap" else "raise"),
    }

    def fold(self, op, call, args):
        if op == "relax.shape_of" and isinstance(args[0], np.ndarray):
            return relax.ShapeExpr([int(d) for d in args[0].shape])
        if op == "relax.shape_to_tensor" and isinstance(args[0], relax.ShapeExpr):
            return np.array([int(v) for v in args[0].values], np.int64)
        fn = self._FOLD.get(op)
        tensors = [a for a in args if not isinstance(a, relax.ShapeExpr)]
        if fn is None or not tensors or not all(isinstance(a, np.ndarray) for a in tensors):
            return None
        arrs = [a for a in args if isinstance(a, np.ndarray)]
        out = fn(call, arrs)
        return np.asarray(out).astype(str(call.ty.dtype)) if hasattr(call.ty, "dtype") else out

    # ------------------------------------------------------------------ float islands
    def fallback(self, var, call, args, why):
        """Dequantise the inputs, run the original op in float, quantise the result (reported)."""
        self._unsupported.append(f"{why} ({var.name})")
        self.report.float_ops.append({"op": why, "value": var.name})
        if not self.opts.float_fallback:
            # keep going so every unsupported op is listed; the result is never built
            return Q(relax.const(np.zeros(_shape(var), np.int8)), 1.0, 8) if hasattr(var.ty, "shape") else None
        new_args = []
        for a, orig in zip(args, call.args):
            if isinstance(a, Q):
                new_args.append(self.dequant_expr(a, orig))
            elif isinstance(a, np.ndarray):
                new_args.append(relax.const(a))
            else:
                new_args.append(a)
        f = self.bb.emit(relax.Call(call.op, new_args, call.attrs, call.ty_args))
        s = self.act_scale(var.name, WIDE_BITS)
        q = self.emit_te(iq.quantize_te, f, s, WIDE_BITS, name="quantize", attrs={"op_pattern": _OPAQUE, "shiftc.kernel": "float_island"})
        return Q(q, s, WIDE_BITS)

    def dequant_expr(self, q: Q, orig):
        if q.per_axis:
            scale = relax.const(_along(np.asarray(q.scale, np.float32), q.axis, orig))
        else:
            scale = float(q.scale)
        return self.emit_te(iq.dequantize_te, q.expr, scale, name="dequantize", attrs={"op_pattern": _OPAQUE, "shiftc.kernel": "float_island"})

    # ------------------------------------------------------------------ linear ops
    def op_matmul(self, var, call, args):
        a, b = args
        if isinstance(a, Q) and isinstance(b, np.ndarray) and b.ndim == 2:
            x = self.as_int(call.args[0].name, a, ACT_BITS)
            wq, sw = iq.weight_codes(b, axis=1, pow2=self.pow2)
            out = self.bb.emit(relax.op.matmul(self.as_dtype(x, 8), relax.const(wq), out_dtype="int32"))
            self.report.rows.append({"op": "matmul", "value": var.name, "weights": "int8 per-channel"})
            return Q(out, x.scale * sw, 32, axis=len(_shape(var)) - 1)
        if isinstance(a, Q) and isinstance(b, Q):
            x = self.as_int(call.args[0].name, a, ACT_BITS)
            y = self.as_int(call.args[1].name, b, ACT_BITS)
            out = self.bb.emit(relax.op.matmul(self.as_dtype(x, 8), self.as_dtype(y, 8), out_dtype="int32"))
            self.report.rows.append({"op": "matmul", "value": var.name, "weights": "activation x activation"})
            return Q(out, x.scale * y.scale, 32)
        return None

    def op_nn_conv2d(self, var, call, args):
        a, w = args
        at = call.attrs
        if not (isinstance(a, Q) and isinstance(w, np.ndarray)) or at.data_layout != "NCHW" or at.kernel_layout != "OIHW":
            return None
        x = self.as_int(call.args[0].name, a, ACT_BITS)
        wq, sw = iq.weight_codes(w, axis=0, pow2=self.pow2)
        out = self.bb.emit(
            relax.op.nn.conv2d(self.as_dtype(x, 8), relax.const(wq), at.strides, at.padding, at.dilation, at.groups,
                               "NCHW", "OIHW", "NCHW", out_dtype="int32")
        )
        self.report.rows.append({"op": "conv2d", "value": var.name, "weights": "int8 per-channel"})
        return Q(out, x.scale * sw, 32, axis=1)

    # ------------------------------------------------------------------ elementwise
    def _scalar(self, c):
        return float(c.reshape(-1)[0]) if isinstance(c, np.ndarray) and c.size == 1 else None

    def _rescaled(self, q: Q, c: float, var):
        if c == 0:
            return None
        expr = q.expr
        if c < 0:
            expr = self.bb.emit(relax.op.negative(expr))
        return Q(expr, q.scale * abs(c), q.bits, q.axis)

    def op_multiply(self, var, call, args):
        a, b = args
        if isinstance(b, Q) and not isinstance(a, Q):
            a, b = b, a
        if isinstance(a, Q) and self._scalar(b) is not None:
            return self._rescaled(a, self._scalar(b), var)
        if isinstance(a, Q) and isinstance(b, Q):
            x = self.as_int(call.args[0].name, a, WIDE_BITS)
            y = self.as_int(call.args[1].name, b, WIDE_BITS)
            out = self.bb.emit(relax.op.multiply(self.as_dtype(x, 32), self.as_dtype(y, 32)))
            return Q(out, x.scale * y.scale, min(32, x.bits + y.bits))  # |product| < 2**(bx-1) * 2**(by-1)
        return None

    def op_divide(self, var, call, args):
        a, b = args
        if isinstance(a, Q) and self._scalar(b) is not None:
            return self._rescaled(a, 1.0 / self._scalar(b), var)
        if isinstance(a, Q) and isinstance(b, Q):
            return self.op_divide_act(var, call, a, b)
        return None

    def _add_const(self, q: Q, c: np.ndarray, var, negate_q=False):
        cq = iq.bias_codes(c, self._channel_scales(q, var))
        if cq.shape != tuple(_shape(var)) and np.broadcast_shapes(cq.shape, _shape(var)) != tuple(_shape(var)):
            return None
        x = self.as_dtype(q, 32)
        if negate_q:
            x = self.bb.emit(relax.op.negative(x))
        out = self.bb.emit(relax.op.add(x, relax.const(cq)))
        return Q(out, q.scale, 32, q.axis)

    def op_add(self, var, call, args):
        a, b = args
        if isinstance(b, Q) and not isinstance(a, Q):
            a, b = b, a
        if isinstance(a, Q) and isinstance(b, np.ndarray):
            return self._add_const(a, b.astype(np.float64), var)
        if isinstance(a, Q) and isinstance(b, Q):
            return self._add_act(var, call, a, b, call.args[0].name, call.args[1].name)
        return None

    def op_subtract(self, var, call, args):
        a, b = args
        if isinstance(a, Q) and isinstance(b, np.ndarray):
            return self._add_const(a, -b.astype(np.float64), var)
        if isinstance(b, Q) and isinstance(a, np.ndarray):
            return self._add_const(b, a.astype(np.float64), var, negate_q=True)
        if isinstance(a, Q) and isinstance(b, Q):
            nb = self.as_int(call.args[1].name, b, WIDE_BITS)
            neg = Q(self.bb.emit(relax.op.negative(nb.expr)), nb.scale, nb.bits)
            return self._add_act(var, call, a, neg, call.args[0].name, None)
        return None

    def _add_act(self, var, call, a: Q, b: Q, na, nb):
        s_out = self.act_scale(var.name, WIDE_BITS)

        def side(q, n):
            if not q.per_axis and float(q.scale) / s_out >= SATURATING_RATIO:
                # an operand far beyond the sum's range (an additive mask of -FLT_MAX): its
                # non-zero entries only have to saturate the sum, so its ratio is capped
                self.report.notes.append(f"{var.name}: operand at scale {float(q.scale):.3g} saturates the sum (ratio capped at 2^20)")
                return Q(q.expr, s_out * SATURATING_RATIO, q.bits)
            return self.as_int(n, q, WIDE_BITS) if n else q

        x, y = side(a, na), side(b, nb)
        shape = _shape(var)
        xe, ye = x.expr, y.expr
        if _shape(xe) != shape:
            xe = self.bb.emit(relax.op.broadcast_to(xe, relax.ShapeExpr(shape)))
        if _shape(ye) != shape:
            ye = self.bb.emit(relax.op.broadcast_to(ye, relax.ShapeExpr(shape)))
        ma, ea = iq.requant_params(x.scale / s_out, self.pow2)
        mb, eb = iq.requant_params(y.scale / s_out, self.pow2)
        params = [int(ma), int(ea), int(mb), int(eb), WIDE_BITS]
        out = self.emit_te(K.add_int, xe, ye, *params, name="add_int", attrs={"shiftc.add_int": params})
        self.report.rows.append({"op": "add_int", "value": var.name})
        return Q(out, s_out, WIDE_BITS)

    def op_nn_relu(self, var, call, args):
        (a,) = args
        if not isinstance(a, Q):
            return None
        out = self.bb.emit(relax.op.maximum(a.expr, relax.const(0, _dtype(a.expr))))
        return Q(out, a.scale, a.bits, a.axis)

    def op_nn_max_pool2d(self, var, call, args):
        (a,) = args
        if not isinstance(a, Q) or (a.per_axis and a.axis != 1) or call.attrs.layout != "NCHW":
            return None
        return Q(self._same_op(call, [a.expr]), a.scale, a.bits, a.axis)

    def _same_op(self, call, new_args):
        full = list(new_args) + [self._as_expr(x) for x in call.args[len(new_args):]]
        return self.bb.emit(relax.Call(call.op, full, call.attrs, call.ty_args))

    @staticmethod
    def _as_expr(x):
        return x

    # ------------------------------------------------------------------ layout (scale unchanged)
    def _layout(self, var, call, args):
        a = args[0]
        if not isinstance(a, Q):
            return None
        if a.per_axis:
            a = self.as_int(call.args[0].name, a, WIDE_BITS)
        return Q(self._same_op(call, [a.expr]), a.scale, a.bits)

    op_reshape = op_permute_dims = op_squeeze = op_expand_dims = op_flatten = _layout
    op_strided_slice = op_broadcast_to = _layout

    def op_split(self, var, call, args):
        a = args[0]
        if not isinstance(a, Q):
            return None
        if a.per_axis:
            a = self.as_int(call.args[0].name, a, WIDE_BITS)
        t = self._same_op(call, [a.expr])
        n = len(var.ty.fields)
        return [Q(self.bb.emit(relax.TupleGetItem(t, i)), a.scale, a.bits) for i in range(n)]

    def op_concat(self, var, call, args):
        parts = args[0]
        if not isinstance(parts, list) or not any(isinstance(p, Q) for p in parts):
            return None
        s_out = self.act_scale(var.name, WIDE_BITS)
        exprs = []
        for p, orig in zip(parts, call.args[0].fields):
            if isinstance(p, np.ndarray):
                exprs.append(relax.const(iq.quantize_np(p, s_out, WIDE_BITS)))
            else:
                same = not p.per_axis and p.bits <= WIDE_BITS and float(p.scale) == s_out
                r = p if same else self.requant(p, s_out, WIDE_BITS, var.name)
                exprs.append(self.as_dtype(r, WIDE_BITS))
        out = self.bb.emit(relax.op.concat(relax.Tuple(exprs), call.attrs.axis))
        return Q(out, s_out, WIDE_BITS)

    def op_take(self, var, call, args):
        table, idx = args
        if isinstance(table, np.ndarray) and isinstance(idx, relax.Expr) and not _is_float_type(idx.ty):
            s = self.act_scale(var.name, ACT_BITS)
            tq = relax.const(iq.quantize_np(table, s, ACT_BITS))
            out = self.bb.emit(relax.op.take(tq, idx, call.attrs.axis, call.attrs.mode))
            return Q(out, s, ACT_BITS)
        return None

    def op_astype(self, var, call, args):
        (a,) = args
        if str(call.attrs.dtype) != "float32":
            return None
        if isinstance(a, Q):
            return a  # an integer value seen as float: same integers, same scale
        if isinstance(a, relax.Expr) and not _is_float_type(a.ty):
            # integer data (e.g. an attention mask) as float: the same integers at scale 1; their
            # width is taken from the calibrated range (a 0/1 mask is int8-sized)
            t = self.calib.thresholds.get(var.name, 2.0**31)
            bits = max(ACT_BITS, int(math.ceil(t)).bit_length() + 1)
            return Q(self.bb.emit(relax.op.astype(a, "int32")), 1.0, min(bits, 32))
        return None

    # ------------------------------------------------------------------ non-linear
    def op_nn_softmax(self, var, call, args):
        (a,) = args
        nd = len(_shape(var))
        if not isinstance(a, Q) or int(call.attrs.axis) % nd != nd - 1:
            return None
        name = call.args[0].name
        n, row = SHIFTMAX_N, _shape(var)[-1]

        def ok_scale(s):  # row sum <= 2**26 keeps the reciprocal (2**31-1) // S at >= 32
            try:
                return row * ((-ref.exp_x0(s, n)) << n) <= SHIFTMAX_SUM_LIMIT
            except ValueError:
                return False

        x = self.fitting_input(name, a, lambda s, b: ok_scale(s))
        if x is None:
            return None
        x0 = ref.exp_x0(float(x.scale), n)
        out = self.emit_te(K.shiftmax, x.expr, x0, n, name="shiftmax")
        self.report.rows.append({"op": "shiftmax", "value": var.name, "in_bits": x.bits, "in_scale": float(x.scale), "x0": x0})
        return Q(out, 2.0**-7, 8)

    def op_nn_gelu(self, var, call, args):
        (a,) = args
        if not isinstance(a, Q):
            return None
        name = call.args[0].name
        if self.opts.gelu == "lambda":
            terms = self.opts.lambdas.get(name)
            if terms is None:
                raise UnsupportedModelError(f"lambda-ShiftGELU: no calibrated lambda for {name}")

            def params(s, b):
                try:
                    p = ref.lambda_gelu_params(s, terms)
                    return p if p.x_max >= qmax(b) + 1 else None
                except ValueError:
                    return None

            x = self.fitting_input(name, a, lambda s, b: params(s, b) is not None)
            if x is None:
                return None
            p = ref.lambda_gelu_params(float(x.scale), terms)
            out = self.emit_te(lambda t: K.lambda_shift_gelu(t, p), x.expr, name="lambda_gelu")
            self.report.rows.append({"op": "lambda_shift_gelu", "value": var.name, "in_bits": x.bits, "in_scale": float(x.scale), "lambda": ref.lam_value(terms)})
        else:
            n = 23

            def ok(s):
                try:
                    ref.exp_x0(s, n)
                    return True
                except ValueError:
                    return False

            x = self.fitting_input(name, a, lambda s, b: ok(s), widest=16, narrowest=6)
            if x is None:
                return None
            x0 = ref.exp_x0(float(x.scale), n)
            out = self.emit_te(K.shift_gelu, x.expr, x0, n, name="shift_gelu")
            self.report.rows.append({"op": "shift_gelu", "value": var.name, "in_bits": x.bits, "in_scale": float(x.scale), "x0": x0})
        return Q(out, float(x.scale) * 2.0**-15, 32)

    def op_nn_layer_norm(self, var, call, args):
        a, gamma, beta = args
        nd = len(_shape(var))
        axes = [int(x) % nd for x in call.attrs.axes]
        if not isinstance(a, Q) or axes != [nd - 1] or not isinstance(gamma, np.ndarray) or not isinstance(beta, np.ndarray):
            return None
        C = _shape(var)[-1]
        x = self.as_int(call.args[0].name, a, WIDE_BITS)
        ln = self.emit_te(K.i_layernorm, x.expr, name="i_layernorm")
        s_out = self.act_scale(var.name, ACT_BITS)
        g = np.broadcast_to(gamma.astype(np.float64).reshape(-1), (C,))
        ratio = np.abs(g) * math.sqrt(C) * 2.0**-30 / s_out
        if self.pow2:
            self.report.notes.append(f"{var.name}: pow2 requant rounds LayerNorm gamma*sqrt(C) ratios to powers of two")
        m, e = iq.requant_params(ratio, self.pow2)
        if np.any(g < 0):
            ln = self.bb.emit(relax.op.multiply(ln, relax.const(np.where(g < 0, -1, 1).astype(np.int32))))
        y = self.emit_te(K.requantize_per_axis, ln, relax.const(np.asarray(m, np.int64)), relax.const(np.asarray(e, np.int32)), -1, 32, name="requant_axis")
        bq = iq.bias_codes(np.broadcast_to(beta.astype(np.float64).reshape(-1), (C,)), s_out)
        y = self.bb.emit(relax.op.add(y, relax.const(bq)))
        y = self.bb.emit(relax.op.clip(y, relax.prim_value(-qmax(ACT_BITS) - 1), relax.prim_value(qmax(ACT_BITS))))
        y = self.bb.emit(relax.op.astype(y, "int8"))
        self.report.rows.append({"op": "i_layernorm", "value": var.name, "C": C})
        return Q(y, s_out, ACT_BITS)

    def op_mean(self, var, call, args):
        (a,) = args
        if not isinstance(a, Q):
            return None
        nd = len(_shape(call.args[0]))
        axes = list(range(nd)) if call.attrs.axis is None else sorted(int(x) % nd for x in call.attrs.axis)
        x = self.as_int(call.args[0].name, a, WIDE_BITS)
        out = self.emit_te(K.int_mean, x.expr, axes, name="int_mean")
        if call.attrs.keepdims:
            out = self.bb.emit(relax.op.reshape(out, relax.ShapeExpr(_shape(var))))
        self.report.rows.append({"op": "int_mean", "value": var.name})
        return Q(out, x.scale, 32)

    def op_sum(self, var, call, args):
        (a,) = args
        if not isinstance(a, Q):
            return None
        x = self.as_int(call.args[0].name, a, WIDE_BITS)
        out = self.bb.emit(relax.op.sum(self.as_dtype(x, 32), call.attrs.axis, call.attrs.keepdims))
        return Q(out, x.scale, 32)

    def op_divide_act(self, var, call, a: Q, b: Q):
        """``a / b`` of two activations (a masked mean's sum / count): round-half-up integer
        division ``(a + b // 2) // b`` (for ``b > 0``) at scale ``s_a / s_b``."""
        x = self.as_int(call.args[0].name, a, WIDE_BITS) if a.per_axis else a
        y = self.as_int(call.args[1].name, b, WIDE_BITS) if b.per_axis else b
        xe, ye = self.as_dtype(x, 32), self.as_dtype(y, 32)
        half = self.bb.emit(relax.op.floor_divide(ye, relax.const(2, "int32")))
        out = self.bb.emit(relax.op.floor_divide(relax.op.add(xe, half), ye))
        self.report.rows.append({"op": "int_divide", "value": var.name})
        return Q(out, float(x.scale) / float(y.scale), 32)

    def op_nn_avg_pool2d(self, var, call, args):
        (a,) = args
        at = call.attrs
        if not isinstance(a, Q) or at.layout != "NCHW" or any(int(p) for p in at.padding) or any(int(d) != 1 for d in at.dilation) or at.ceil_mode:
            return None
        x = self.as_int(call.args[0].name, a, WIDE_BITS)
        out = self.emit_te(K.int_avgpool2d, x.expr, [int(k) for k in at.pool_size], [int(s) for s in at.strides], name="int_avgpool2d")
        return Q(out, x.scale, 32)

    def op_image_resize2d(self, var, call, args):
        a = args[0]
        if not isinstance(a, Q) or self.opts.upsample != "nearest" or call.attrs.layout != "NCHW":
            return None
        (_, _, h, w), (_, _, H, W) = _shape(call.args[0]), _shape(var)
        if H % h or W % w:
            return None
        if a.per_axis and a.axis != 1:
            a = self.as_int(call.args[0].name, a, WIDE_BITS)
        out = self.emit_te(K.nearest_upsample, a.expr, (H // h, W // w), name="nearest_upsample")
        self.report.rows.append({"op": "nearest_upsample", "value": var.name, "replaces": str(call.attrs.method)})
        return Q(out, a.scale, a.bits, a.axis)

    def visit_global_call(self, var, call):
        f = self.mod[call.op]
        kind = f.attrs["shiftc.op"] if isinstance(f, relax.Function) and f.attrs is not None and "shiftc.op" in f.attrs else None
        args = [self.get(a) for a in call.args]
        if kind == "l2_normalize" and self.opts.l2norm == "remove" and isinstance(args[0], Q):
            self.report.rows.append({"op": "l2_normalize removed", "value": var.name})
            return args[0]
        return self.fallback(var, call, args, str(kind or call.op.name_hint))

    def _legalized_clamp(self, call, op: str):
        """``maximum(x, c)`` / ``minimum(x, c)`` that the ONNX importer emitted as a call_tir (the
        halves of Clip/ReLU6): the bound ``c / s`` rounded inwards (per channel for per-axis ``x``)."""
        x, c = self.get(call.args[1])
        if not isinstance(x, Q) or self._scalar(c) is None:
            return None
        s = self._channel_scales(x, call.args[1].fields[0])
        bound = np.divide(self._scalar(c), s, out=np.zeros(np.shape(s)), where=s > 0)  # scale 0: the value is 0 anyway
        ints = np.ceil(bound) if op == "maximum" else np.floor(bound)
        dtype = _dtype(x.expr)
        info = np.iinfo(dtype)
        const = relax.const(np.atleast_1d(np.clip(ints, info.min, info.max)).astype(dtype))  # a tensor: kernel code independent of calibration
        out = self.bb.emit((relax.op.maximum if op == "maximum" else relax.op.minimum)(x.expr, const))
        return Q(out, x.scale, x.bits, x.axis)

    def _channel_scales(self, q: Q, like) -> np.ndarray:
        """``q``'s scale as an array that broadcasts against ``like`` (per-axis: along its axis)."""
        if not q.per_axis:
            return np.asarray(float(q.scale), np.float64)
        return _along(np.asarray(q.scale, np.float64), q.axis, like)

    def op_call_tir(self, var, call, args):
        """A float shift kernel of the shift pass -> the int32 shift-accumulate kernel on int8 x.

        Output scale per channel: ``s_x * alpha_c * 2**-P`` with ``P`` = the layer's largest code
        exponent (CONTRACTS.md, integer path)."""
        kernel = self.mod[call.args[0]]
        at = kernel.attrs
        for op in ("maximum", "minimum"):
            if call.args[0].name_hint.startswith(op):
                return self._legalized_clamp(call, op)
        if at is None or "shiftc.kernel" not in at or str(at["shiftc.kernel"]) != "shift_float":
            return None
        x_q, packed, alpha, *bias = self.get(call.args[1])
        if not isinstance(x_q, Q) or not isinstance(packed, np.ndarray) or not isinstance(alpha, np.ndarray):
            return None
        op, bits, terms = str(at["shiftc.op"]), int(at["shiftc.bits"]), int(at["shiftc.terms"])
        zero_free, wshape = bool(int(at["shiftc.zero_free"])), [int(d) for d in at["shiftc.weight_shape"]]
        oi_shape = wshape if op == "conv2d" else [wshape[1], wshape[0]]
        codes = ref.unpack_codes(packed.tobytes(), bits, terms * int(np.prod(oi_shape)), zero_free, shape=(terms, *oi_shape))
        P = int(np.abs(codes.astype(np.int64)).max()) - 1 if codes.size else 0
        P = max(P, 0)
        x = self.as_int(call.args[1].fields[0].name, x_q, ACT_BITS)
        common = dict(P=P, terms=terms, bits=bits, zero_free=zero_free, packed=True)
        attrs = {"op_pattern": _OPAQUE, "shiftc.kernel": "shift_int", "shiftc.P": P}
        attrs.update({k: at[k] for k in ("shiftc.op", "shiftc.bits", "shiftc.terms", "shiftc.zero_free", "shiftc.weight_shape",
                                         "shiftc.strides", "shiftc.padding", "shiftc.dilation", "shiftc.groups") if k in at})
        xe, pk = self.as_dtype(x, 8), relax.const(packed, "uint8")
        if op == "conv2d":
            out = self.emit_te(SK.shift_conv2d_int, xe, pk, name="shift_conv2d_int", attrs=attrs, weight_shape=wshape,
                               stride=[int(v) for v in at["shiftc.strides"]], padding=[int(v) for v in at["shiftc.padding"]],
                               dilation=[int(v) for v in at["shiftc.dilation"]], groups=int(at["shiftc.groups"]), **common)
            axis = 1
        else:
            out = self.emit_te(SK.shift_matmul_int, xe, pk, name="shift_matmul_int", attrs=attrs, out_features=oi_shape[0], **common)
            axis = len(_shape(var)) - 1
        self.report.rows.append({"op": f"shift_{op}_int", "value": var.name, "bits": bits, "terms": terms, "P": P})
        alpha = alpha.astype(np.float64)
        dead = alpha <= 0  # an all-zero weight channel: its float output is alpha * sum = 0
        if dead.any():
            # its codes may still be non-zero (zero-free codes): force the sum to 0 with a [0, 0]
            # clamp, and give the channel a usable scale so that its bias is representable
            big = np.iinfo(np.int32)
            lo, hi = _along(np.where(dead, 0, big.min), axis, var), _along(np.where(dead, 0, big.max), axis, var)
            out = self.bb.emit(relax.op.minimum(relax.op.maximum(out, relax.const(lo.astype(np.int32))), relax.const(hi.astype(np.int32))))
            alpha = np.where(dead, alpha.max() if alpha.max() > 0 else 1.0, alpha)
            self.report.notes.append(f"{var.name}: {int(dead.sum())} all-zero weight channel(s) output 0 (plus bias)")
        q = Q(out, float(x.scale) * alpha * 2.0**-P, 32, axis=axis)
        return self._shift_epilogue(q, var, bias[0] if bias else None, at)

    def _shift_epilogue(self, q: Q, var, bias, at) -> Q:
        """The shift kernel's folded epilogue ``min(max(y + b, lo), hi)`` on the int32 accumulator:
        ``+ round(b / s_c)``, then clamps at ``ceil(lo / s_c)`` and ``floor(hi / s_c)`` per channel."""
        if bias is not None:
            q = self._add_const(q, np.asarray(bias, np.float64).reshape([-1] + [1] * (len(_shape(var)) - 1 - q.axis)), var)
        s = self._channel_scales(q, var)
        expr = q.expr
        if "shiftc.lo" in at:
            lo = float(at["shiftc.lo"])
            expr = self.bb.emit(relax.op.maximum(expr, relax.const(np.ceil(lo / s).astype(np.int32))))
        if "shiftc.hi" in at:
            hi = float(at["shiftc.hi"])
            expr = self.bb.emit(relax.op.minimum(expr, relax.const(np.floor(hi / s).astype(np.int32))))
        return Q(expr, q.scale, 32, q.axis)


def integerize(mod: tvm.IRModule, calib: Calibration, opts: IntOptions, probe=()) -> tuple[tvm.IRModule, IntReport]:
    """Run the rewrite on ``main``; returns the new module and what it did.

    ``probe``: value names whose dequantised integer versions ``main`` also returns (after its
    own result), for per-value error analysis."""
    it = Integerizer(mod, calib, opts, probe=probe)
    return it.run(), it.report
