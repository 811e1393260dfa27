"""Float-activation shift products with the kernels' flush-to-zero (FTZ) semantics (NumPy truth).

A shift kernel computes ``x * s * 2^-p`` by subtracting ``p`` from the float32 exponent field of
``x``.  That is exact (``ldexp``) except where the result would be subnormal: the term is then 0.
Precisely, with ``E`` the biased exponent field of float32 ``x``: the term is 0 when ``E <= p``
(this covers ``x == 0`` and subnormal ``x``, ``E == 0``), else ``s * ldexp(x, -p)``; zero codes
add 0.  Sums are taken in float64 and rounded once to float32, so a float32-accumulating kernel
agrees to float32 round-off (tests use <= 1e-6 relative L2).
"""

from __future__ import annotations

import numpy as np

from .shift import _conv_groups, im2col_nchw


def ftz_terms(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Elementwise ``x * sign * 2^-p`` (float64) with FTZ, broadcasting ``x`` against ``codes``."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(codes).astype(np.int64)
    p = np.maximum(np.abs(c) - 1, 0)
    exp_field = (x.view(np.uint32) >> 23) & 0xFF
    val = np.ldexp(x.astype(np.float64), -p) * np.sign(c)
    return np.where((c == 0) | (exp_field <= p), 0.0, val)


def shift_matmul_float_ftz(x: np.ndarray, codes: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``y[..., o] = alpha[o] * sum_{t,k} ftz(x[..., k] * s * 2^-p)``; codes ``(O, K)`` or ``(terms, O, K)``."""
    x = np.asarray(x, dtype=np.float32)
    stack = np.asarray(codes)
    stack = stack if stack.ndim == 3 else stack[None]
    acc = np.zeros(x.shape[:-1] + (stack.shape[1],), dtype=np.float64)
    for c in stack:
        acc += ftz_terms(x[..., None, :], c).sum(axis=-1)
    return (acc * np.asarray(alpha, np.float32).astype(np.float64)).astype(np.float32)


def shift_conv2d_float_ftz(x, codes, alpha, stride=1, padding=0, dilation=1, groups=1):
    """NCHW x OIHW codes (or ``(terms, O, I/g, kh, kw)``) float conv with FTZ shift terms."""
    x = np.asarray(x, dtype=np.float32)
    stack = np.asarray(codes)
    stack = stack if stack.ndim == 5 else stack[None]
    og = _conv_groups(x, stack[0], groups)
    alpha = np.asarray(alpha, np.float32).reshape(-1)
    _, O, Ig, kh, kw = stack.shape
    outs = []
    for g in range(groups):
        cols, (oh, ow) = im2col_nchw(x[:, g * Ig : (g + 1) * Ig], kh, kw, stride, padding, dilation)
        cg = stack[:, g * og : (g + 1) * og].reshape(stack.shape[0], og, -1)
        y = shift_matmul_float_ftz(np.swapaxes(cols, 1, 2), cg, alpha[g * og : (g + 1) * og])
        outs.append(np.swapaxes(y, 1, 2).reshape(x.shape[0], og, oh, ow))
    return np.concatenate(outs, axis=1).astype(np.float32)
