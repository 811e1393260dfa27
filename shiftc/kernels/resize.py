"""TE kernel of the integer bilinear resize (reference: :mod:`shiftc.reference.resize`, bit for bit).

The taps and weights of each axis are computed in the kernel, in int64, from the integers
``(a, b, d)`` of ``bilinear_coords`` (no float, no table argument); the four-tap sum is int64 and
ends in one round-half-up shift by ``2k`` (``k <= 15``: ``|x| <= 2**31`` keeps it below ``2**62``).
"""

from __future__ import annotations

from tvm import te
from tvm import tirx as tir

from shiftc.reference.resize import RESIZE_FRAC_BITS, bilinear_coords

__all__ = ["bilinear_resize"]


def _c(v: int):
    return tir.const(int(v), "int64")


def _axis_taps(n: int, m: int, mode: str, k: int, name: str):
    """``(lo, hi, w)`` as int64 TE tensors of length ``m`` (reference ``bilinear_taps``)."""
    a, b, d = bilinear_coords(n, m, mode)

    def num(i):
        return _c(a) * i.astype("int64") + _c(b)

    lo = te.compute((m,), lambda i: tir.floordiv(num(i), _c(d)), name=name + "_lo")
    w = te.compute((m,), lambda i: tir.floordiv((num(i) - lo[i] * _c(d)) * _c(1 << (k + 1)) + _c(d), _c(2 * d)), name=name + "_w")

    def clamp(v):
        return tir.max(tir.min(v, _c(n - 1)), _c(0)).astype("int32")

    lo_c = te.compute((m,), lambda i: clamp(lo[i]), name=name + "_lo_c")
    hi_c = te.compute((m,), lambda i: clamp(lo[i] + _c(1)), name=name + "_hi_c")
    return lo_c, hi_c, w


def bilinear_resize(x: te.Tensor, size, mode: str, frac_bits: int = RESIZE_FRAC_BITS, name: str = "bilinear_resize") -> te.Tensor:
    """NCHW integer bilinear resize to ``size = (H, W)``, same dtype as ``x`` (reference
    ``bilinear_resize_int``: a convex combination, so the result needs no saturation)."""
    if not 1 <= frac_bits <= 15:
        raise ValueError(f"frac_bits must be in [1, 15], got {frac_bits}")
    N, C, h, w_in = (int(v) for v in x.shape)
    H, W = (int(v) for v in size)
    y0, y1, wy = _axis_taps(h, H, mode, frac_bits, name + "_y")
    x0, x1, wx = _axis_taps(w_in, W, mode, frac_bits, name + "_x")
    one, half = _c(1 << frac_bits), _c(1 << (2 * frac_bits - 1))

    def value(n, c, i, j):
        def row(r):
            return (one - wx[j]) * x[n, c, r, x0[j]].astype("int64") + wx[j] * x[n, c, r, x1[j]].astype("int64")

        acc = (one - wy[i]) * row(y0[i]) + wy[i] * row(y1[i])
        return tir.shift_right(acc + half, _c(2 * frac_bits)).astype(x.dtype)

    return te.compute((N, C, H, W), value, name=name)
