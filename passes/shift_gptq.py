"""Hessian-guided rounding of shift codes (``--shift-rounding gptq``): GPTQ on every code grid.

Nearest rounding minimises each weight's own error; what the model sees is the layer's *output*
error on the inputs that reach it. GPTQ (Frantar et al. 2023, after Optimal Brain Quantization)
rounds a layer's input columns one after the other and moves each column's rounding error onto
the columns not rounded yet, through the inverse of the layer's input second moment
``H = sum_x x x^T`` (float64, over every row of every fit sample's layer input):

* ``alpha_c`` starts as the format's own per-channel choice (``shift.encode`` on the FP32 weight);
* the weight in units of ``alpha_c``, ``u = w / alpha_c``, is rounded column by column in
  decreasing ``diag(H)`` ("act-order"), in blocks of ``BLOCK`` columns, with ``U`` the upper
  Cholesky factor of ``(H + DAMP * mean(diag H) * I)^-1``: ``q_j = nearest(u_j)``,
  ``e = (u_j - q_j) / U_jj`` and ``u_k -= e * U_jk`` for every later column ``k``;
* ``nearest`` is the closest value of the layer's format (``shift_reconstruct.unit_table``: every
  sum of its power-of-two terms, or every level of a uniform grid), so single-term, multi-term and
  uniform codes are all rounded this way, and the codes written are that value's terms;
* last, ``alpha_c`` is refit to the output: ``alpha = (w^T H q) / (q^T H q)`` per channel (the
  least-squares scale for the chosen codes), kept only where it lowers ``(w - aq)^T H (w - aq)``.

Layers: matmul, and conv2d with ``groups == 1`` (``H`` over im2col columns, ``C*kh*kw`` square).
Grouped and depthwise convs, and layers kept as int8 multiplies, keep their nearest codes; the
report's note counts them. The codes stay in the layer's format, so every kernel runs them
unchanged and stays bit-exact with ``shiftc.reference``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from shiftc.reference.shift import im2col_nchw

from . import shift as S
from .shift_reconstruct import codes_of, unit_table

BLOCK = 128  # columns rounded before the lazy update of the rest
DAMP = 0.01  # diagonal damping, relative to mean(diag H)

Encoder = Callable[[S.Layer, object], tuple[np.ndarray, np.ndarray]]


def supported(layer: S.Layer) -> bool:
    """Layers with one ``H`` for all output channels: matmul and ungrouped conv2d."""
    return layer.op == "matmul" or layer.attrs["groups"] == 1


def input_rows(layer: S.Layer, x: np.ndarray) -> np.ndarray:
    """The rows the layer multiplies its ``(O, K)`` weight with: ``(rows, K)`` float64."""
    if layer.op == "matmul":
        return x.reshape(-1, x.shape[-1]).astype(np.float64)
    _, _, kh, kw = layer.weight.shape
    a = layer.attrs
    cols, _ = im2col_nchw(x, kh, kw, a["strides"], a["padding"], a["dilation"])  # (n, K, L)
    return np.moveaxis(cols, 1, 2).reshape(-1, cols.shape[1]).astype(np.float64)


def second_moments(layers: Sequence[S.Layer], names: set[str], per_sample: Iterable[Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    """``H = sum x x^T`` of every supported layer in ``names`` over the samples' layer inputs
    (``per_sample``: per sample, the input of every layer; consumed once, e.g. a generator)."""
    out: dict[str, np.ndarray] = {}
    for inputs in per_sample:
        for layer, x in zip(layers, inputs):
            if layer.name in names and supported(layer):
                rows = input_rows(layer, np.asarray(x))
                out[layer.name] = out.get(layer.name, 0.0) + rows.T @ rows
    return out


def _nearest(values: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the closest entry of the sorted ``values`` to each ``u`` (ties to the lower)."""
    hi = np.clip(np.searchsorted(values, u), 1, len(values) - 1)
    lo = hi - 1
    return np.where(np.abs(u - values[lo]) <= np.abs(values[hi] - u), lo, hi)


