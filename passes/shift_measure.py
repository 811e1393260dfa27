"""Measurements behind the shift pass: real layer inputs, per-layer error, whole-model error.

* ``capture_inputs`` runs ``main`` (built for the host, FP32) on calibration samples with the input
  of every candidate layer added as an output, so layer errors are measured on the activations
  that really reach each layer.
* ``layer_output_error`` is ``||op(x, W_enc) - op(x, W)|| / ||op(x, W)||`` over those samples,
  computed in NumPy (im2col + matmul), float64.
* ``ModelWithWeightParams`` builds ``main`` once with the candidate weights turned into function
  parameters, so any mix of encoded weights can be evaluated without recompiling.  It runs FP32
  conv/matmul on the *decoded* weights: the shift kernels compute the same products by exponent
  arithmetic, identical except for flush-to-zero of subnormal terms and float32 summation order.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import tvm
from tvm import relax

from shiftc.core.host import flatten_outputs, host_vm
from shiftc.core.relax_rewrite import rewrite_bindings
from shiftc.reference.shift import im2col_nchw

from .shift import Layer, candidate_kind


def capture_inputs(mod: tvm.IRModule, input_names: Sequence[str], samples: Sequence[dict]) -> list[list[np.ndarray]]:
    """Per sample, the first argument of every candidate layer of ``main`` (binding order)."""
    return list(each_sample_inputs(mod, input_names, samples))


def each_sample_inputs(mod: tvm.IRModule, input_names: Sequence[str], samples: Sequence[dict]) -> Iterator[list[np.ndarray]]:
    """``capture_inputs`` one sample at a time (the model is built once)."""
    func = relax.transform.ToNonDataflow()(mod)["main"]
    taps = [b.value.args[0] for blk in func.body.blocks for b in blk.bindings if candidate_kind(b.value)]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(func.body.blocks, relax.Tuple(taps)))
    tapped = tvm.IRModule({"main": relax.Function(func.params, body)})
    for gv, f in mod.functions.items():
        if gv.name_hint != "main":
            tapped[gv] = f
    vm = host_vm(relax.transform.Normalize()(tapped))
    dev = tvm.cpu()
    for s in samples:
        yield flatten_outputs(vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(s[n]), dev) for n in input_names]))


def layer_forward(layer: Layer, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The layer's op (no bias) in NumPy, in the inputs' float type: NCHW conv2d with OIHW ``w``,
    or ``x @ w``."""
    if layer.op == "matmul":
        return np.matmul(x, w)
    a = layer.attrs
    O, Ig, kh, kw = w.shape
    g = a["groups"]
    n = x.shape[0]
    cols, (oh, ow) = im2col_nchw(x, kh, kw, a["strides"], a["padding"], a["dilation"])  # (n, C*kh*kw, L)
    cols = cols.reshape(n, g, Ig * kh * kw, oh * ow)
    wg = w.reshape(g, O // g, Ig * kh * kw)
    if g == 1:
        y = np.matmul(wg[0], cols[:, 0])[:, None]
    elif Ig * kh * kw <= 16:  # depthwise-like: small reduction, many groups
        y = np.einsum("gok,ngkl->ngol", wg, cols)
    else:
        y = np.stack([np.matmul(wg[i], cols[:, i]) for i in range(g)], axis=1)
    return y.reshape(n, O, oh, ow)


def layer_output_error(layer: Layer, inputs: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> list[float]:
    """Relative L2 output error of each decoded weight in ``decoded``, summed over ``inputs``
    (float64: BLAS thread counts change float32 sums in their last bits, and reports must not)."""
    num = np.zeros(len(decoded))
    den = 0.0
    w = layer.weight.astype(np.float64)
    for x in inputs:
        x = x.astype(np.float64)
        den += float(np.sum(layer_forward(layer, x, w) ** 2))
        for i, wd in enumerate(decoded):
            num[i] += float(np.sum(layer_forward(layer, x, wd.astype(np.float64) - w) ** 2))
    return [float(np.sqrt(v / den)) if den > 0 else 0.0 for v in num]


def weights_as_params(mod: tvm.IRModule) -> tvm.IRModule:
    """``main`` with the constant weight of every candidate layer turned into a trailing parameter
    ``shift_w<i>`` (candidates in binding order)."""
    params: list = []

    def rule(_var, value, _bb):
        if candidate_kind(value) is None:
            return None
        w = relax.Var(f"shift_w{len(params)}", value.args[1].ty)
        params.append(w)
        return relax.Call(value.op, [value.args[0], w], value.attrs)

    out, _ = rewrite_bindings(mod, lambda _func: rule, ["main"])
    out["main"] = relax.Function(list(mod["main"].params) + params, out["main"].body)
    return out


class ModelWithWeightParams:
    """``main`` compiled once with every candidate weight as an extra parameter."""

    def __init__(self, mod: tvm.IRModule, input_names: Sequence[str], samples: Sequence[dict]):
        self._vm = host_vm(relax.transform.Normalize()(weights_as_params(mod)))
        dev = self._dev = tvm.cpu()
        self._inputs = [[tvm.runtime.tensor(np.ascontiguousarray(s[n]), dev) for n in input_names] for s in samples]

    def run(self, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
        """First output per sample, with ``weights`` (one per candidate layer, op layout)."""
        w = [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=np.float32), self._dev) for a in weights]
        return [flatten_outputs(self._vm["main"](*x, *w))[0] for x in self._inputs]


def rel_l2(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    r = np.concatenate([np.asarray(a, np.float64).ravel() for a in ref])
    g = np.concatenate([np.asarray(a, np.float64).ravel() for a in got])
    return float(np.linalg.norm(g - r) / (np.linalg.norm(r) + 1e-30))
