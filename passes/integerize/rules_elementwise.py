"""Integer rules of elementwise ops: scalar scaling, constant and residual adds, products and
quotients of activations, ReLU and clamps, casts, and table lookups.

    x * c, x / c  (scalar c)  ->  x, with its scale times c (no op)
    x * c  (c per channel)    ->  sign(c) * x, at the per-channel scale s_x * |c| (a ViT's layer scale)
    a + b  (activations)      ->  add_int (both requantised to the sum's scale), int16
    x + c  (constant)         ->  x_i32 + round(c / s_x)
    a * b, a / b (activations)->  int32 product; round-half-up integer division
    relu                      ->  the same op on the integers (clamps: rules_activation.py)
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from shiftc.calibrate import SENTINEL
from shiftc.core.contract import AddInt
from shiftc.kernels import integer as K
from shiftc.reference.overflow import narrow_shift
from shiftc.reference.quant import quantize
from shiftc.reference.rounding import INT32_MAX

from .registry import int_rule
from .scales import requant_params
from .value import ACT_BITS, WIDE_BITS, Q, along, dtype, is_float_type, scalar, shape

SATURATING_RATIO = float(2**20)
MASK_DEPTH = 64.0  # a masked entry lies at least this far (real units) below its sum's range: e^-64 is 0


def _rescaled(ctx, q: Q, c: float):
    if c == 0:
        return None
    if c < 0:
        return Q(ctx.emit(relax.op.negative(ctx.as_dtype(q, 32))), q.scale * abs(c), min(q.bits + 1, 32), q.axis, q.max_abs)
    return Q(q.expr, q.scale * abs(c), q.bits, q.axis, q.bound)


def _channel_axis(c: np.ndarray, out_shape) -> int | None:
    """The one axis of ``out_shape`` along which constant ``c`` varies (``c`` broadcast to it)."""
    if c.ndim > len(out_shape) or c.size < 2:
        return None
    full = (1,) * (len(out_shape) - c.ndim) + c.shape
    axes = [i for i, d in enumerate(full) if d != 1]
    return axes[0] if len(axes) == 1 and full[axes[0]] == out_shape[axes[0]] else None


def _per_channel_rescaled(ctx, var, q: Q, c: np.ndarray):
    """``x * c`` for a constant ``c`` along one channel axis: the integers times ``sign(c)``, the
    scale per channel ``s_x * |c|`` (no rounding; zero entries have no scale and are refused)."""
    out_shape = shape(var)
    axis = _channel_axis(c, out_shape)
    if axis is None or (q.per_axis and q.axis % len(out_shape) != axis):
        return None
    vec = c.astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(vec)) or np.any(vec == 0) or q.max_abs > INT32_MAX:
        return None
    scale = np.asarray(q.scale, np.float64) * np.abs(vec)
    expr, bits, bound = q.expr, q.bits, q.bound
    if np.any(vec < 0):
        signs = relax.const(along(np.sign(vec).astype(np.int32), axis, var))
        expr, bits, bound = ctx.emit(relax.op.multiply(ctx.as_dtype(q, 32), signs)), min(q.bits + 1, 32), q.max_abs
    ctx.report.rows.append({"op": "per_channel_scale", "value": var.name})
    return Q(expr, scale, bits, axis, bound)


@int_rule("relax.multiply")
def multiply(ctx, var, call, args):
    a, b = args
    if isinstance(b, Q) and not isinstance(a, Q):
        a, b = b, a
    if isinstance(a, Q) and scalar(b) is not None:
        return _rescaled(ctx, a, scalar(b))
    if isinstance(a, Q) and isinstance(b, np.ndarray):
        return _per_channel_rescaled(ctx, var, a, b)
    if isinstance(a, Q) and isinstance(b, Q):
        x = ctx.as_int(call.args[0].name, a, WIDE_BITS)
        y = ctx.as_int(call.args[1].name, b, WIDE_BITS)
        out = ctx.emit(relax.op.multiply(ctx.as_dtype(x, 32), ctx.as_dtype(y, 32)))
        # both at most int16: |product| <= 2**(bx-1) * 2**(by-1) <= 2**30
        return Q(out, x.scale * y.scale, min(32, x.bits + y.bits), bound=x.max_abs * y.max_abs)
    return None


@int_rule("relax.divide")
def divide(ctx, var, call, args):
    a, b = args
    if isinstance(a, Q) and scalar(b) is not None:
        return _rescaled(ctx, a, 1.0 / scalar(b))
    if isinstance(a, Q) and isinstance(b, Q):
        return _divide_act(ctx, var, call, a, b)
    return None


def _divide_act(ctx, var, call, a: Q, b: Q):
    """``a / b`` of two activations (a masked mean's sum / count): round-half-up integer
    division ``((a << k) + b // 2) // b`` (for ``b > 0``) at scale ``s_a * 2**-k / s_b``. ``k``, the
    dividend's headroom (the largest ``k <= 30`` with ``|a| * 2**k + b // 2`` in int32), keeps the
    quotient's fraction bits: without it a mean of int8 codes is rounded to the int8 grid."""
    x = ctx.as_int(call.args[0].name, a, WIDE_BITS) if a.per_axis else a
    y = ctx.as_int(call.args[1].name, b, WIDE_BITS) if b.per_axis else b
    room = INT32_MAX - y.max_abs // 2  # the int32 sum (x << k) + y // 2
    r = narrow_shift(x.max_abs, room)
    x = ctx.narrow(x, r, var.name, f"dividend bound {x.max_abs:,} + divisor/2 could leave int32") if r else x
    k = 0
    while k < 30 and max(x.max_abs, 1) << (k + 1) <= room:
        k += 1
    xe, ye = ctx.as_dtype(x, 32), ctx.as_dtype(y, 32)
    if k:
        xe = ctx.emit(relax.op.multiply(xe, relax.const(1 << k, "int32")))
    half = ctx.emit(relax.op.floor_divide(ye, relax.const(2, "int32")))
    out = ctx.emit(relax.op.floor_divide(relax.op.add(xe, half), ye))
    ctx.report.rows.append({"op": "int_divide", "value": var.name, "k": k})
    return Q(out, float(x.scale) * 2.0**-k / float(y.scale), 32, bound=(x.max_abs << k) + 1)  # |q| <= |x << k| + 1 for y >= 1


@int_rule("relax.add")
def add(ctx, var, call, args):
    a, b = args
    if isinstance(b, Q) and not isinstance(a, Q):
        a, b = b, a
    if isinstance(a, Q) and isinstance(b, np.ndarray):
        return ctx.add_const(a, _finite_mask(ctx, var, b.astype(np.float64)), var)
    if isinstance(a, Q) and isinstance(b, Q):
        return _add_act(ctx, var, a, b, call.args[0].name, call.args[1].name)
    return None


def _finite_mask(ctx, var, c: np.ndarray) -> np.ndarray:
    """A constant additive mask's sentinels (``-inf``, ``-FLT_MAX``: ``|c| >= SENTINEL``) as
    ``+-max(2**20 steps of the sum's int16 scale, MASK_DEPTH)``: every masked sum lies far below
    the sum's calibrated range, as with the activation masks of ``_add_act``."""
    sentinel = np.abs(c) >= SENTINEL
    if not sentinel.any():
        return c
    cap = max(ctx.act_scale(var.name, WIDE_BITS) * SATURATING_RATIO, MASK_DEPTH)
    ctx.report.notes.append(f"{var.name}: {int(sentinel.sum())} masking constant(s) taken as +-{cap:.3g}")
    return np.where(sentinel, np.sign(c) * cap, c)


@int_rule("relax.subtract")
def subtract(ctx, var, call, args):
    a, b = args
    if isinstance(a, Q) and isinstance(b, np.ndarray):
        return ctx.add_const(a, -b.astype(np.float64), var)
    if isinstance(b, Q) and isinstance(a, np.ndarray):
        return ctx.add_const(b, a.astype(np.float64), var, negate_q=True)
    if isinstance(a, Q) and isinstance(b, Q):
        nb = ctx.as_int(call.args[1].name, b, WIDE_BITS)
        neg = Q(ctx.emit(relax.op.negative(ctx.as_dtype(nb, 32))), nb.scale, min(nb.bits + 1, 32), bound=nb.max_abs)  # -(-2**(b-1)) needs b+1 bits
        return _add_act(ctx, var, a, neg, call.args[0].name, None)
    return None


def _add_act(ctx, var, a: Q, b: Q, na, nb):
    """Residual add: both sides requantised to the sum's calibrated int16 scale inside add_int.

    An operand far beyond the sum's range (an additive mask of -FLT_MAX) only has to push its
    entries below that range: its ratio is capped so that each of its steps is
    ``max(2**20 steps, MASK_DEPTH)``, and the sum is kept at int32 so that masked entries stay apart
    from real ones (a softmax then gives them nothing; another consumer saturates them)."""
    s_out = ctx.act_scale(var.name, WIDE_BITS)
    masked = []

    def side(q, n):
        if not q.per_axis and float(q.scale) / s_out >= SATURATING_RATIO:
            ratio = min(max(SATURATING_RATIO, MASK_DEPTH / s_out), 2.0**29 / max(q.max_abs, 1))
            masked.append(ratio * q.max_abs)
            ctx.report.notes.append(f"{var.name}: operand at scale {float(q.scale):.3g} is a mask (ratio capped at {ratio:.3g})")
            return Q(q.expr, s_out * ratio, q.bits)
        return ctx.as_int(n, q, WIDE_BITS) if n else q

    x, y = side(a, na), side(b, nb)
    out_shape = shape(var)
    xe, ye = x.expr, y.expr
    if shape(xe) != out_shape:
        xe = ctx.emit(relax.op.broadcast_to(xe, relax.ShapeExpr(out_shape)))
    if shape(ye) != out_shape:
        ye = ctx.emit(relax.op.broadcast_to(ye, relax.ShapeExpr(out_shape)))
    ma, ea = requant_params(x.scale / s_out, ctx.pow2)
    mb, eb = requant_params(y.scale / s_out, ctx.pow2)
    bits = 32 if masked else WIDE_BITS
    spec = AddInt(int(ma), int(ea), int(mb), int(eb), bits)
    out = ctx.emit_te(K.add_int, xe, ye, *spec.params(), name="add_int", attrs=spec.to_attrs())
    ctx.report.rows.append({"op": "add_int", "value": var.name})
    return Q(out, s_out, bits, bound=int(sum(masked)) + (1 << WIDE_BITS) if masked else None)


@int_rule("relax.nn.relu")
def relu(ctx, var, call, args):
    (a,) = args
    if not isinstance(a, Q):
        return None
    out = ctx.emit(relax.op.maximum(a.expr, relax.const(0, dtype(a.expr))))
    return Q(out, a.scale, a.bits, a.axis, a.bound)


@int_rule("relax.take")
def take(ctx, var, call, args):
    """An embedding lookup: the constant table quantised to int8 at the output's scale; a Gather
    of an activation by constant indices: the same op on the integers (per tensor)."""
    table, idx = args
    if isinstance(table, Q) and isinstance(idx, np.ndarray):
        a = ctx.as_int(call.args[0].name, table, WIDE_BITS) if table.per_axis else table
        out = ctx.emit(relax.op.take(a.expr, relax.const(idx), call.attrs.axis, call.attrs.mode))
        return Q(out, a.scale, a.bits, bound=a.bound)
    if isinstance(table, np.ndarray) and isinstance(idx, relax.Expr) and not is_float_type(idx.ty):
        s = ctx.act_scale(var.name, ACT_BITS)
        tq = relax.const(quantize(table, s, ACT_BITS))
        out = ctx.emit(relax.op.take(tq, idx, call.attrs.axis, call.attrs.mode))
        return Q(out, s, ACT_BITS)
    return None


@int_rule("relax.astype")
def astype(ctx, var, call, args):
    (a,) = args
    if str(call.attrs.dtype) != "float32":
        return None
    if isinstance(a, Q):
        return a  # an integer value seen as float: same integers, same scale
    if isinstance(a, relax.Expr) and not is_float_type(a.ty):
        # integer data (e.g. an attention mask) as float: the same integers at scale 1; their
        # width is taken from the calibrated range (a 0/1 mask is int8-sized)
        t = ctx.calib.thresholds.get(var.name, 2.0**31)
        bits = max(ACT_BITS, int(math.ceil(t)).bit_length() + 1)
        return Q(ctx.emit(relax.op.astype(a, "int32")), 1.0, min(bits, 32))
    return None
