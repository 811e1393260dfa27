"""TE kernels for normalisation layers.

``l1_norm``: LayerNorm with the mean absolute deviation in place of the standard deviation::

    mu = mean(x);  sigma1 = mean|x - mu|;  y = gamma * (x - mu) / (sigma1 + eps) + beta

over the last axis. No squares and no square root: two row sums, an absolute value and one
reciprocal per row, so the same structure maps onto integer arithmetic. Converting a LayerNorm
(``sigma2 ~ sqrt(pi/2) sigma1`` for Gaussian rows) divides ``gamma`` and ``eps`` by sqrt(pi/2)
before calling it; see ``shiftc.passes.ln_to_l1``. NumPy reference: ``shiftc.reference.nonlinear.l1_norm_float``.
"""

from __future__ import annotations

import tvm
from tvm import te


def l1_norm(x: te.Tensor, gamma: te.Tensor, beta: te.Tensor, eps: float) -> te.Tensor:
    """L1 normalisation of ``x`` over its last axis with a per-channel ``gamma``/``beta``."""
    *rows, n = x.shape
    dtype = x.dtype
    count = tvm.tirx.const(int(n), dtype)
    k = te.reduce_axis((0, n), name="k")
    total = te.compute(rows, lambda *i: te.sum(x[(*i, k)], axis=k), name="row_sum")
    mu = te.compute(rows, lambda *i: total[i] / count, name="row_mean")
    k2 = te.reduce_axis((0, n), name="k2")
    dev = te.compute(rows, lambda *i: te.sum(te.abs(x[(*i, k2)] - mu[i]), axis=k2), name="row_abs_dev")
    inv = te.compute(rows, lambda *i: tvm.tirx.const(1.0, dtype) / (dev[i] / count + tvm.tirx.const(eps, dtype)), name="row_inv_sigma1")
    return te.compute(
        x.shape,
        lambda *i: (x[i] - mu[i[:-1]]) * inv[i[:-1]] * gamma[i[-1]] + beta[i[-1]],
        name="l1_norm",
    )
