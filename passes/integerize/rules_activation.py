"""Integer rules of activations: clamps with constant bounds, table lookups, leaky slopes.

    clip(x, lo, hi), maximum/minimum(x, c)  ->  the same clamp on the integers, bounds rounded
        inwards (ceil(lo / s), floor(hi / s), per channel for a per-axis x); ONNX Clip (any
        bounds, one-sided too), ReLU6 and HardSigmoid/HardSwish's clip(x * a + b, 0, 1 | 6)
    sigmoid, tanh, erf  ->  lut: a 256-entry int16 table on int8 codes, output at 2**-14
        (the input scale is the calibrated one, or finer where f saturates sooner)
    leakyrelu, prelu    ->  x, or sign(alpha) * rshift_round(x * m, e) below 0, at x's scale

SiLU (``x * sigmoid(x)``), HardSwish and squeeze-excite gating are these ops followed by the
product of two activations (rules_elementwise.multiply); erf-GELU is canonicalised to nn.gelu.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from shiftc.kernels import activation as KA
from shiftc.reference import activation as RA
from shiftc.reference.quant import pow2_up, qmax
from shiftc.reference.rounding import INT32_MAX

from .registry import int_rule
from .scales import requant_params
from .value import WIDE_BITS, Q, dtype, op_name, scalar, shape


def clamp(ctx, x: Q, lo: float | None, hi: float | None, like) -> Q:
    """``min(max(x, ceil(lo / s)), floor(hi / s))`` on the integers (``None``: that side open). The
    result's bound (hence its width) is the tighter of ``x``'s and the bounds'."""
    s = x.scales_like(like)
    info = np.iinfo(dtype(x.expr))
    expr, bound = x.expr, np.broadcast_to(np.asarray(x.max_abs, np.float64), np.shape(s))
    inward = ((lo, np.ceil, relax.op.maximum), (hi, np.floor, relax.op.minimum))
    ends = []
    for c, rnd, op in inward:
        if c is None or not math.isfinite(c):
            continue
        ints = np.clip(rnd(np.divide(c, s, out=np.zeros(np.shape(s)), where=s > 0)), info.min, info.max)  # scale 0: the value is 0
        ends.append(np.abs(ints))
        # a tensor, even for one bound: the kernel's code does not depend on the calibration
        expr = ctx.emit(op(expr, relax.const(np.atleast_1d(ints).astype(dtype(x.expr)))))
    if len(ends) == 2:
        bound = np.minimum(bound, np.maximum(*ends))
    b = bound.astype(np.int64) if x.per_axis else int(np.max(bound))
    bits = min(x.bits, int(np.max(b)).bit_length() + 1)
    return Q(expr, x.scale, max(bits, 2), x.axis, bound=b)


def legalized_clamp(ctx, call, op: str):
    """``maximum(x, c)`` / ``minimum(x, c)`` that the ONNX importer emitted as a call_tir (the
    halves of Clip/ReLU6)."""
    x, c = ctx.get(call.args[1])
    if not isinstance(x, Q) or scalar(c) is None:
        return None
    lo, hi = (scalar(c), None) if op == "maximum" else (None, scalar(c))
    return clamp(ctx, x, lo, hi, call.args[1].fields[0])


def _prim(v) -> float | None:
    """A clip bound (an IntImm / FloatImm, or a PrimValue holding one) as a float."""
    value = getattr(v, "value", None)
    value = getattr(value, "value", value)  # a PrimValue's IntImm / FloatImm
    return float(value) if isinstance(value, (int, float)) else None


@int_rule("relax.clip")
def clip(ctx, var, call, args):
    x = args[0]
    lo, hi = _prim(call.args[1]), _prim(call.args[2])
    if not isinstance(x, Q) or lo is None or hi is None:
        return None
    return clamp(ctx, x, lo, hi, call.args[0])


@int_rule("relax.maximum", "relax.minimum")
def maximum_minimum(ctx, var, call, args):
    a, b, i = *args, 0
    if isinstance(b, Q) and not isinstance(a, Q):
        a, b, i = b, a, 1
    if not isinstance(a, Q) or scalar(b) is None or shape(var) != shape(call.args[i]):
        return None
    c = scalar(b)
    return clamp(ctx, a, c, None, var) if op_name(call) == "relax.maximum" else clamp(ctx, a, None, c, var)


@int_rule("relax.sigmoid", "relax.tanh", "relax.erf")
def lookup(ctx, var, call, args):
    """A bounded function by table lookup: int8 codes in, int16 at ``2**-14`` out."""
    (a,) = args
    if not isinstance(a, Q):
        return None
    fn = op_name(call).split(".")[-1]
    bits = RA.LUT_IN_BITS
    # codes beyond where f is within half an output step of +-1 need no resolution
    s_in = min(ctx.act_scale(call.args[0].name, bits), RA.LUT_SATURATES[fn] / qmax(bits))
    s_in = pow2_up(s_in) if ctx.pow2 else s_in  # shift-only requantisers: a power-of-two scale
    keep = not a.per_axis and a.bits <= bits and float(a.scale) <= s_in
    x = a if keep else ctx.requant(a, s_in, bits)
    s_out = 2.0**-RA.LUT_FRAC_BITS
    table = RA.lut_table(fn, float(x.scale), s_out, bits, WIDE_BITS)
    out = ctx.emit_te(KA.lut, ctx.as_dtype(x, bits), relax.const(table), name=f"lut_{fn}")
    ctx.report.rows.append({"op": f"lut_{fn}", "value": var.name, "in_scale": float(x.scale)})
    return Q(out, s_out, WIDE_BITS, bound=int(np.abs(table.astype(np.int64)).max()))


@int_rule("relax.nn.leakyrelu", "relax.nn.prelu")
def leaky_relu(ctx, var, call, args):
    """Slope ``alpha`` (per channel for PReLU) below zero, at the input's scale."""
    a = args[0]
    if not isinstance(a, Q):
        return None
    if op_name(call) == "relax.nn.prelu":
        if not isinstance(args[1], np.ndarray):
            return None
        alpha, axis = args[1].astype(np.float64).reshape(-1), int(call.attrs.axis) % len(shape(var))
        if alpha.size not in (1, shape(var)[axis]):
            return None
    else:
        alpha, axis = np.array([float(call.attrs.alpha)]), 0
    if np.abs(alpha).max() >= 2.0**14:
        return None
    grow = max(1.0, float(np.abs(alpha).max()))
    x = a if a.max_abs * grow + 1 <= INT32_MAX else ctx.as_int(call.args[0].name, a, WIDE_BITS)
    if ctx.pow2:
        ctx.report.notes.append(f"{var.name}: pow2 requant rounds the leaky slope to a power of two")
    m, e = requant_params(np.abs(alpha), ctx.pow2)
    ints = [relax.const(np.atleast_1d(v).astype(np.int64)) for v in (m, e, np.where(alpha < 0, -1, 1))]
    out = ctx.emit_te(KA.leaky_relu, x.expr, *ints, axis, name="leaky_relu")
    ctx.report.rows.append({"op": "leaky_relu", "value": var.name})
    return Q(out, x.scale, 32, x.axis, bound=int(math.ceil(x.max_abs * grow)) + 1)
