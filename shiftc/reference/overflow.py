"""Static int32 accumulator bounds (docs/NUMERICS.md §2.8): what the integeriser proves at compile
time, from the constant weights and the operands' widths, before it emits an int32 reduction.

A ``b``-bit code lies in ``[-2**(b-1), 2**(b-1) - 1]`` (the saturating clamp), so ``|x| <= 2**(b-1)``
(:func:`code_max`; 128 at int8, not 127). The exact worst case of a dot product over ``k`` is

* constant weights ``W``:     ``B[c] = 2**(b-1) * sum_k |W[c, k]|``  per output channel (:func:`dot_bound`)
* two activations:            ``B = K * 2**(a-1) * 2**(b-1)``                          (:func:`act_dot_bound`)
* a sum / mean of ``n`` codes: ``B = n * 2**(b-1)``                                       (:func:`sum_bound`)

(plus ``|bias|`` where a bias is added to the accumulator). ``B <= 2**31 - 1`` proves that no int32
partial sum can wrap, whatever the input. When it does not hold, :func:`k_chunks` splits the
reduction into contiguous chunks whose own bound fits; the partial sums are added in int64 and
brought back to int32 with one round-half-up shift by :func:`narrow_shift`. :func:`chunked_matmul_int`
is the int64 truth of that split.
"""

from __future__ import annotations

import numpy as np

from .rounding import INT32_MAX, rshift_round

__all__ = [
    "code_max", "dot_bound", "act_dot_bound", "sum_bound", "fits_int32", "k_chunks", "narrow_shift",
    "max_uniform_k", "chunked_matmul_int", "shift_bound", "NARROW_LIMIT",
]

NARROW_LIMIT = 2**30 - 1  # a narrowed accumulator leaves room for a bias of the same size


def code_max(bits: int) -> int:
    """Largest ``|x|`` of a saturated ``bits``-bit code: ``2**(bits-1)``."""
    if not 1 <= int(bits) <= 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")
    return 1 << (int(bits) - 1)


def _abs64(w) -> np.ndarray:
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.integer):
        raise TypeError(f"weights must be integer codes, got {w.dtype}")
    return np.abs(w.astype(np.int64))


def dot_bound(w, axis: int, x_bits: int = 8) -> np.ndarray:
    """Per-channel worst case ``2**(x_bits-1) * sum |w|`` over every axis but ``axis`` (int64)."""
    a = _abs64(w)
    axis = axis % a.ndim
    other = tuple(d for d in range(a.ndim) if d != axis)
    return code_max(x_bits) * a.sum(axis=other)


def act_dot_bound(K: int, a_bits: int = 8, b_bits: int = 8) -> int:
    """Worst case of a ``K``-term dot product of two activations: ``K * 2**(a-1) * 2**(b-1)``."""
    return int(K) * code_max(a_bits) * code_max(b_bits)


def sum_bound(n: int, bits: int, rounding: int = 0) -> int:
    """Worst case of a sum of ``n`` ``bits``-bit codes (plus a rounding constant)."""
    return int(n) * code_max(bits) + int(rounding)


def fits_int32(bound) -> bool:
    """Whether every entry of a (per-channel) bound is ``<= 2**31 - 1``."""
    b = np.asarray(bound)
    return bool(b.size == 0 or int(b.max()) <= INT32_MAX)


def k_chunks(unit_abs, x_bits: int = 8, limit: int = INT32_MAX) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` chunks of the reduction whose bounds fit ``limit``.

    ``unit_abs[k, c]``: ``sum |W|`` of reduction unit ``k`` (a column of a matmul, an input channel
    of a conv with its ``kh*kw`` taps) for output channel ``c``. Greedy: each chunk is as long as
    it can be. Raises ``OverflowError`` when a single unit does not fit."""
    a = _abs64(unit_abs)
    a = a.reshape(a.shape[0], -1) * code_max(x_bits)
    if a.size and int(a.max()) > limit:
        raise OverflowError("one reduction unit alone exceeds the int32 accumulator")
    cs = np.vstack([np.zeros((1, a.shape[1]), np.int64), np.cumsum(a, axis=0)])
    chunks, start, K = [], 0, a.shape[0]
    while start < K:
        # largest stop with max_c (cs[stop] - cs[start]) <= limit; the running max is monotone
        worst = (cs[start + 1:] - cs[start]).max(axis=1)
        stop = start + int(np.searchsorted(worst, limit, side="right"))
        chunks.append((start, stop))
        start = stop
    return chunks


def narrow_shift(bound: int, limit: int = NARROW_LIMIT) -> int:
    """Smallest ``r >= 0`` with ``rshift_round(z, r)`` in ``[-limit, limit]`` for every ``|z| <= bound``."""
    bound, r = int(bound), 0
    while (bound + ((1 << r) >> 1)) >> r > limit:
        r += 1
    return r


def max_uniform_k(x_bits: int = 8, w_abs: int = 127) -> int:
    """Largest ``K`` whose worst case ``K * 2**(x_bits-1) * w_abs`` fits int32 (int8 activations
    and int8 weights: ``(2**31 - 1) // (128 * 127) = 132,104``)."""
    return INT32_MAX // (code_max(x_bits) * int(w_abs))


def chunked_matmul_int(x, w, chunks, r: int) -> np.ndarray:
    """``x (..., K) @ w (K, N)`` as the split kernel computes it: one int32 partial per chunk
    (checked to fit int32), the partials added in int64, then ``rshift_round(total, r)``."""
    x64, w64 = np.asarray(x).astype(np.int64), np.asarray(w).astype(np.int64)
    total = np.zeros((*x64.shape[:-1], w64.shape[-1]), np.int64)
    for start, stop in chunks:
        part = x64[..., start:stop] @ w64[start:stop]
        if part.size and np.abs(part).max() > INT32_MAX:
            raise OverflowError(f"partial sum of chunk [{start}, {stop}) leaves int32")
        total += part
    return rshift_round(total, r)


def shift_bound(codes, P: int, x_bits: int = 8) -> np.ndarray:
    """Per-output-channel worst case of the shift path (§1.5) for codes ``(terms, O, ...)``:
    ``2**(x_bits-1) * sum |sign * 2**(P - p)|`` over terms and the reduction (int64). Never above
    the kernel's ``K * terms * 2**(x_bits-1) * 2**P`` headroom bound."""
    c = np.abs(np.asarray(codes).astype(np.int64))
    mag = np.where(c == 0, 0, np.left_shift(np.int64(1), np.maximum(int(P) - (c - 1), 0)))
    other = tuple(d for d in range(c.ndim) if d != 1)
    return code_max(x_bits) * mag.sum(axis=other)
