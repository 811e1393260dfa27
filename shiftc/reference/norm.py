"""NumPy reference for normalisation layers (float path).

``l1_norm_float`` uses the same formula and signature as ``shiftc.reference.nonlinear.l1_norm_float``
(branch ``intops``); it lives here so the normalisation passes can be tested before that branch
lands. ``ln_to_l1_params`` is the LayerNorm -> L1 conversion ``shiftc.passes.ln_to_l1`` applies.
"""

from __future__ import annotations

import math

import numpy as np

SQRT_HALF_PI = math.sqrt(math.pi / 2.0)  # sigma2 / sigma1 for Gaussian data


def l1_norm_float(x, gamma=None, beta=None, eps: float = 1e-5, axis: int = -1, correction: bool = True):
    """``gamma (x - mu) / (c sigma_1 + eps) + beta`` with ``sigma_1 = mean|x - mu|``, float64.

    ``c = sqrt(pi/2)`` when ``correction`` (an LN-trained gamma keeps its meaning), else 1.
    """
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=axis, keepdims=True)
    s1 = np.abs(x - mu).mean(axis=axis, keepdims=True)
    c = SQRT_HALF_PI if correction else 1.0
    y = (x - mu) / (c * s1 + eps)
    if gamma is not None:
        y = y * np.asarray(gamma, dtype=np.float64)
    if beta is not None:
        y = y + np.asarray(beta, dtype=np.float64)
    return y


def ln_to_l1_params(gamma, eps: float):
    """Fold the sqrt(pi/2) correction into gamma and eps: the raw L1 norm with these equals
    ``l1_norm_float(..., correction=True)`` with the originals."""
    return np.asarray(gamma, dtype=np.float64) / SQRT_HALF_PI, eps / SQRT_HALF_PI
