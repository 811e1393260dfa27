"""Quantisation arithmetic of the integeriser: scales, weights, requantiser parameters, and the
two float boundary kernels (input quantiser, output dequantiser).

Conventions (NUMERICS.md section 2): symmetric, zero point 0. Activations per tensor
(``T / (2**(bits-1) - 1)`` from a calibration threshold ``T``), weights int8 per output channel,
bias int32 at ``s_w * s_x``. Every ``int -> int`` rescale is ``shiftc.reference.requantize`` with
``(m, e) = dyadic(s_in / s_out)``.

``pow2`` mode (for accelerators without a multiplier, e.g. VTA): every activation and weight scale
is rounded **up** to a power of two, so every requantiser ratio between them is ``2**k`` exactly and
its ``(m, e)`` is ``(1, -k)`` (a rounding right shift) or ``(2**k, 0)`` (a left shift). Ratios that
are not powers of two by construction (I-LayerNorm's ``gamma * sqrt(C)``) are rounded to the
nearest power of two; the integeriser reports each such rounding.

Rounding of floats to codes (quantiser, weights, bias) is round half up: ``floor(t) + (frac >= 1/2)``
with ``t = x * (1/s)`` in float32, written so that no fused multiply-add can change it.
"""

from __future__ import annotations

import math

import numpy as np

from shiftc.calibrate import qmax
from shiftc.reference import dyadic

QUANTIZE_KERNEL = "quantize"
DEQUANTIZE_KERNEL = "dequantize"


def pow2_up(s):
    """Smallest power of two >= s (elementwise; 0 stays 0)."""
    s = np.asarray(s, dtype=np.float64)
    out = np.where(s > 0, np.exp2(np.ceil(np.log2(np.where(s > 0, s, 1.0)))), 0.0)
    return float(out) if out.ndim == 0 else out


def requant_params(ratio, pow2: bool = False):
    """``(m, e)`` with ``ratio ~= m * 2**-e`` (arrays for a per-axis ratio).

    Ratios below ``2**-32`` become 0 (``|z * r| < 1/2`` for every int32 ``z``: the output is 0 either way).
    ``pow2``: ``ratio`` is rounded to the nearest power of two ``2**k``; ``m, e = 1, -k`` for
    ``k <= 0`` and ``2**k, 0`` for ``k > 0``."""
    r = np.asarray(ratio, dtype=np.float64)
    # below 2**-32 a ratio maps every int32 input to 0 anyway: encode it as exactly 0
    r = np.where(r < 2.0**-32, 0.0, r)
    if not pow2:
        return dyadic(r if r.ndim else float(r))
    k = np.where(r > 0, np.round(np.log2(np.where(r > 0, r, 1.0))), 0).astype(np.int64)
    if np.any(k > 30) or np.any(k < -62):
        raise ValueError(f"pow2 requantiser ratio out of range: {r}")
    m = np.where(r > 0, np.where(k > 0, np.left_shift(1, np.maximum(k, 0)), 1), 0).astype(np.int64)
    e = np.where(k > 0, 0, -k).astype(np.int64)
    if r.ndim == 0:
        return int(m), int(e)
    return m, e


def round_half_up(t: np.ndarray) -> np.ndarray:
    f = np.floor(t)
    return f + ((t - f) >= 0.5)


def quantize_np(x: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """The input quantiser in NumPy (float32 arithmetic as the kernel): ``clamp(rhu(x / s))``."""
    inv = np.float32(1.0 / scale)
    t = np.asarray(x, dtype=np.float32) * inv
    q = np.clip(round_half_up(t), -qmax(bits) - 1, qmax(bits))
    return q.astype(_np_dtype(bits))


def quantize_te(x, scale: float, bits: int):
    """TE twin of :func:`quantize_np` (float32 in, int8/16 out)."""
    from tvm import te
    from tvm import tirx as tir

    inv = tir.const(float(np.float32(1.0 / scale)), "float32")
    lo, hi = tir.const(-qmax(bits) - 1, "float32"), tir.const(qmax(bits), "float32")
    dtype = str(np.dtype(_np_dtype(bits)))

    def f(*i):
        t = x[i] * inv
        fl = tir.floor(t)
        r = fl + tir.Select(t - fl >= tir.const(0.5, "float32"), tir.const(1.0, "float32"), tir.const(0.0, "float32"))
        return tir.max(tir.min(r, hi), lo).astype(dtype)

    return te.compute(x.shape, f, name="quantize")


def dequantize_te(q, scale):
    """``float32(q) * s`` (``s`` scalar, or a float32 TE tensor broadcast against ``q``)."""
    from tvm import te
    from tvm import tirx as tir

    if isinstance(scale, te.Tensor):
        nd, sd = len(q.shape), len(scale.shape)

        def f(*i):
            j = tuple(0 if int(scale.shape[k]) == 1 else i[nd - sd + k] for k in range(sd))
            return q[i].astype("float32") * scale[j]

        return te.compute(q.shape, f, name="dequantize")
    s = tir.const(float(np.float32(scale)), "float32")
    return te.compute(q.shape, lambda *i: q[i].astype("float32") * s, name="dequantize")


def _np_dtype(bits: int):
    return np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32


def int_dtype(bits: int) -> str:
    return str(np.dtype(_np_dtype(bits)))


def weight_codes(w: np.ndarray, axis: int, pow2: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """int8 per-channel codes of ``w`` along ``axis`` and their scales (float64).

    A channel that is all zero gets scale ``1/127`` (its codes are 0 either way)."""
    from shiftc.calibrate import weight_scales

    s = weight_scales(w, axis)
    s = np.where(s > 0, s, 1.0 / 127)
    if pow2:
        s = pow2_up(s)
    shape = [1] * w.ndim
    shape[axis % w.ndim] = -1
    q = np.clip(round_half_up(np.asarray(w, np.float64) / s.reshape(shape)), -127, 127).astype(np.int8)
    return q, s


def bias_codes(b: np.ndarray, scale) -> np.ndarray:
    """int32 codes of a bias at ``scale`` (broadcast); rejects values that leave int32."""
    q = round_half_up(np.asarray(b, np.float64) / np.asarray(scale, np.float64))
    if q.size and np.abs(q).max() >= 2**31 - 1:
        raise ValueError("bias does not fit int32 at scale s_w * s_x")
    return q.astype(np.int32)


def bits_for(ok, widest: int = 16, narrowest: int = 8) -> int | None:
    """Widest ``bits`` in ``[narrowest, widest]`` for which ``ok(bits)`` holds (None if none)."""
    for b in range(widest, narrowest - 1, -1):
        if ok(b):
            return b
    return None


def log2_exact(r: float) -> bool:
    return r > 0 and math.frexp(r)[0] == 0.5
