"""Integer rules of add-only attention (ShiftAddViT; shiftc.finetune.attention exports it):

    sign(x)          ->  sign_int(x)   int8 in {-1, 0, 1} at scale 1 (x's scale is positive, so
                                       the sign of its integers is the sign of its reals)
    matmul(s, b)     ->  sign_matmul(s, b)   s a sign value: int32 sum of selected +-b, scale s_b

Neither kernel multiplies (tests/test_shift_tir.py). ``b`` keeps its integers when the bound
``K * max|b|`` fits int32 (an int32 accumulator of a first sign matmul feeds the second), else it
is requantised to int8 at its calibrated scale first; a per-axis ``b`` is made per tensor unless
its axis is the last (the output's columns keep their scales).
"""

from __future__ import annotations

from shiftc.kernels import attention as AK
from shiftc.reference.sign_attention import INT32_MAX, sign_matmul_bound

from .registry import int_rule
from .value import ACT_BITS, WIDE_BITS, Q, shape


@int_rule("relax.sign")
def sign(ctx, var, call, args):
    (a,) = args
    if not isinstance(a, Q):
        return None
    out = ctx.emit_te(AK.sign_int, a.expr, name="sign_int")
    ctx.report.rows.append({"op": "sign", "value": var.name})
    return Q(out, 1.0, 8, bound=1, sign=True)


def _operand(ctx, name: str, b: Q, k: int) -> Q:
    """``b`` as the integer operand of a ``k``-term sign matmul: per tensor (or per last axis) and
    with ``k * max|b|`` within int32."""
    rank = len(shape(b.expr))
    if b.per_axis and b.axis % rank != rank - 1:
        b = ctx.as_int(name, b, WIDE_BITS)
    if sign_matmul_bound(k, b.max_abs) > INT32_MAX:
        b = ctx.as_int(name, b, WIDE_BITS if sign_matmul_bound(k, 1 << (WIDE_BITS - 1)) <= INT32_MAX else ACT_BITS)
    return b


def sign_matmul(ctx, var, call, s: Q, b: Q):
    """``s @ b`` for a sign value ``s``: the select-and-add kernel, at ``b``'s scale(s)."""
    k = shape(s.expr)[-1]
    b = _operand(ctx, call.args[1].name, b, k)
    bound = sign_matmul_bound(k, b.max_abs)
    out = ctx.emit_te(AK.sign_matmul, s.expr, b.expr, b.max_abs, name="sign_matmul")
    ctx.report.rows.append({"op": "sign_matmul", "value": var.name, "weights": "sign (add-only)", "bound": bound})
    axis = len(shape(var)) - 1 if b.per_axis else None
    return Q(out, b.scale, 32, axis, bound=bound)
