"""The integeriser's choice of integer parameters: requantiser ``(m, e)`` for a scale ratio (dyadic,
or shift-only with ``--requant pow2``), int8 per-channel weight codes, and the width of an input.

``pow2`` mode (for accelerators without a multiplier, e.g. VTA): every activation and weight scale
is rounded **up** to a power of two, so every requantiser ratio between them is ``2**k`` exactly.
Ratios that are not powers of two by construction (I-LayerNorm's ``gamma * sqrt(C)``) are rounded
to the nearest power of two; the integeriser reports each such rounding.
"""

from __future__ import annotations

import numpy as np

from shiftc.calibrate import weight_scales
from shiftc.reference.quant import pow2_up, round_half_up
from shiftc.reference.requant import pow2_dyadic
from shiftc.reference.rounding import dyadic


SATURATING_RATIO = 2.0**29  # |z| >= 1 times this saturates every output of <= 30 bits


def requant_params(ratio, pow2: bool = False, out_bits: int | None = None):
    """``(m, e)`` with ``ratio ~= m * 2**-e`` (arrays for a per-axis ratio).

    Ratios below ``2**-32`` become 0 (``|z * r| < 1/2`` for every int32 ``z``: the output is 0
    either way). With ``out_bits <= 30``, ratios above ``2**29`` become ``2**29``: any ``|z| >= 1``
    saturates either way and 0 stays 0 (a near-dead input channel; docs/NUMERICS.md §2.9).
    ``pow2``: shift-only parameters (``shiftc.reference.pow2_dyadic``)."""
    r = np.asarray(ratio, dtype=np.float64)
    r = np.where(r < 2.0**-32, 0.0, r)
    if out_bits is not None and out_bits <= 30:
        r = np.minimum(r, SATURATING_RATIO)
    if not pow2:
        return dyadic(r if r.ndim else float(r))
    return pow2_dyadic(r)


def weight_codes(w: np.ndarray, axis: int, pow2: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """int8 per-channel codes of ``w`` along ``axis`` and their scales (float64).

    A channel that is all zero gets scale ``1/127`` (its codes are 0 either way)."""
    s = weight_scales(w, axis)
    s = np.where(s > 0, s, 1.0 / 127)
    if pow2:
        s = pow2_up(s)
    shape = [1] * w.ndim
    shape[axis % w.ndim] = -1
    q = np.clip(round_half_up(np.asarray(w, np.float64) / s.reshape(shape)), -127, 127).astype(np.int8)
    return q, s


def bits_for(ok, widest: int = 16, narrowest: int = 8) -> int | None:
    """Widest ``bits`` in ``[narrowest, widest]`` for which ``ok(bits)`` holds (None if none)."""
    for b in range(widest, narrowest - 1, -1):
        if ok(b):
            return b
    return None
