"""Uniform-grid shift codes: one ``b``-bit level per weight, run as two or three shift terms.

A ``b``-bit uniform code stores one signed level ``m`` per weight, ``|m| <= L = 2**(b-1) - 1``
(symmetric: the field value ``-2**(b-1)`` is never written and is rejected when unpacking), and
one float32 ``alpha_c`` per output channel::

    w = alpha_c * m * 2**-(b-1)

The kernels never multiply by ``m``: it is expanded into its **canonical signed-digit** (CSD,
non-adjacent form) terms, ``m * 2**-(b-1) = sum_i s_i * 2**-p_i``, and each term is an ordinary
with-zero ``b``-bit power-of-two code (``shift.py``: ``sign * (p + 1)``, 0 for no term), so the
shift kernels, the integer path and the dot form run it exactly as a multi-term code. CSD gives the
fewest terms: ``terms_for(b)`` (2 for ``b = 3, 4``; 3 for ``b = 5, 6``). Every exponent lies in
``[0, b - 1]``, inside the with-zero ``b``-bit range. Example, ``b = 4``: ``7/8 = 2**0 - 2**-3``,
``5/8 = 2**-1 + 2**-3``, ``3/8 = 2**-1 - 2**-3``.

This is uniform (int-b) quantisation with a multiplier-free datapath: the same grid and the same
``b`` stored bits per weight as int-b, where a single power-of-two term (``encode_pot``) has a
grid twice as coarse in relative terms (about 18 % relative error on 4-bit pointwise layers,
against about 8 % here).

Encoding: ``alpha_c`` minimises the channel's squared error over the candidates
``max|w_c| * f * 2**(b-1) / L``, ``f = 0.30, 0.32, ..., 1.00`` (clipping the largest weights is
allowed), then 3 least-squares refits ``alpha = <w, u> / <u, u>`` (``u`` the decoded unit values),
each kept only if better; levels are ``round-half-away(w / alpha * 2**(b-1))`` clipped to
``[-L, L]``.

Packing: ``pack_uniform`` writes ``m`` as a ``b``-bit two's-complement field per weight, C order
over the weight (no terms axis), LSB first, plus the same spare-byte convention as
``pack_codes``.
"""

from __future__ import annotations

import functools

import numpy as np

from . import shift as S

__all__ = ["UNIFORM_BITS", "terms_for", "csd_codes", "levels_of", "encode_uniform", "pack_uniform", "unpack_uniform",
           "unpack_term_codes"]

UNIFORM_BITS = (3, 4, 5, 6)
CLIP_FRACTIONS = np.round(np.arange(0.30, 1.0001, 0.02), 2)


def _check_bits(bits: int) -> int:
    if bits not in UNIFORM_BITS:
        raise ValueError(f"uniform shift codes support bits in {UNIFORM_BITS}, got {bits}")
    return (1 << (bits - 1)) - 1


def _naf(a: int) -> list[tuple[int, int]]:
    """Non-adjacent form of ``a >= 0``: ``[(sign, k)]`` with ``a = sum sign * 2**k``, highest k first."""
    digits, k = [], 0
    while a:
        if a & 1:
            d = 2 - (a & 3)  # +1 if a = 1 mod 4, -1 if a = 3 mod 4
            digits.append((d, k))
            a -= d
        a >>= 1
        k += 1
    return digits[::-1]


@functools.cache
def _table(bits: int) -> np.ndarray:
    """``(L + 1, terms)`` int8: the term codes of every magnitude ``a = 0..L`` (positive sign)."""
    L = _check_bits(bits)
    rows = [[s * (bits - 1 - k + 1) for s, k in _naf(a)] for a in range(L + 1)]
    terms = max(len(r) for r in rows)
    return np.array([r + [0] * (terms - len(r)) for r in rows], dtype=np.int8)


def terms_for(bits: int) -> int:
    """Shift terms a ``bits``-bit uniform level needs at most (its largest CSD weight)."""
    return int(_table(bits).shape[1])


def csd_codes(m: np.ndarray, bits: int) -> np.ndarray:
    """Term codes ``(terms, *m.shape)`` int8 (with-zero, ``bits``-bit PoT codes) of levels ``m``."""
    m = np.asarray(m).astype(np.int64)
    L = _check_bits(bits)
    if np.any(np.abs(m) > L):
        raise ValueError(f"uniform {bits}-bit levels must lie in [-{L}, {L}]")
    codes = _table(bits)[np.abs(m)].astype(np.int64) * np.sign(m)[..., None]
    return np.ascontiguousarray(np.moveaxis(codes, -1, 0).astype(np.int8))


