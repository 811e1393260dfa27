"""Requantisation helpers and the integer residual add (docs/NUMERICS.md §2.6-2.7).

Re-exports the dyadic machinery of :mod:`shiftc.reference.rounding` and adds

``add_int(a, sa, b, sb, s_out, bits=8)``: both operands are requantised **to the output scale**
(no intermediate clamp), added in int32, then saturated once::

    (ma, ea) = dyadic(sa / s_out);  (mb, eb) = dyadic(sb / s_out)
    a' = rshift_round(a * ma, ea);   b' = rshift_round(b * mb, eb)       # int64 products
    out = saturate(a' + b', bits)

Each side is rounded half up once, so ``|out - (a*sa + b*sb)/s_out| <= 1 + 2**-30 * (...)``
before saturation.  Range: ``|a|, |b| <= 2**31`` and ``m <= 2**31-1`` keep products below
``2**62``; the inputs of a residual add are int8/int32 accumulators, and ``a' + b'`` is formed
in int64 in the reference and must fit int32 in a kernel, which holds whenever
``|a|*sa/s_out, |b|*sb/s_out < 2**30`` (checked by the reference).
"""

from __future__ import annotations

import numpy as np

from .rounding import dyadic, out_dtype, requantize, rshift_round, saturate

__all__ = [
    "dyadic",
    "requantize",
    "rshift_round",
    "saturate",
    "requant_params",
    "pow2_dyadic",
    "add_int",
    "add_int_dyadic",
]


def requant_params(s_in, s_out):
    """``dyadic(s_in / s_out)`` (per-axis when ``s_in`` is an array)."""
    return dyadic(np.asarray(s_in, dtype=np.float64) / np.float64(s_out))


def pow2_dyadic(ratio):
    """``(m, e)`` of a shift-only requantiser (``--requant pow2``): ``ratio`` rounded to the
    nearest power of two ``2**k``, then ``(1, -k)`` for ``k <= 0`` (a rounding right shift) and
    ``(2**k, 0)`` for ``k > 0`` (a left shift); ratio 0 gives ``(0, 0)``. Arrays in, arrays out."""
    r = np.asarray(ratio, dtype=np.float64)
    k = np.where(r > 0, np.round(np.log2(np.where(r > 0, r, 1.0))), 0).astype(np.int64)
    if np.any(k > 30) or np.any(k < -62):
        raise ValueError(f"pow2 requantiser ratio out of range: {r}")
    m = np.where(r > 0, np.where(k > 0, np.left_shift(1, np.maximum(k, 0)), 1), 0).astype(np.int64)
    e = np.where(k > 0, 0, -k).astype(np.int64)
    if r.ndim == 0:
        return int(m), int(e)
    return m, e


def add_int_dyadic(a, ma: int, ea: int, b, mb: int, eb: int, bits: int = 8):
    """Integer core of :func:`add_int` with precomputed dyadic multipliers (what kernels run)."""
    a = np.asarray(a)
    b = np.asarray(b)
    for v in (a, b):
        if not np.issubdtype(v.dtype, np.integer):
            raise TypeError("add_int operands must be integer arrays")
    a2 = rshift_round(a.astype(np.int64) * np.int64(ma), ea)
    b2 = rshift_round(b.astype(np.int64) * np.int64(mb), eb)
    if a2.size and (np.abs(a2).max() >= 2**30 or np.abs(b2).max() >= 2**30):
        raise OverflowError("add_int: a requantised operand exceeds 2**30 (int32 sum not guaranteed)")
    return saturate(a2 + b2, bits).astype(out_dtype(bits))


def add_int(a, sa: float, b, sb: float, s_out: float, bits: int = 8):
    """Residual add of ``a`` (scale ``sa``) and ``b`` (scale ``sb``) into ``bits`` bits at ``s_out``."""
    ma, ea = requant_params(sa, s_out)
    mb, eb = requant_params(sb, s_out)
    return add_int_dyadic(a, ma, ea, b, mb, eb, bits)

