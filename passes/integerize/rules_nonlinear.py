"""Integer rules of non-linear ops (I-ViT style).

    softmax(x, axis)     ->  Shiftmax(x, n=12) (axis moved last and back)   int8 at 2**-7, or
                             uint8 at 2**-8 when only matmuls read it (attention's P V)
    gelu, gelu_tanh      ->  ShiftGELU (row max, n=23) | lambda-ShiftGELU | i-GELU (I-BERT's
                             erf polynomial)                                int32 at s * 2**-15
    layer_norm(x, g, b)  ->  I-LayerNorm, then sign(g) * requantize_per_axis(|g| sqrt(C) 2**-30
                             / s_out) + round(b / s_out), saturated to int8

Each input is requantised to the widest width whose scale the op's exponent range accepts.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from shiftc import reference as ref
from shiftc.core.errors import UnsupportedModelError
from shiftc.kernels import integer as K
from shiftc.kernels.igelu import i_gelu as i_gelu_kernel
from shiftc.reference.quant import bias_codes, pow2_up, qmax
from shiftc.reference.rounding import INT32_MAX

from .accumulate import summable_input
from .registry import int_rule
from .scales import bits_for, requant_params
from .value import ACT_BITS, WIDE_BITS, Q, int_dtype, shape

# Shiftmax: n = 12 exponent bits (I-ViT: 15). The output is int8 at 2**-7, so exponents below
# 2**-12 of the row max are invisible anyway; a smaller n keeps the row sum S small, and the
# reciprocal floor((2**31-1) / S) precise. Inputs are requantised to the widest width whose
# worst-case row sum (every element at the max) stays <= 2**26.
SHIFTMAX_N = 12
SHIFTMAX_SUM_LIMIT = 1 << 26
# Long rows (a 6625-class output): every exponential is at least 2**-(n+1) of the row max's, so
# n = 12 would give the tail of 6625 entries 0.8 of the max's mass; and their sum needs more than
# 31 bits for the reciprocal. They take n = 20 and a 62-bit reciprocal (sum <= 2**50).
SHIFTMAX_FINE = 2.0**-5  # an input step up to this keeps the n = 12 form
SHIFTMAX_WIDE = (20, 62, 1 << 50)  # n, reciprocal bits, row-sum limit
SHIFTMAX_MASK_MARGIN = SHIFTMAX_N * math.log(2)  # masked scores sit this far below every row max
SHIFT_GELU_N = 23


def _exp_x0_or_none(s: float, n: int):
    try:
        return ref.exp_x0(s, n)
    except ValueError:
        return None


@int_rule("relax.nn.softmax")
def softmax(ctx, var, call, args):
    """Shiftmax over ``axis``; another axis than the last is moved last and back (permute_dims)."""
    (a,) = args
    nd = len(shape(var))
    axis = int(call.attrs.axis) % nd
    if not isinstance(a, Q):
        return None
    plan = _shiftmax_plan(ctx, call.args[0].name, a, shape(var)[axis])
    if plan is None:
        return None
    n, f_bits, s_in, bits, keep = plan
    x = a if keep else ctx.requant(a, s_in, bits)
    x0 = ref.exp_x0(s_in, n)
    order = [d for d in range(nd) if d != axis] + [axis]
    moved = x.expr if axis == nd - 1 else ctx.emit(relax.op.permute_dims(x.expr, order))
    unsigned = _unsigned_probabilities(ctx, var.name)
    out = ctx.emit_te(K.shiftmax, moved, x0, n, name="shiftmax", f_bits=f_bits, unsigned=unsigned)
    if axis != nd - 1:
        out = ctx.emit(relax.op.permute_dims(out, [int(i) for i in np.argsort(order)]))
    ctx.report.rows.append({"op": "shiftmax", "value": var.name, "in_bits": x.bits, "in_scale": s_in, "x0": x0, "n": n,
                            "f_bits": f_bits, "axis": axis, "out": "u8 at 2^-8" if unsigned else "s8 at 2^-7"})
    return Q(out, 2.0 ** (-8 if unsigned else -7), 8, unsigned=unsigned)


def _unsigned_probabilities(ctx, name: str) -> bool:
    """Shiftmax writes uint8 at ``2**-8`` (twice the resolution of int8 at ``2**-7``) when every
    reader is a matmul (u8 x s8: attention's ``P V``) and calibration saw the value non-negative;
    not with ``--requant pow2`` (its accelerator stores signed values)."""
    readers = ctx.readers(name)
    return bool(readers) and all(r == "relax.matmul" for r in readers) and ctx.unsigned_ok(name)


def _shiftmax_plan(ctx, name: str, a: Q, row: int):
    """``(n, f_bits, input scale, bits, keep a as it is)`` for Shiftmax over rows of ``row``, or None.

    The input is ``a`` as it is when it holds no value beyond its calibrated range ``T`` and
    Shiftmax accepts its scale; otherwise it is requantised to the widest width whose scale
    ``(T + SHIFTMAX_MASK_MARGIN) / qmax(b)`` keeps the worst row sum ``row * |x0| * 2**n`` within
    2**26. The margin keeps masked scores (an additive -inf / -FLT_MAX mask, which saturates at the
    range's end) ``12 ln 2`` below every row max, where their probability rounds to 0 (NUMERICS.md
    §3.10). ``n = 12`` with the 31-bit reciprocal while that admits a scale up to
    ``SHIFTMAX_FINE`` (rows up to ~500), else ``SHIFTMAX_WIDE`` when it admits a finer one."""
    ctx.act_scale(name, ACT_BITS)  # a one-line error when the value has no calibration
    t = float(ctx.calib.thresholds[name])
    within = not a.per_axis and a.max_abs * float(a.scale) <= t * 1.01  # int8 at T/127 reaches -128/127 T

    def scale(b):
        s = (t + SHIFTMAX_MASK_MARGIN) / qmax(b)
        return pow2_up(s) if ctx.pow2 else s

    def plan(n, f_bits, limit):
        def ok(s):
            x0 = _exp_x0_or_none(s, n)
            return x0 is not None and row * ((-x0) << n) <= limit

        if within and a.bits <= WIDE_BITS and ok(float(a.scale)):
            return n, f_bits, float(a.scale), a.bits, True
        bits = bits_for(lambda b: ok(scale(b)))
        return None if bits is None else (n, f_bits, scale(bits), bits, False)

    narrow = plan(SHIFTMAX_N, 31, SHIFTMAX_SUM_LIMIT)
    if narrow is not None and narrow[2] <= SHIFTMAX_FINE:
        return narrow
    wide = plan(*SHIFTMAX_WIDE)
    return narrow if wide is None or (narrow is not None and narrow[2] <= wide[2]) else wide


@int_rule("relax.nn.gelu", "relax.nn.gelu_tanh")
def gelu(ctx, var, call, args):
    """erf-GELU and its tanh form (within 1e-3 of each other) by the same integer GELU."""
    (a,) = args
    if not isinstance(a, Q):
        return None
    form = {"lambda": _lambda_gelu, "ibert": _i_gelu}.get(ctx.opts.gelu, _shift_gelu)
    return form(ctx, var, call, a)


def _shift_gelu(ctx, var, call, a: Q) -> Q | None:
    n = SHIFT_GELU_N
    x = ctx.fitting_input(call.args[0].name, a, lambda s, b: _exp_x0_or_none(s, n) is not None, widest=16, narrowest=6)
    if x is None:
        return None
    x0 = ref.exp_x0(float(x.scale), n)
    out = ctx.emit_te(K.shift_gelu, x.expr, x0, n, name="shift_gelu")
    ctx.report.rows.append({"op": "shift_gelu", "value": var.name, "in_bits": x.bits, "in_scale": float(x.scale), "x0": x0})
    return Q(out, float(x.scale) * 2.0**-15, 32, bound=x.max_abs << 15)  # |x * sigma_q| <= |x| * 2**15 (§3.3)


def _lambda_gelu(ctx, var, call, a: Q) -> Q | None:
    name = call.args[0].name
    terms = ctx.opts.lambdas.get(name)
    if terms is None:
        raise UnsupportedModelError(f"lambda-ShiftGELU: no calibrated lambda for {name}")

    def params(s, b):
        try:
            p = ref.lambda_gelu_params(s, terms)
            return p if p.x_max >= qmax(b) + 1 else None
        except ValueError:
            return None

    x = ctx.fitting_input(name, a, lambda s, b: params(s, b) is not None)
    if x is None:
        return None
    p = ref.lambda_gelu_params(float(x.scale), terms)
    out = ctx.emit_te(lambda t: K.lambda_shift_gelu(t, p), x.expr, name="lambda_gelu")
    ctx.report.rows.append({"op": "lambda_shift_gelu", "value": var.name, "in_bits": x.bits, "in_scale": float(x.scale),
                            "lambda": ref.lam_value(terms)})
    return Q(out, float(x.scale) * 2.0**-15, 32, bound=x.max_abs << 15)  # |x * sigma_q| <= |x| * 2**15 (§3.3)


def _i_gelu(ctx, var, call, a: Q) -> Q | None:
    """i-GELU on the widest input (int16 down to int8) whose scale its clip code accepts."""

    def params(s, b):
        try:
            p = ref.i_gelu_params(s)
            return p if p.x_max >= qmax(b) + 1 else None
        except ValueError:
            return None

    x = ctx.fitting_input(call.args[0].name, a, lambda s, b: params(s, b) is not None)
    if x is None:
        return None
    p = ref.i_gelu_params(float(x.scale))
    out = ctx.emit_te(lambda t: i_gelu_kernel(t, p), x.expr, name="i_gelu")
    ctx.report.rows.append({"op": "i_gelu", "value": var.name, "in_bits": x.bits, "in_scale": float(x.scale), "c": p.c})
    return Q(out, float(x.scale) * 2.0**-15, 32, bound=x.max_abs << 15)  # |x * sig| <= |x| * 2**15 (sig <= 2**15)


@int_rule("relax.nn.layer_norm")
def layer_norm(ctx, var, call, args):
    a, gamma, beta = args
    nd = len(shape(var))
    axes = [int(x) % nd for x in call.attrs.axes]
    if not isinstance(a, Q) or axes != [nd - 1] or not isinstance(gamma, np.ndarray) or not isinstance(beta, np.ndarray):
        return None
    C = shape(var)[-1]
    x = summable_input(ctx, var, call.args[0].name, a, C, C // 2, "LayerNorm row sum")
    ln = ctx.emit_te(K.i_layernorm, x.expr, name="i_layernorm")  # |ln| <= 2**30 (§3.6)
    bits = ctx.operand_bits(var.name)  # int16 where mixed precision chose it
    s_out = ctx.act_scale(var.name, bits)
    g = np.broadcast_to(gamma.astype(np.float64).reshape(-1), (C,))
    ratio = np.abs(g) * math.sqrt(C) * 2.0**-30 / s_out
    if ctx.pow2:
        ctx.report.notes.append(f"{var.name}: pow2 requant rounds LayerNorm gamma*sqrt(C) ratios to powers of two")
    m, e = requant_params(ratio, ctx.pow2)
    if np.any(g < 0):
        ln = ctx.emit(relax.op.multiply(ln, relax.const(np.where(g < 0, -1, 1).astype(np.int32))))
    mc, ec = relax.const(np.asarray(m, np.int64)), relax.const(np.asarray(e, np.int32))
    y = ctx.emit_te(K.requantize_per_axis, ln, mc, ec, -1, 32, name="requant_axis")
    bq = bias_codes(np.broadcast_to(beta.astype(np.float64).reshape(-1), (C,)), s_out)
    if math.ceil(2.0**30 * float(np.max(ratio))) + 1 + int(np.abs(bq.astype(np.int64)).max(initial=0)) > INT32_MAX:
        raise ValueError("LayerNorm output + beta may leave int32 (output scale far below gamma)")
    y = ctx.emit(relax.op.add(y, relax.const(bq)))
    y = ctx.emit(relax.op.clip(y, relax.prim_value(-qmax(bits) - 1), relax.prim_value(qmax(bits))))
    y = ctx.emit(relax.op.astype(y, int_dtype(bits)))
    ctx.report.rows.append({"op": "i_layernorm", "value": var.name, "C": C, "out_bits": bits})
    return Q(y, s_out, bits)
