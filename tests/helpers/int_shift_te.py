"""Plain int8 shift matmul / conv2d as TE kernels (one int8 code per weight, no packing).

A second, independent TE transcription of :func:`shiftc.reference.shift.shift_matmul_int` and
``shift_conv2d_int``; the compiler's own shift kernels are ``shiftc.kernels.shift``.  The tests
use these to check the reference bit for bit and that the CUDA code of an integer shift kernel
shifts instead of multiplying.
"""

from __future__ import annotations

from tvm import te
from tvm import tirx as tir

from shiftc.reference.shift import headroom_ok, max_P_for


def _c(v, dtype="int32"):
    return tir.const(int(v), dtype)


def _i32(x):
    return x if x.dtype == "int32" else x.astype("int32")


def shift_matmul_int(x: te.Tensor, codes: te.Tensor, P: int, name: str = "shift_matmul") -> te.Tensor:
    """``y[m, n] = sum_k sign(c[n,k]) * (x[m, k] << (P - p[n,k]))`` in int32 (code 0 adds 0).

    ``x``: int8 ``(M, K)``; ``codes``: int8 ``(N, K)``.  Raises at definition time when the int32
    headroom ``K * 128 * 2**P <= 2**31 - 1`` fails.  The shift amount ``P - (|c| - 1)`` is clamped
    to ``[0, P]`` (host-validated codes never need the clamp).
    """
    M, K = (int(d) for d in x.shape)
    Nn, K2 = (int(d) for d in codes.shape)
    if K != K2:
        raise ValueError(f"K mismatch: x {x.shape} vs codes {codes.shape}")
    if not 0 <= P <= 30:
        raise ValueError(f"P must be in [0, 30], got {P}")
    if not headroom_ok(K, P):
        raise OverflowError(f"int32 headroom: K={K}, P={P}; split K or lower P to <= {max_P_for(K)}")
    k = te.reduce_axis((0, K), name=name + "_k")
    return te.compute((M, Nn), lambda m, n: te.sum(_shift_term(x[m, k], codes[n, k], P), axis=k), name=name)


def _shift_term(xv, c, P):
    """``sign(c) * (xv << (P - (|c| - 1)))``, 0 for ``c == 0``; amount clamped to ``[0, P]``."""
    c = _i32(c)
    amt = tir.max(tir.min(_c(P + 1) - tir.abs(c), _c(P)), _c(0))
    sh = tir.shift_left(_i32(xv), amt)
    return tir.Select(c == _c(0), _c(0), tir.Select(c < _c(0), _c(0) - sh, sh))


def shift_conv2d_int(
    x: te.Tensor, codes: te.Tensor, P: int, stride=1, padding=0, dilation=1, groups: int = 1, name="shift_conv2d"
) -> te.Tensor:
    """Integer shift conv2d, NCHW int8 ``x`` x OIHW int8 ``codes`` -> int32 NCHW (reference
    ``shift_conv2d_int``): zero padding, stride, dilation, groups; headroom checked with
    ``K = (C/groups) * kh * kw``."""

    def pair(v):
        return (int(v), int(v)) if isinstance(v, int) else tuple(int(t) for t in v)

    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    pads = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    if len(pads) == 2:
        pads = (pads[0], pads[1], pads[0], pads[1])
    pt, pl, pb, pr = (int(v) for v in pads)
    N, C, H, W = (int(d) for d in x.shape)
    O, Ig, kh, kw = (int(d) for d in codes.shape)
    if C != Ig * groups or O % groups:
        raise ValueError(f"channels do not match groups: x C={C}, codes {tuple(codes.shape)}, groups={groups}")
    if not 0 <= P <= 30:
        raise ValueError(f"P must be in [0, 30], got {P}")
    Kc = Ig * kh * kw
    if not headroom_ok(Kc, P):
        raise OverflowError(f"int32 headroom: K={Kc}, P={P}; split K or lower P to <= {max_P_for(Kc)}")
    og = O // groups
    oh = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError("convolution output would be empty")
    xp = te.compute(
        (N, C, H + pt + pb, W + pl + pr),
        lambda n, c, i, j: tir.Select(
            tir.all(i >= pt, i < pt + H, j >= pl, j < pl + W),
            _i32(x[n, c, tir.max(tir.min(i - pt, H - 1), 0), tir.max(tir.min(j - pl, W - 1), 0)]),
            _c(0),
        ),
        name=name + "_pad",
    )
    rc = te.reduce_axis((0, Ig), name=name + "_rc")
    ri = te.reduce_axis((0, kh), name=name + "_ri")
    rj = te.reduce_axis((0, kw), name=name + "_rj")

    def out(n, o, i, j):
        g = tir.floordiv(o, og)
        xv = xp[n, g * Ig + rc, i * sh + ri * dh, j * sw + rj * dw]
        return te.sum(_shift_term(xv, codes[o, rc, ri, rj], P), axis=[rc, ri, rj])

    return te.compute((N, O, oh, ow), out, name=name)
