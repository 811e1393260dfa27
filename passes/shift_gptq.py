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

Layers: matmul and conv2d. A conv's ``H`` is over its im2col columns, one per group: a grouped or
depthwise conv with ``g`` groups has ``g`` of them (``(g, C/g*kh*kw, C/g*kh*kw)``; depthwise 3x3:
9 x 9 per channel), and the groups are rounded together. Layers kept as int8 multiplies keep their
nearest int8 codes. The codes stay in the layer's format, so every kernel runs them unchanged and
stays bit-exact with ``shiftc.reference``.
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


def groups(layer: S.Layer) -> int:
    return 1 if layer.op == "matmul" else int(layer.attrs["groups"])


def input_rows(layer: S.Layer, x: np.ndarray) -> np.ndarray:
    """The rows each group multiplies its ``(O/g, K)`` weight with: ``(g, rows, K)`` float64."""
    if layer.op == "matmul":
        return x.reshape(1, -1, x.shape[-1]).astype(np.float64)
    _, _, kh, kw = layer.weight.shape
    a = layer.attrs
    cols, _ = im2col_nchw(x, kh, kw, a["strides"], a["padding"], a["dilation"])  # (n, C*kh*kw, L), rows (c, i, j)
    n, k, L = cols.shape
    g = groups(layer)
    return cols.reshape(n, g, k // g, L).transpose(1, 0, 3, 2).reshape(g, n * L, k // g).astype(np.float64)


def second_moments(layers: Sequence[S.Layer], names: set[str], per_sample: Iterable[Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    """``H = sum x x^T`` per group, ``(g, K, K)``, of every layer in ``names`` over the samples'
    layer inputs (``per_sample``: per sample, the input of every layer; consumed once, e.g. a
    generator)."""
    out: dict[str, np.ndarray] = {}
    for inputs in per_sample:
        for layer, x in zip(layers, inputs):
            if layer.name in names:
                rows = input_rows(layer, np.asarray(x))
                out[layer.name] = out.get(layer.name, 0.0) + np.matmul(rows.transpose(0, 2, 1), rows)
    return out


def _nearest(values: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the closest entry of the sorted ``values`` to each ``u`` (ties to the lower)."""
    hi = np.clip(np.searchsorted(values, u), 1, len(values) - 1)
    lo = hi - 1
    return np.where(np.abs(u - values[lo]) <= np.abs(values[hi] - u), lo, hi)


@dataclass(frozen=True)
class Hessian:
    """A layer's ``H`` ``(g, K, K)``, each group's rounding order (decreasing ``diag(H)``) and
    the upper Cholesky factor of its damped ``H^-1`` in that order (dead inputs get ``H_jj = 1``):
    factored once, used by every format the layer is encoded in."""

    h: np.ndarray
    order: np.ndarray  # (g, K)
    upper: np.ndarray  # (g, K, K)

    @classmethod
    def of(cls, h: np.ndarray) -> "Hessian":
        h = np.asarray(h, dtype=np.float64)
        h = h[None] if h.ndim == 2 else h
        g, K, _ = h.shape
        d = h.copy()
        diag = d[:, np.arange(K), np.arange(K)]  # a copy
        diag[diag <= 0] = 1.0
        order = np.argsort(-diag, axis=1, kind="stable")
        d = np.take_along_axis(np.take_along_axis(d, order[:, :, None], 1), order[:, None, :], 2)
        d[:, np.arange(K), np.arange(K)] = np.take_along_axis(diag, order, 1) + DAMP * diag.mean(axis=1, keepdims=True)
        return cls(h, order, np.linalg.cholesky(np.linalg.inv(d)).transpose(0, 2, 1))


def round_columns(u: np.ndarray, hessian: Hessian, values: np.ndarray) -> np.ndarray:
    """GPTQ of the module docstring on ``u`` ``(g, O/g, K)`` (units; a 2-D ``u`` is one group):
    the chosen table indices, shaped like ``u``."""
    flat = u.ndim == 2
    u = u[None] if flat else u
    order, upper = hessian.order, hessian.upper
    # (g, K, O/g) in rounding order: column j of every group is row j
    rest = np.ascontiguousarray(np.take_along_axis(u.transpose(0, 2, 1), order[:, :, None], 1), dtype=np.float64)
    dead = np.take_along_axis(np.diagonal(hessian.h, axis1=1, axis2=2), order, 1) <= 0
    rest[dead] = 0.0  # inputs that are always zero: any code serves
    K = rest.shape[1]
    choice = np.empty(rest.shape, dtype=np.int64)
    for start in range(0, K, BLOCK):
        stop = min(start + BLOCK, K)
        block = rest[:, start:stop]  # a view: updated in place
        errors = np.empty_like(block)
        for j in range(stop - start):
            col = start + j
            idx = _nearest(values, block[:, j])
            choice[:, col] = idx
            err = (block[:, j] - values[idx]) / upper[:, col, col, None]
            block[:, j:] -= upper[:, col, col:stop, None] * err[:, None, :]
            errors[:, j] = err
        rest[:, stop:] -= np.matmul(upper[:, start:stop, stop:].transpose(0, 2, 1), errors)
    out = np.empty_like(choice)
    np.put_along_axis(out, order[:, :, None], choice, 1)
    out = out.transpose(0, 2, 1)
    return np.ascontiguousarray(out[0] if flat else out)


def refit_alpha(w: np.ndarray, q: np.ndarray, h: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per channel, the least-squares output scale of the chosen unit values ``q`` (``(g, O/g,
    K)`` like ``w``; 2-D: one group), where it lowers the output error ``(w - a q)^T H (w - a q)``
    (``alpha``: ``(O,)``; float32)."""
    w, q, h = (a[None] if a.ndim == 2 else a for a in (w, q, h))
    num = np.sum(np.matmul(w, h) * q, axis=2).reshape(-1)
    den = np.sum(np.matmul(q, h) * q, axis=2).reshape(-1)
    ls = np.where(den > 0, num / np.where(den > 0, den, 1.0), alpha).astype(np.float32).astype(np.float64)

    def err(a):
        d = w - a.reshape(q.shape[:2])[..., None] * q
        return np.sum(np.matmul(d, h) * d, axis=2).reshape(-1)

    return np.where((ls > 0) & (err(ls) < err(alpha.astype(np.float64))), ls, alpha).astype(np.float32)


def encode(layer: S.Layer, cfg, hessian: Hessian) -> tuple[np.ndarray, np.ndarray]:
    """Codes and alpha of ``layer`` in format ``cfg`` (a ``ShiftConfig``), GPTQ-rounded."""
    _, alpha = S.encode(layer, cfg)
    values, table_codes = unit_table(cfg.bits, cfg.terms, cfg.zero_free, cfg.uniform)
    O = layer.oi_weight.shape[0]
    g = groups(layer)
    w = layer.oi_weight.reshape(g, O // g, -1).astype(np.float64)
    a = alpha.astype(np.float64).reshape(g, O // g, 1)
    u = np.where(a > 0, w / np.where(a > 0, a, 1.0), 0.0)
    choice = round_columns(u, hessian, values)
    alpha = refit_alpha(w, values[choice], hessian.h, alpha)
    return codes_of(layer, table_codes, choice.reshape(O, -1)), np.where(alpha > 0, alpha, 0.0).astype(np.float32)


def encoder(hessians: dict[str, np.ndarray]) -> Encoder:
    """``shift.encode`` with GPTQ rounding wherever the layer has an ``H`` and ``cfg`` is a code
    format (int8 multiplies keep nearest rounding)."""
    factored: dict[str, Hessian] = {}

    def run(layer: S.Layer, cfg):
        if isinstance(cfg, S.Int8Config) or layer.name not in hessians:
            return S.encode(layer, cfg)
        if layer.name not in factored:
            factored[layer.name] = Hessian.of(hessians[layer.name])
        return encode(layer, cfg, factored[layer.name])

    return run
