"""The layers the VTA-style accelerator runs (docs/NUMERICS.md §5): int8 dense and conv2d
with int8 or shift-code weights, requantised by a rounding shift alone (its ALU has no multiplier).

::

    z = x * W + b                                  # int64 (exact)
    y = saturate(rshift_round(z, e), bits)         # e >= 0: round half up
    y = saturate(z << -e, bits)                    # e < 0: saturating left shift
    ReLU: the lower bound is 0 instead of -2**(bits-1)

``W`` is the int8 weight, or with ``wgt_mode='shift'`` the integer ``sign * 2**(P - p)`` of each
int8 shift code (:func:`shiftc.reference.shift.code_weights`); the real weight is
``alpha_c * sign * 2**-p``, and ``alpha_c * 2**-P`` belongs to the output scale.  ``e`` is one
shift or one per output channel; ``bits`` is 8, 16 or 32.  The accelerator must match these
functions bit for bit (tests/test_vta_codegen.py).
"""

from __future__ import annotations

import numpy as np

from .rounding import out_dtype, rshift_round, saturate
from .shift import _conv_groups, code_weights, im2col_nchw

__all__ = ["integer_weights", "shift_requantize", "qdense", "qconv2d"]

OUT_BITS = (8, 16, 32)


def integer_weights(w, wgt_mode: str = "int8", shift_P: int | None = None) -> np.ndarray:
    """The integer weights (int64) of a layer: int8 weights as they are, or shift codes decoded
    at ``shift_P``."""
    w = np.asarray(w)
    if wgt_mode == "int8":
        if w.dtype != np.int8:
            raise TypeError(f"int8 weights must have dtype int8, got {w.dtype}")
        return w.astype(np.int64)
    if wgt_mode == "shift":
        if shift_P is None:
            raise ValueError("wgt_mode='shift' needs shift_P")
        return code_weights(w, shift_P)
    raise ValueError(f"unknown wgt_mode {wgt_mode!r}")


def shift_requantize(z, shift_e, bits: int = 8, relu: bool = False, axis: int = 1) -> np.ndarray:
    """``saturate(rshift_round(z, e), bits)``, or ``saturate(z << -e, bits)`` where ``e < 0``.

    ``shift_e``: one int or one per channel along ``axis`` of ``z``, each in ``[-30, 62]``.
    With ``relu`` the result is clamped to ``[0, 2**(bits-1) - 1]``.
    """
    if bits not in OUT_BITS:
        raise ValueError(f"out_bits must be 8, 16 or 32, got {bits}")
    z = np.asarray(z).astype(np.int64)
    e = np.asarray(shift_e, dtype=np.int64)
    if e.ndim:
        shape = [1] * z.ndim
        shape[axis] = -1
        e = e.reshape(shape)
    if np.any(e < -30) or np.any(e > 62):
        raise ValueError(f"shift e outside [-30, 62]: {e.reshape(-1)}")
    y = np.where(e < 0, z << np.maximum(-e, 0), rshift_round(z, np.maximum(e, 0)))
    y = saturate(y, bits)
    return (np.maximum(y, 0) if relu else y).astype(out_dtype(bits))


def _bias(z: np.ndarray, bias, axis: int) -> np.ndarray:
    if bias is None:
        return z
    shape = [1] * z.ndim
    shape[axis] = -1
    return z + np.asarray(bias, dtype=np.int64).reshape(shape)


def qdense(x, w, bias, shift_e, relu: bool = False, wgt_mode: str = "int8",
           shift_P: int | None = None, out_bits: int = 8) -> np.ndarray:
    """``shift_requantize(x @ W^T + b, e)``: x (N, K) int8, w (M, K), bias (M,) or None."""
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 2:
        raise TypeError("x must be a 2-D int8 array")
    z = x.astype(np.int64) @ integer_weights(w, wgt_mode, shift_P).T
    return shift_requantize(_bias(z, bias, 1), shift_e, out_bits, relu, axis=1)


def qconv2d(x, w, bias, shift_e, stride=1, padding=0, groups: int = 1, relu: bool = False,
            wgt_mode: str = "int8", shift_P: int | None = None, out_bits: int = 8) -> np.ndarray:
    """Quantised conv2d: NCHW int8 ``x``, OIHW weights ``(O, C/groups, KH, KW)``, zero padding
    (an int, ``(ph, pw)`` or ``(top, left, bottom, right)``), then :func:`shift_requantize`."""
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 4:
        raise TypeError("x must be a 4-D (NCHW) int8 array")
    W = integer_weights(w, wgt_mode, shift_P)
    og = _conv_groups(x, W, groups)
    cg = W.shape[1]
    parts = []
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg].astype(np.int64)
        cols, (oh, ow) = im2col_nchw(xg, W.shape[2], W.shape[3], stride, padding)
        wg = W[g * og:(g + 1) * og].reshape(og, -1)
        parts.append((wg @ cols).reshape(x.shape[0], og, oh, ow))
    z = np.concatenate(parts, axis=1)
    return shift_requantize(_bias(z, bias, 1), shift_e, out_bits, relu, axis=1)
