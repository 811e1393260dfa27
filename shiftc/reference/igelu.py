"""i-GELU (I-BERT, Kim et al. 2021): GELU with erf replaced by a clipped second-order polynomial,
evaluated on integers (docs/NUMERICS.md §3.11).

Published approximation (I-BERT, eq. 7-8)::

    erf(u) ~= L(u) = sign(u) * (a * (min(|u|, -b) + b)**2 + 1),   a = -0.2888, b = -1.769
    GELU(x) ~= x * (1 + L(x / sqrt 2)) / 2

shiftc writes it as ``x * Phi_q(x)`` with the Gaussian CDF ``Phi = (1 + L) / 2`` in
``SIG_BITS = 15`` fraction bits, the same output form as lambda-ShiftGELU (int32 at scale
``s * 2**-15``), so the rule and the next requantiser do not change. With
``d = max(-b - |x|/sqrt 2, 0)`` the polynomial is ``Phi = 1 - |a|/2 d**2`` for ``x >= 0`` and
``|a|/2 d**2`` for ``x < 0``; on integer codes ``d = D * s / sqrt 2`` with
``D = max(c - |x|, 0)``, ``c = round_half_up(-b sqrt(2) / s)``::

    D   = max(c - |x|, 0)                         # int32, in [0, c]
    t   = rshift_round(D * D * m, e)              # (m, e) = dyadic(2**15 |a| s**2 / 4); int64 product
    sig = x >= 0 ? 2**15 - t : t                  # Phi in [0, 2**15]
    out = x * sig                                 # int32 at scale s * 2**-15

Range: ``c <= 46340`` makes ``D * D < 2**31``; ``D * D * m < 2**62`` (``m < 2**31``);
``t <= round(2**15 |a| (c s)**2 / 4) < 2**15`` since ``c s <= 2.502 + s/2`` and ``s <= 1``
(``|a| 3**2 / 4 = 0.65``), so ``sig`` is in ``[0, 2**15]``;
``|x| < 2**16`` keeps ``out`` in int32. No shift depends on the data (``e`` is a host constant
in ``[1, 62]``). Error against erf-GELU: the polynomial's own ``IGELU_FORM_ERROR`` (max over all
real x, at x ~= 2.35) plus ``|x| * 2**-16`` from rounding ``sig`` plus the constants' rounding
(``c`` to the nearest code, at most ``0.45 s``); ``tests/test_reference_igelu.py`` asserts
``IGELU_BOUND = 0.02`` for input scales ``s <= 2**-5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .nonlinear import SIG_BITS
from .quant import round_half_up
from .rounding import INT32_MAX, dyadic, rshift_round

__all__ = ["IGELU_A", "IGELU_B", "IGELU_FORM_ERROR", "IGELU_BOUND", "IGeluParams", "i_gelu_params", "i_gelu_int",
           "i_gelu", "i_gelu_float"]

IGELU_A, IGELU_B = -0.2888, -1.769  # I-BERT's erf polynomial
IGELU_FORM_ERROR = 0.0182  # max_x |x Phi_L(x) - GELU_erf(x)| = 0.01815 at x ~= 2.35 (I-BERT Table 1: L_inf 1.8e-2)
IGELU_BOUND = 0.02  # tested: |i_gelu(x) - GELU_erf(x s)| for |x s| <= 8 at input scales <= 2**-5 (measured 0.0194)
C_MAX = 46340  # largest clip code with c * c < 2**31


def i_gelu_float(x):
    """The published i-GELU in float64: ``x (1 + L(x / sqrt 2)) / 2``."""
    x = np.asarray(x, np.float64)
    u = np.abs(x) / math.sqrt(2.0)
    erf = np.sign(x) * (IGELU_A * (np.minimum(u, -IGELU_B) + IGELU_B) ** 2 + 1.0)
    return x * 0.5 * (1.0 + erf)


@dataclass(frozen=True)
class IGeluParams:
    """Host integers of :func:`i_gelu_int` for one input scale: clip code ``c``, the dyadic
    ``(m, e)`` of ``2**15 |a| s**2 / 4`` and the largest accepted ``|x|``."""

    c: int
    m: int
    e: int
    x_max: int = (1 << 16) - 1


def i_gelu_params(s: float) -> IGeluParams:
    """:class:`IGeluParams` for input scale ``s``; ``ValueError`` when the scale is too fine
    (``c > 46340``: the square leaves int32; a coarser scale, e.g. a narrower width, fits) or
    coarser than 1 (``t`` could reach ``2**15``)."""
    if not (np.isfinite(s) and 0 < s <= 1.0):
        raise ValueError(f"i-GELU: input scale must be in (0, 1], got {s}")
    c = int(round_half_up(np.float64(-IGELU_B * math.sqrt(2.0) / s)))
    if c > C_MAX:
        raise ValueError(f"i-GELU: scale {s} too fine (clip code {c} > {C_MAX}: D*D leaves int32)")
    m, e = dyadic(2.0**SIG_BITS * -IGELU_A * s * s / 4.0)
    return IGeluParams(c=max(c, 1), m=int(m), e=int(e))


def i_gelu_int(x, p: IGeluParams):
    """i-GELU of integer codes ``x`` with host parameters ``p``: int32 (as int64) at scale ``s * 2**-15``."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"x must be integer codes, got {x.dtype}")
    x = x.astype(np.int64)
    if x.size and np.abs(x).max() > p.x_max:
        raise OverflowError(f"i_gelu needs |x| <= {p.x_max}")
    d = np.maximum(p.c - np.abs(x), 0)
    t = rshift_round(d * d * p.m, p.e)
    sig = np.where(x >= 0, (1 << SIG_BITS) - t, t)
    out = x * sig
    assert out.size == 0 or np.abs(out).max() <= INT32_MAX
    return out


def i_gelu(x_int, s: float):
    """``(out, out_scale)``: i-GELU of ``x_int * s`` as int32 codes at ``s * 2**-15``."""
    return i_gelu_int(x_int, i_gelu_params(s)), float(s) * 2.0**-SIG_BITS
