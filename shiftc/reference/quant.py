"""Float <-> integer codes (docs/NUMERICS.md §2.1): symmetric, zero point 0.

``quantize(x, s, bits) = saturate(round_half_up(x * (1/s)), bits)`` with ``x * (1/s)`` in float32
(as the quantiser kernel computes it), ``round_half_up(t) = floor(t) + (t - floor(t) >= 1/2)``
(written so that no fused multiply-add can change it). Biases are int32 codes at ``s_w * s_x``.

``pow2_up`` rounds a scale **up** to a power of two (``--requant pow2``): every ratio between two
such scales is then ``2**k`` exactly.
"""

from __future__ import annotations

import math

import numpy as np

from .rounding import out_dtype

__all__ = ["qmax", "round_half_up", "quantize", "bias_codes", "pow2_up", "log2_exact"]


def qmax(bits: int) -> int:
    """Largest symmetric code: 127 for int8."""
    return (1 << (bits - 1)) - 1


def round_half_up(t: np.ndarray) -> np.ndarray:
    f = np.floor(t)
    return f + ((t - f) >= 0.5)


def quantize(x: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """The input quantiser (float32 arithmetic, as the kernel): ``clamp(rhu(x / s))``."""
    inv = np.float32(1.0 / scale)
    t = np.asarray(x, dtype=np.float32) * inv
    q = np.clip(round_half_up(t), -qmax(bits) - 1, qmax(bits))
    return q.astype(out_dtype(bits))


def bias_codes(b: np.ndarray, scale) -> np.ndarray:
    """int32 codes of a bias at ``scale`` (broadcast); rejects values that leave int32."""
    q = round_half_up(np.asarray(b, np.float64) / np.asarray(scale, np.float64))
    if q.size and np.abs(q).max() >= 2**31 - 1:
        raise ValueError("bias does not fit int32 at scale s_w * s_x")
    return q.astype(np.int32)


def pow2_up(s):
    """Smallest power of two >= s (elementwise; 0 stays 0)."""
    s = np.asarray(s, dtype=np.float64)
    out = np.where(s > 0, np.exp2(np.ceil(np.log2(np.where(s > 0, s, 1.0)))), 0.0)
    return float(out) if out.ndim == 0 else out


def log2_exact(r: float) -> bool:
    """Whether ``r`` is a power of two."""
    return r > 0 and math.frexp(r)[0] == 0.5
