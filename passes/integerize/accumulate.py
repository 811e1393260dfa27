"""The int32 accumulator proof of the linear rules (docs/NUMERICS.md §2.8).

Before a rule emits an int32 reduction it bounds it with ``shiftc.reference.overflow``. When the
bound fits int32 the reduction is emitted as one op, as always. When it does not, the reduction
is split along K into chunks whose own bounds fit (``k_chunks``): one int32 op per chunk, the
partials added in int64, and the sum narrowed back to int32 by one round-half-up shift
(``narrow_shift``, scale ``x 2**r``) -- bit-equal to ``reference.chunked_matmul_int``. A
reduction that cannot be split is refused with a one-line ``UnsupportedModelError``.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from shiftc.core.errors import UnsupportedModelError
from shiftc.reference import overflow as ov
from shiftc.reference.rounding import INT32_MAX

from .scales import bits_for
from .value import ACT_BITS, WIDE_BITS, Q, shape


def reduce_int32(ctx, var, emit_chunk, unit_abs: np.ndarray, x_bits: int, scale, axis: int | None, row: dict) -> Q:
    """An int32 reduction over K whose per-unit weights are ``unit_abs`` (K, channels).

    ``emit_chunk(start, stop)`` emits the int32 op over ``[start, stop)`` (``None`` for all of
    K). The result carries its proven bound; ``row`` (the report row) records a split."""
    bound = ov.code_max(x_bits) * unit_abs.sum(axis=0)
    if axis is None:
        bound = int(bound.max())
    if ov.fits_int32(bound):
        return Q(emit_chunk(None, None), scale, 32, axis, bound=bound)
    chunks = ov.k_chunks(unit_abs, x_bits)
    total = None
    for start, stop in chunks:
        part = ctx.emit(relax.op.astype(emit_chunk(start, stop), "int64"))
        total = part if total is None else ctx.emit(relax.op.add(total, part))
    worst = int(np.max(bound))
    r = ov.narrow_shift(worst)
    row.update(split=len(chunks), bound=worst, shift=r)
    why = (f"int32 accumulator bound {worst:,} > 2^31-1: reduction over K={unit_abs.shape[0]:,} split into "
           f"{len(chunks)} chunks (<= {max(b - a for a, b in chunks):,} each), partials summed in int64")
    return ctx.narrow(Q(total, scale, 64, axis, bound=bound), r, var.name, why)


def refuse_unless_fits(var, bound, what: str, safe: str) -> None:
    """One-line ``UnsupportedModelError`` naming the layer when ``bound`` exceeds int32."""
    if ov.fits_int32(bound):
        return
    raise UnsupportedModelError(
        f"integerize: {var.name}: int32 accumulator of {what} may overflow (bound {int(np.max(bound)):,} > 2^31-1) "
        f"and shiftc does not split it; largest safe setting: {safe}"
    )


def weight_safe(x_bits: int) -> str:
    """The largest safe setting of a constant-weight reduction, in words."""
    return (f"sum|W_int8| <= {INT32_MAX // ov.code_max(x_bits):,} per output channel "
            f"(K <= {ov.max_uniform_k(x_bits):,} at int{x_bits} with full-scale weights)")


def sliced(ctx, expr, axis: int, start, stop):
    """``expr[..., start:stop, ...]`` along ``axis`` (``expr`` itself for ``start is None``)."""
    if start is None:
        return expr
    axis = axis % len(shape(expr))
    return ctx.emit(relax.op.strided_slice(expr, [axis], [int(start)], [int(stop)]))


def summable_input(ctx, var, name: str, q: Q, n: int, rounding: int, what: str) -> Q:
    """``q`` as per-tensor integers at the widest width from int16 down to int8 whose sum of ``n``
    values (plus a ``rounding`` constant) provably fits int32: ``n * 2**(b-1) + rounding``.
    Refused (one line, naming the layer) when even int8 does not fit."""
    bits = bits_for(lambda b: ov.fits_int32(ov.sum_bound(n, b, rounding)), widest=WIDE_BITS, narrowest=ACT_BITS)
    if bits is None:
        safe = f"at most {(INT32_MAX - rounding) // ov.code_max(ACT_BITS):,} summed values at int{ACT_BITS}"
        refuse_unless_fits(var, ov.sum_bound(n, ACT_BITS, rounding), f"a {what} over {n:,} values", safe)
    if bits < WIDE_BITS:
        ctx.report.notes.append(f"{var.name}: {what} over {n:,} values taken at int{bits} (int{WIDE_BITS} could leave int32)")
    return ctx.as_int(name, q, bits)
