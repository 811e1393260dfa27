"""Pure NumPy reference of the quantised layers the VTA backend runs.

This is the executable definition the simulator output must match bit for bit.  It
follows docs/CONTRACTS.md: products and sums in int64, round half up via
``(z + 2**(e-1)) >> e`` (arithmetic shift) for ``e >= 1``, ``e == 0`` means no shift,
then saturation to int8 (to ``[0, 127]`` with ReLU).

Shift weights (``wgt_mode='shift'``) are int8 codes (0 = zero, sign = code < 0,
p = |code| - 1) standing for the integers ``sign * 2**(P - p)``; the real weight is
``alpha_c * sign * 2**-p`` and ``alpha_c * 2**-P`` is folded into the requantiser.

When ``shiftc.reference`` exists on the main branch these functions belong there; they are
kept here, next to the code generator, until the lead merges the two.
"""
from __future__ import annotations

import numpy as np


class ReferenceError(ValueError):
    """Invalid arguments to a reference op."""


def round_shift(z: np.ndarray, e: int) -> np.ndarray:
    """Round half up and shift right by ``e`` (``e == 0``: identity). int64 in, int64 out."""
    z = np.asarray(z, dtype=np.int64)
    if not 0 <= e <= 62:
        raise ReferenceError(f"shift e={e} outside [0, 62]")
    return z if e == 0 else (z + (np.int64(1) << np.int64(e - 1))) >> np.int64(e)


def saturate_int8(y: np.ndarray, relu: bool = False) -> np.ndarray:
    return np.clip(y, 0 if relu else -128, 127).astype(np.int8)


def shift_code_weights(codes: np.ndarray, P: int) -> np.ndarray:
    """Integer weights ``sign * 2**(P - p)`` of int8 shift codes (int64); needs p <= P."""
    c = np.asarray(codes)
    if c.dtype != np.int8:
        raise ReferenceError(f"shift codes must be int8, got {c.dtype}")
    c = c.astype(np.int64)
    nz = c != 0
    q = np.where(nz, P - (np.abs(c) - 1), 0)
    if np.any(q < 0):
        raise ReferenceError(f"shift code with p > P={P}")
    mag = np.left_shift(np.int64(1), q)
    return np.where(nz, np.where(c < 0, -mag, mag), 0)


def layer_weights(w: np.ndarray, wgt_mode: str, shift_P: int | None) -> np.ndarray:
    """The integer weights of a layer (int64) in either weight mode."""
    w = np.asarray(w)
    if wgt_mode == "int8":
        if w.dtype != np.int8:
            raise ReferenceError(f"int8 weights must have dtype int8, got {w.dtype}")
        return w.astype(np.int64)
    if wgt_mode == "shift":
        if shift_P is None:
            raise ReferenceError("wgt_mode='shift' needs shift_P")
        return shift_code_weights(w, shift_P)
    raise ReferenceError(f"unknown wgt_mode {wgt_mode!r}")


def reference_qdense(x, w, bias, shift_e: int, relu: bool = False, wgt_mode: str = "int8",
                     shift_P: int | None = None) -> np.ndarray:
    """``y = sat8(round_half_up((x @ W^T + b) >> e))``; x (N, K) int8, w (M, K), bias (M,)."""
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 2:
        raise ReferenceError("x must be a 2-D int8 array")
    W = layer_weights(w, wgt_mode, shift_P)
    z = x.astype(np.int64) @ W.T
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.int64)[None, :]
    return saturate_int8(round_shift(z, shift_e), relu)


def _pads(padding) -> tuple[int, int, int, int]:
    """padding: int, (ph, pw) or (top, left, bottom, right)."""
    if np.isscalar(padding):
        p = int(padding)
        return p, p, p, p
    padding = tuple(int(v) for v in padding)
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    if len(padding) == 4:
        return padding
    raise ReferenceError(f"padding must be an int, 2 or 4 values, got {padding}")


def reference_qconv2d(x, w, bias, shift_e: int, stride=1, padding=0, groups: int = 1,
                      relu: bool = False, wgt_mode: str = "int8",
                      shift_P: int | None = None) -> np.ndarray:
    """Quantised 2-D convolution, NCHW int8 input, OIHW weights (O, C/groups, KH, KW)."""
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 4:
        raise ReferenceError("x must be a 4-D (NCHW) int8 array")
    W = layer_weights(w, wgt_mode, shift_P)
    N, C, H, Wd = x.shape
    O, Cg, KH, KW = W.shape
    sh, sw = (stride, stride) if np.isscalar(stride) else tuple(stride)
    pt, pl, pb, pr = _pads(padding)
    if C % groups or O % groups or Cg != C // groups:
        raise ReferenceError(f"channels C={C}, O={O} do not fit groups={groups} with weight "
                             f"shape {W.shape}")
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    OH = (H + pt + pb - KH) // sh + 1
    OW = (Wd + pl + pr - KW) // sw + 1
    if OH < 1 or OW < 1:
        raise ReferenceError("convolution output would be empty")
    # patches: (N, C, OH, OW, KH, KW)
    idx_h = (np.arange(OH) * sh)[:, None] + np.arange(KH)[None, :]
    idx_w = (np.arange(OW) * sw)[:, None] + np.arange(KW)[None, :]
    patches = xp[:, :, idx_h[:, None, :, None], idx_w[None, :, None, :]]
    Og = O // groups
    z = np.empty((N, O, OH, OW), dtype=np.int64)
    for g in range(groups):
        pg = patches[:, g * Cg:(g + 1) * Cg]
        wg = W[g * Og:(g + 1) * Og]
        z[:, g * Og:(g + 1) * Og] = np.einsum("ncyxhw,ochw->noyx", pg, wg)
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.int64)[None, :, None, None]
    return saturate_int8(round_shift(z, shift_e), relu)
