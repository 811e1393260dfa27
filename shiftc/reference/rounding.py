"""Rounding, saturation and dyadic requantisation (docs/NUMERICS.md §2, CONTRACTS.md).

One rounding mode, everywhere an integer is scaled down: **round half up**::

    rshift_round(z, e) = (z + (1 << (e - 1))) >> e      (arithmetic >>, e >= 1)
    rshift_round(z, 0) = z

i.e. ``floor(z / 2**e + 1/2)``: ``2.5 -> 3``, ``-2.5 -> -2``.  Saturation clamps to
``[-2**(b-1), 2**(b-1) - 1]`` after rounding, or to ``[0, 2**b - 1]`` for an unsigned value (one
that calibration proved non-negative: u8 operands of u8 x s8 -> int32 convs and matmuls).

Dyadic scale ``scale ~= m * 2**-e`` (``dyadic``)::

    (mant, exp) = frexp(scale)          # scale = mant * 2**exp, mant in [0.5, 1)
    m = floor(mant * 2**31 + 1/2)       # round half up; exact in float64
    e = 31 - exp
    if m == 2**31: m, e = 2**30, e - 1  # rounding carried into a new octave
    require 1 <= e <= 62

so ``m in [2**30, 2**31 - 1]`` (``m`` fits int32) and the relative error of ``m * 2**-e`` is
``<= 2**-31``.  ``scale == 0`` is accepted and gives ``(0, 1)`` (output exactly 0; used for
all-zero weight channels).  Negative, NaN, Inf scales and scales whose ``e`` falls outside
``[1, 62]`` (roughly ``scale >= 2**30`` or ``scale < 2**-32``) raise ``ValueError``.

Requantisation ``requantize(z, m, e, bits)``: ``saturate(rshift_round(z * m, e), bits)`` with the
product in int64.  Range: ``|z| <= 2**31`` and ``m <= 2**31 - 1`` give ``|z*m| < 2**62`` and the
rounding constant ``2**(e-1) <= 2**61``, so the int64 sum cannot overflow.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rshift_round", "saturate", "code_range", "dyadic", "requantize", "out_dtype", "INT32_MIN", "INT32_MAX"]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _check_e(e) -> np.ndarray:
    e_arr = np.asarray(e)
    if not np.issubdtype(e_arr.dtype, np.integer):
        raise TypeError(f"shift amount must be an integer, got {e_arr.dtype}")
    if np.any(e_arr < 0) or np.any(e_arr > 62):
        raise ValueError(f"shift amount must be in [0, 62], got {e}")
    return e_arr.astype(np.int64)


def rshift_round(z, e):
    """Round-half-up right shift ``(z + 2**(e-1)) >> e`` (``e == 0``: ``z``), in int64.

    ``e`` may be a scalar or an array broadcastable against ``z`` (per-axis shifts).
    Requires ``|z| < 2**62`` so that adding ``2**(e-1)`` cannot overflow int64 (checked).
    """
    e64 = _check_e(e)
    z64 = np.asarray(z)
    if not np.issubdtype(z64.dtype, np.integer):
        raise TypeError(f"z must be an integer array, got {z64.dtype}")
    z64 = z64.astype(np.int64)
    if z64.size and np.max(np.abs(z64.astype(np.float64))) >= 2.0**62:
        raise OverflowError("rshift_round needs |z| < 2**62")
    half = np.where(e64 > 0, np.left_shift(np.int64(1), np.maximum(e64 - 1, 0)), 0)
    return np.right_shift(z64 + half, e64)


def code_range(bits: int, unsigned: bool = False) -> tuple[int, int]:
    """The codes of a ``bits``-bit value: ``[-2**(bits-1), 2**(bits-1) - 1]``, or ``[0, 2**bits - 1]``
    unsigned (a value calibration proved non-negative, e.g. after ReLU: one more bit of resolution)."""
    if not 2 <= bits <= (31 if unsigned else 32):
        raise ValueError(f"bits must be in [2, {31 if unsigned else 32}], got {bits}")
    return (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def saturate(z, bits: int, unsigned: bool = False):
    """Clamp to ``code_range(bits, unsigned)`` (int64 result)."""
    lo, hi = code_range(bits, unsigned)
    return np.clip(np.asarray(z).astype(np.int64), lo, hi)


def out_dtype(bits: int, unsigned: bool = False):
    """Smallest NumPy integer type holding ``bits``-bit signed (or unsigned) values."""
    if unsigned:
        return np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32
    return np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32


def dyadic(scale):
    """``scale -> (m, e)`` with ``scale ~= m * 2**-e`` (see module docstring).

    Scalar in -> Python ints out; array in -> two int64 arrays of the same shape (per-axis).
    """
    s = np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"dyadic scale must be finite and >= 0, got {scale}")
    mant, ex = np.frexp(s)
    m = np.floor(mant * 2.0**31 + 0.5).astype(np.int64)
    e = (31 - ex).astype(np.int64)
    carry = m == 2**31
    m = np.where(carry, 2**30, m)
    e = np.where(carry, e - 1, e)
    zero = s == 0
    m = np.where(zero, 0, m)
    e = np.where(zero, 1, e)
    bad = (e < 1) | (e > 62)
    if np.any(bad):
        raise ValueError(
            f"scale {s[bad].reshape(-1)[0]!r} is outside the dyadic range (needs 2**-32 <= scale < 2**30, "
            "shift e in [1, 62])"
        )
    if s.ndim == 0:
        return int(m), int(e)
    return m, e


def _axis_view(v, ndim: int, axis):
    v = np.asarray(v, dtype=np.int64)
    if axis is None or v.ndim == 0:
        if v.ndim != 0 and v.size != 1:
            raise ValueError("per-axis m/e given without axis")
        return v.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return v.reshape(shape)


def requantize(z, m, e, bits: int = 8, axis=None, unsigned: bool = False):
    """``saturate(rshift_round(z * m, e), bits)`` (int64 product), as the smallest int dtype
    (``unsigned``: clamped to ``[0, 2**bits - 1]``, as uint8/uint16).

    Per-tensor: scalar ``m``, ``e``.  Per-axis: 1-D ``m``, ``e`` of length ``z.shape[axis]``.
    ``z`` must be an integer array with ``|z| <= 2**31``; ``0 <= m <= 2**31 - 1``.
    """
    z = np.asarray(z)
    if not np.issubdtype(z.dtype, np.integer):
        raise TypeError(f"z must be an integer array, got {z.dtype}")
    mm = _axis_view(m, z.ndim, axis)
    ee = _axis_view(e, z.ndim, axis)
    if np.any(mm < 0) or np.any(mm > INT32_MAX):
        raise ValueError("multiplier m must be in [0, 2**31 - 1]")
    z64 = z.astype(np.int64)
    if z64.size and (z64.min() < INT32_MIN or z64.max() > -INT32_MIN):
        raise OverflowError("requantize input must satisfy |z| <= 2**31")
    y = saturate(rshift_round(z64 * mm, ee), bits, unsigned)
    return y.astype(out_dtype(bits, unsigned))