def round_columns(u: np.ndarray, hessian: "Hessian", values: np.ndarray) -> np.ndarray:
    """GPTQ of the module docstring on ``u`` ``(O, K)`` (units): the chosen table indices ``(O, K)``."""
    order, upper = hessian.order, hessian.upper
    rest = np.ascontiguousarray(u.T[order], dtype=np.float64)  # (K, O): column j is row j, rounding order
    rest[np.diag(hessian.h)[order] <= 0] = 0.0  # inputs that are always zero: any code serves
    K = rest.shape[0]
    choice = np.empty(rest.shape, dtype=np.int64)
    for start in range(0, K, BLOCK):
        stop = min(start + BLOCK, K)
        block = rest[start:stop]  # a view: updated in place
        errors = np.empty_like(block)
        for j in range(stop - start):
            col = start + j
            idx = _nearest(values, block[j])
            choice[col] = idx
            err = (block[j] - values[idx]) / upper[col, col]
            block[j:] -= np.outer(upper[col, col:stop], err)
            errors[j] = err
        rest[stop:] -= upper[start:stop, stop:].T @ errors
    out = np.empty_like(choice)
    out[order] = choice
    return np.ascontiguousarray(out.T)


@dataclass(frozen=True)
class Hessian:
    """A layer's ``H``, its rounding order (decreasing ``diag(H)``) and the upper Cholesky factor
    of the damped ``H^-1`` in that order (dead inputs get ``H_jj = 1``): factored once, used by
    every format the layer is encoded in."""

    h: np.ndarray
    order: np.ndarray
    upper: np.ndarray

    @classmethod
    def of(cls, h: np.ndarray) -> "Hessian":
        h = np.asarray(h, dtype=np.float64)
        d = h.copy()
        dead = np.diag(d) <= 0
        d[dead, dead] = 1.0
        order = np.argsort(-np.diag(d), kind="stable")
        d = d[np.ix_(order, order)]
        d[np.diag_indices(len(d))] += DAMP * float(np.mean(np.diag(d)))
        return cls(h, order, np.linalg.cholesky(np.linalg.inv(d)).T)


def refit_alpha(w: np.ndarray, q: np.ndarray, h: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per channel, the least-squares output scale of the chosen unit values ``q`` (``(O, K)``),
    where it lowers the output error ``(w - a q)^T H (w - a q)`` (float32)."""
    hq = q @ h
    num, den = np.sum(w @ h * q, axis=1), np.sum(hq * q, axis=1)
    ls = np.where(den > 0, num / np.where(den > 0, den, 1.0), alpha).astype(np.float32).astype(np.float64)

    def err(a):
        d = w - a[:, None] * q
        return np.sum(d @ h * d, axis=1)

    return np.where((ls > 0) & (err(ls) < err(alpha.astype(np.float64))), ls, alpha).astype(np.float32)


def encode(layer: S.Layer, cfg, hessian: Hessian) -> tuple[np.ndarray, np.ndarray]:
    """Codes and alpha of ``layer`` in format ``cfg`` (a ``ShiftConfig``), GPTQ-rounded."""
    _, alpha = S.encode(layer, cfg)
    values, table_codes = unit_table(cfg.bits, cfg.terms, cfg.zero_free, cfg.uniform)
    w = layer.oi_weight.reshape(layer.oi_weight.shape[0], -1).astype(np.float64)
    a = alpha.astype(np.float64)[:, None]
    u = np.where(a > 0, w / np.where(a > 0, a, 1.0), 0.0)
    choice = round_columns(u, hessian, values)
    alpha = refit_alpha(w, values[choice], hessian.h, alpha)
    return codes_of(layer, table_codes, choice), np.where(alpha > 0, alpha, 0.0).astype(np.float32)


def encoder(hessians: dict[str, np.ndarray]) -> Encoder:
    """``shift.encode`` with GPTQ rounding wherever the layer has an ``H`` and ``cfg`` is a code
    format (int8 multiplies and unsupported layers keep nearest rounding)."""

    factored: dict[str, Hessian] = {}

    def run(layer: S.Layer, cfg):
        if isinstance(cfg, S.Int8Config) or layer.name not in hessians:
            return S.encode(layer, cfg)
        if layer.name not in factored:
            factored[layer.name] = Hessian.of(hessians[layer.name])
        return encode(layer, cfg, factored[layer.name])

    return run
