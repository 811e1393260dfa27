"""Integer bilinear resize (ONNX ``Resize``, ``mode="linear"``, 2-D, NCHW): exact rational source
coordinates, fixed-point interpolation weights, one round-half-up shift (docs/NUMERICS.md §3.9).

Output index ``i`` of an axis resized from ``n`` to ``m`` reads the source coordinate
``(a·i + b) / d`` (integers ``a, b, d`` from the coordinate transformation mode and the two
sizes, ``bilinear_coords``): its taps are ``lo = floor((a·i + b) / d)`` and ``lo + 1`` (clamped
to ``[0, n - 1]``), the weight of the upper tap is ``w = round_half_up(2**k · frac / d)`` with
``frac = a·i + b - lo·d`` in ``[0, d)``, and the lower tap's is ``2**k - w``. The output is
``rshift_round(Σ wy·wx·x, 2k)`` with ``k = RESIZE_FRAC_BITS``: the two weights of an axis sum to
``2**k``, so the result is a convex combination of the four taps and stays within their range
(same width and scale as ``x``; per channel, so a per-channel scale on axis 1 is kept).
"""

from __future__ import annotations

import numpy as np

from .rounding import rshift_round

__all__ = ["RESIZE_FRAC_BITS", "RESIZE_MODES", "bilinear_coords", "bilinear_taps", "bilinear_resize_int", "bilinear_resize_float"]

RESIZE_FRAC_BITS = 15  # Q0.15 weights; |x| <= 2**31 keeps every product below 2**61 (int64)
RESIZE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


def bilinear_coords(n: int, m: int, mode: str) -> tuple[int, int, int]:
    """``(a, b, d)``: output index ``i`` of an axis resized from ``n`` to ``m`` reads source
    coordinate ``(a·i + b) / d`` (ONNX coordinate_transformation_mode, scale ``m / n``)."""
    if n < 1 or m < 1:
        raise ValueError(f"resize sizes must be positive, got {n} -> {m}")
    if mode == "half_pixel" or (mode == "pytorch_half_pixel" and m > 1):
        return 2 * n, n - m, 2 * m  # (i + 1/2)·n/m - 1/2
    if mode in ("pytorch_half_pixel", "align_corners") and m == 1:
        return 0, 0, 1
    if mode == "align_corners":
        return n - 1, 0, m - 1  # i·(n - 1)/(m - 1)
    if mode == "asymmetric":
        return n, 0, m  # i·n/m
    raise ValueError(f"no integer bilinear resize for coordinate_transformation_mode {mode!r}")


def bilinear_taps(n: int, m: int, mode: str, frac_bits: int = RESIZE_FRAC_BITS):
    """``(lo, hi, w)`` for the ``m`` outputs of an axis: the two source indices (clamped) and the
    upper tap's weight in ``[0, 2**frac_bits]`` (int64 arrays)."""
    a, b, d = bilinear_coords(n, m, mode)
    num = a * np.arange(m, dtype=np.int64) + b
    lo = num // d
    w = ((num - lo * d) * (1 << (frac_bits + 1)) + d) // (2 * d)  # round_half_up(2**k · frac / d)
    return np.clip(lo, 0, n - 1), np.clip(lo + 1, 0, n - 1), w


def bilinear_resize_int(x, size, mode: str, frac_bits: int = RESIZE_FRAC_BITS):
    """NCHW integer bilinear resize of ``x`` (|x| <= 2**31) to ``size = (H, W)``; int64 result."""
    x = np.asarray(x)
    if x.ndim != 4 or x.dtype.kind not in "iu":
        raise ValueError("bilinear_resize_int takes a 4-D integer NCHW array")
    if not 1 <= frac_bits <= 15:
        raise ValueError(f"frac_bits must be in [1, 15], got {frac_bits}")
    x = x.astype(np.int64)
    if x.size and np.abs(x).max() > 1 << 31:
        raise OverflowError("bilinear_resize_int input outside int32")
    (_, _, h, w_in), (H, W) = x.shape, (int(size[0]), int(size[1]))
    y0, y1, wy = (t[:, None] for t in bilinear_taps(h, H, mode, frac_bits))
    x0, x1, wx = bilinear_taps(w_in, W, mode, frac_bits)
    one = 1 << frac_bits
    top = (one - wx) * x[:, :, y0, x0] + wx * x[:, :, y0, x1]
    bottom = (one - wx) * x[:, :, y1, x0] + wx * x[:, :, y1, x1]
    return rshift_round((one - wy) * top + wy * bottom, 2 * frac_bits)


def bilinear_resize_float(x, size, mode: str):
    """The yardstick: float64 bilinear resize of NCHW ``x`` at the same source coordinates with
    exact weights (edge-clamped taps, as ONNX and TOPI); axis by axis, which is the same sum."""
    out = np.asarray(x, np.float64)
    for axis, m in zip((2, 3), (int(size[0]), int(size[1]))):
        n = out.shape[axis]
        a, b, d = bilinear_coords(n, m, mode)
        pos = (a * np.arange(m, dtype=np.float64) + b) / d
        lo = np.floor(pos).astype(np.int64)
        frac = (pos - lo).reshape([-1 if k == axis else 1 for k in range(4)])
        low, high = np.take(out, np.clip(lo, 0, n - 1), axis), np.take(out, np.clip(lo + 1, 0, n - 1), axis)
        out = (1 - frac) * low + frac * high
    return out
