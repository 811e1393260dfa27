"""The integer linear ops of ``--integer-only`` (docs/NUMERICS.md §2.10): int8 or uint8 activations
times int8 weights, summed exactly.

``x`` is signed int8 (codes ``[-128, 127]``) or, for a value calibration proved non-negative,
unsigned uint8 (codes ``[0, 255]``, scale ``T / 255``); weights are int8. Every product and sum is
exact in int64 here; the kernels accumulate in int32, which the integeriser proves cannot overflow
(``overflow.dot_bound`` with ``x_bits + 1`` for unsigned codes: ``255 < 2**8``) or splits along K.

    matmul_int(x, w)[..., n]         = sum_k x[..., k] * w[k, n]
    conv2d_int(x, w)[n, o, i, j]     = sum_{c, di, dj} x_pad[n, g*C/G + c, i*s + di*d, j*s + dj*d] * w[o, c, di, dj]
"""

from __future__ import annotations

import numpy as np

from .shift import _conv_groups, im2col_nchw

__all__ = ["matmul_int", "conv2d_int"]

_OPERANDS = (np.int8, np.uint8)


def _check(x, w):
    x, w = np.asarray(x), np.asarray(w)
    if x.dtype not in _OPERANDS or w.dtype != np.int8:
        raise TypeError(f"integer linear ops take int8/uint8 x and int8 weights, got {x.dtype} x {w.dtype}")
    return x.astype(np.int64), w.astype(np.int64)


def matmul_int(x, w) -> np.ndarray:
    """``x (..., K) @ w (K, N)`` exactly (int64)."""
    x, w = _check(x, w)
    return x @ w


def conv2d_int(x, w, stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray:
    """NCHW ``x`` * OIHW ``w`` (``(O, C/groups, KH, KW)``), zero padding (an int, ``(ph, pw)`` or
    ``(top, left, bottom, right)``), exactly (int64)."""
    xs, W = _check(x, w)
    og = _conv_groups(np.asarray(x), W, groups)
    cg = W.shape[1]
    parts = []
    for g in range(groups):
        cols, (oh, ow) = im2col_nchw(xs[:, g * cg:(g + 1) * cg], W.shape[2], W.shape[3], stride, padding, dilation)
        parts.append((W[g * og:(g + 1) * og].reshape(og, -1) @ cols).reshape(xs.shape[0], og, oh, ow))
    return np.concatenate(parts, axis=1)
