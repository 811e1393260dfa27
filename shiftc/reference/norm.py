"""LayerNorm -> L1-norm conversion used by ``shiftc.passes.ln_to_l1`` (float path).

The L1 norm itself is ``shiftc.reference.nonlinear.l1_norm_float``:
``gamma (x - mu) / (c sigma_1 + eps) + beta`` with ``sigma_1 = mean|x - mu|`` and ``c = sqrt(pi/2)``.
The TVM kernel (``shiftc.kernels.norm.l1_norm``) computes the raw form ``c = 1``;
``ln_to_l1_params`` divides gamma and eps by ``c`` so that both give the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from .nonlinear import l1_norm_float  # noqa: F401  (re-exported: the formula the pass follows)

SQRT_HALF_PI = math.sqrt(math.pi / 2.0)  # sigma2 / sigma1 for Gaussian data


def ln_to_l1_params(gamma, eps: float):
    """(gamma / sqrt(pi/2), eps / sqrt(pi/2)): the raw L1 norm with these equals
    ``l1_norm_float(..., correction=True)`` with the originals."""
    return np.asarray(gamma, dtype=np.float64) / SQRT_HALF_PI, eps / SQRT_HALF_PI