def levels_of(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`csd_codes`: the levels ``m`` (int64) of term codes ``(terms, ...)``;
    raises when the terms are not the CSD of a level."""
    codes = np.asarray(codes)
    unit = sum(np.where(c == 0, 0.0, np.sign(c) * np.ldexp(1.0, -(np.abs(c).astype(np.int64) - 1))) for c in codes)
    m = np.rint(unit * (1 << (bits - 1))).astype(np.int64)
    if not np.array_equal(csd_codes(m, bits), codes.astype(np.int8)):
        raise ValueError(f"codes are not the canonical terms of {bits}-bit uniform levels")
    return m


def _levels(w2: np.ndarray, alpha: np.ndarray, bits: int) -> np.ndarray:
    L = (1 << (bits - 1)) - 1
    a = alpha.reshape(-1, 1)
    u = np.where(a > 0, w2 / np.where(a > 0, a, 1.0), 0.0) * (1 << (bits - 1))
    return np.clip(np.sign(u) * np.floor(np.abs(u) + 0.5), -L, L).astype(np.int64)


def _sse(w2, alpha, m, bits):
    return np.sum((w2 - alpha.reshape(-1, 1) * np.ldexp(m.astype(np.float64), 1 - bits)) ** 2, axis=1)


def encode_uniform(w: np.ndarray, bits: int = 4, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Uniform codes of ``w``: ``(term codes int8 (terms, *w.shape), alpha float32 (C,))``; see the
    module docstring for the alpha search."""
    L = _check_bits(bits)
    w = np.asarray(w)
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or Inf")
    w2, moved_shape = S._to_channels(w.astype(np.float64), axis)
    mx = np.max(np.abs(w2), axis=1) if w2.shape[1] else np.zeros(w2.shape[0])
    best = best_err = None
    for f in CLIP_FRACTIONS:
        cand = (mx * f * (1 << (bits - 1)) / L).astype(np.float32).astype(np.float64)
        err = _sse(w2, cand, _levels(w2, cand, bits), bits)
        better = np.ones_like(err, bool) if best is None else err < best_err
        best, best_err = (cand, err) if best is None else (np.where(better, cand, best), np.where(better, err, best_err))
    for _ in range(3):
        u = np.ldexp(_levels(w2, best, bits).astype(np.float64), 1 - bits)
        den = np.sum(u * u, axis=1)
        ls = np.where(den > 0, np.sum(w2 * u, axis=1) / np.where(den > 0, den, 1.0), best)
        cand = np.where(ls > 0, ls, best).astype(np.float32).astype(np.float64)
        err = _sse(w2, cand, _levels(w2, cand, bits), bits)
        better = err < best_err
        best, best_err = np.where(better, cand, best), np.where(better, err, best_err)
    best = np.where(mx > 0, best, 0.0)
    m = S._from_channels(_levels(w2, best, bits), moved_shape, axis, w.ndim)
    return csd_codes(m, bits), best.astype(np.float32)


def pack_uniform(codes: np.ndarray, bits: int) -> bytes:
    """The levels of term codes ``(terms, ...)`` as ``bits``-bit two's-complement fields, LSB first."""
    return S.pack_fields(levels_of(codes, bits).reshape(-1) & ((1 << bits) - 1), bits)


def unpack_uniform(data: bytes, bits: int, shape) -> np.ndarray:
    """Inverse of :func:`pack_uniform`: term codes ``(terms, *shape)``."""
    field = S.unpack_fields(data, bits, int(np.prod(shape)), "levels")
    m = np.where(field >> (bits - 1), field - (1 << bits), field)
    if np.any(m == -(1 << (bits - 1))):
        raise ValueError(f"invalid packed level: -{1 << (bits - 1)} is outside the symmetric {bits}-bit grid")
    return csd_codes(m.reshape(shape), bits)


def unpack_term_codes(data: bytes, oi_shape, bits: int, terms: int, zero_free: bool, uniform: bool) -> np.ndarray:
    """A kernel's packed weight stream as term codes ``(terms, *oi_shape)``, power-of-two or uniform."""
    if uniform:
        codes = unpack_uniform(data, bits, oi_shape)
        if codes.shape[0] != terms:
            raise ValueError(f"{bits}-bit uniform levels take {codes.shape[0]} terms, the kernel says {terms}")
        return codes
    return S.unpack_codes(data, bits, terms * int(np.prod(oi_shape)), zero_free, shape=(terms, *oi_shape))
