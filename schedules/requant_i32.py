"""The int32 form of a requantiser: the same integers as ``shiftc.reference.requantize`` with one
32 x 32 -> high-32 multiply and no other 64-bit arithmetic.

The reference computes ``y = sat(floor((z*m + H) / 2^e))`` (``H = 2^(e-1)``, 0 for ``e = 0``) with
an int64 product; vectorised, that is 64-bit multiplies, variable 64-bit arithmetic shifts and
64-bit clamps (AVX2 has none of the three as one instruction). The int32 form::

    zc = clamp(z, zlo, zhi)                       # int32; z's saturating range, per channel
    y  = (mulhi(zc << sh, m') + r) >> s           # int32; mulhi(a, b) = (a * b) >> 32 (64-bit product)
    y  = sat(y)

with per-channel constants derived here in exact integer arithmetic:

- ``m' = m * 2^k`` in ``[2^30, 2^31)`` and ``e1 = e + k`` (the same ratio); ``e1 >= 63`` means
  ``y == 0`` for every int32 ``z`` (``|z * m| < 2^62``), written as ``m' = 0``;
- ``e' = max(e1, 33)``, ``sh = e' - e1`` (a left shift of ``zc``), ``s = e' - 32`` in ``[1, 30]``,
  ``r = 2^(e' - 33)``: since ``e' - 1 >= 32``, ``floor((P + 2^(e'-1)) / 2^e') = (floor(P / 2^32) +
  2^(e'-33)) >> (e' - 32)`` for ``P = (zc << sh) * m'``, exactly (nested floor division);
- ``zlo`` / ``zhi``: the largest ``z`` whose output saturates low and the smallest that saturates
  high (``y`` is non-decreasing in ``z`` since ``m >= 0``), so clamping ``z`` to them first changes
  no output; it bounds ``zc << sh`` where ``sh > 0``.

``|mulhi| < 2^30`` and ``r <= 2^29``, so the sum fits int32. ``int32_form`` returns None (the
caller keeps the int64 form) when ``zc << sh`` could leave int32 (a scale above about 2^29) or
a parameter is outside the reference's contract.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftc.reference.rounding import code_range

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Int32Requant:
    """Per-channel int32 constants of the int32 form (1-D, one entry per channel)."""

    zlo: np.ndarray
    zhi: np.ndarray
    sh: np.ndarray
    m: np.ndarray
    r: np.ndarray
    s: np.ndarray


def rounding_term(m: int, e: int, zmax: int) -> tuple[int, int, int, int] | None:
    """``(sh, m', r, s)`` with ``(mulhi(z << sh, m') + r) >> s == floor((z*m + H) / 2^e)`` for every
    int32 ``z`` with ``|z| <= zmax`` (module doc), or None where ``zmax << sh`` could leave int32."""
    if not (0 <= m <= INT32_MAX and 0 <= e <= 62):
        return None
    if m == 0:  # floor(H / 2^e) == 0, and so is (0 + 1) >> 1
        return 0, 0, 1, 1
    k = 30 - (m.bit_length() - 1)
    mn, e1 = m << k, e + k
    if e1 >= 63:  # |z * m'| < 2^62 <= 2^(e1-1): always 0
        return 0, 0, 1, 1
    ep = max(e1, 33)
    sh = ep - e1
    if sh and zmax > (INT32_MAX >> sh):
        return None
    return sh, mn, 1 << (ep - 33), ep - 32


def _channel(m: int, e: int, lo: int, hi: int) -> tuple[int, ...] | None:
    if not (0 <= m <= INT32_MAX and 0 <= e <= 62):
        return None
    if m == 0:
        return (0, 0, *rounding_term(0, e, 0))
    half = 1 << (e - 1) if e else 0
    # saturating range of z (exact integer floor / ceil divisions)
    zhi = -((-(hi * 2**e - half)) // m)  # smallest z with y(z) >= hi
    zlo = ((lo + 1) * 2**e - half - 1) // m  # largest z with y(z) <= lo
    zlo, zhi = max(zlo, INT32_MIN), min(zhi, INT32_MAX)
    term = rounding_term(m, e, max(-zlo, zhi))
    return None if term is None else (zlo, zhi, *term)


def int32_form(m, e, bits: int, unsigned: bool = False) -> Int32Requant | None:
    """The int32 form's constants for multipliers ``m`` and shifts ``e`` (scalars or 1-D arrays of
    one per channel), or None where some channel has no exact int32 form (module doc)."""
    lo, hi = code_range(bits, unsigned)
    ms = np.atleast_1d(np.asarray(m, np.int64))
    es = np.atleast_1d(np.asarray(e, np.int64))
    if ms.shape != es.shape or ms.ndim != 1:
        return None
    rows = [_channel(int(a), int(b), lo, hi) for a, b in zip(ms, es)]
    if any(r is None for r in rows):
        return None
    cols = np.array(rows, np.int64).reshape(len(rows), 6).T
    return Int32Requant(*(c.astype(np.int32) for c in cols))


def apply(form: Int32Requant, z: np.ndarray, bits: int, unsigned: bool = False, axis: int = -1) -> np.ndarray:
    """NumPy model of the int32 form on int32 ``z`` (channels along ``axis``), for tests."""
    shape = [1] * z.ndim
    shape[axis] = -1
    c = {k: getattr(form, k).astype(np.int64).reshape(shape) for k in ("zlo", "zhi", "sh", "m", "r", "s")}
    zc = np.clip(z.astype(np.int64), c["zlo"], c["zhi"]) << c["sh"]
    assert np.all((zc >= INT32_MIN) & (zc <= INT32_MAX))
    y = ((zc * c["m"]) >> 32) + c["r"]
    assert np.all((y >= INT32_MIN) & (y <= INT32_MAX))
    lo, hi = code_range(bits, unsigned)
    return np.clip(y >> c["s"], lo, hi)
