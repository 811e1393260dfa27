"""Bias correction of shifted layers: remove the mean output error the shift codes introduce.

A shifted layer computes ``W_q x`` instead of ``W x``.  Its error has a non-zero mean per output
channel (``(W_q - W) E[x]``), and the next layers see it as a shifted activation distribution.
The empirical correction (Finkelstein et al. 2019; Nagel et al. 2019 in its analytical form)
measures, per output channel ``c`` of every shifted layer, over the calibration samples::

    delta_c = E[ op(x_q, W_q)_c ] - E[ op(x_f, W)_c ]

where ``x_f`` is the layer's input in the FP32 model and ``x_q`` its input in the shifted model,
itself corrected upstream, and adds ``-delta_c`` to the layer's bias (a layer without one gets
one).  ``x_q`` depends on the corrections upstream, so the layers are corrected one after the
other in binding order, one whole-model run (on every sample) each: the model is compiled once
with weights and corrections as parameters and returns every layer's per-channel output means.
The report gives the mean over layers of ``mean_c |delta_c| / RMS_c(E[op(x_f, W)_c])`` before
and after.  (Updating every layer from the same run instead diverges on deep models: each layer
also corrects what its upstream layers are correcting at the same time.)

The corrected bias is the kernel's folded bias (``shift_epilogue``): on the integer path it goes
through the same requantiser as any bias (``round(b / s_c)`` into the int32 accumulator), so the
integer kernels stay bit-exact with ``shiftc.reference`` (the bias is just another constant).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tvm
from tvm import relax

from shiftc.core.host import flatten_outputs, host_vm
from shiftc.core.relax_rewrite import rewrite_bindings

from .shift import Layer, candidate_kind


def _channel_axes(kind: str, ndim: int) -> list[int]:
    keep = 1 if kind == "conv2d" else ndim - 1
    return [a for a in range(ndim) if a != keep]


def _correction_shape(layer: Layer) -> tuple[int, ...]:
    if layer.op == "conv2d":
        return (1, layer.out_shape[1], 1, 1)
    return (layer.out_shape[-1],)


def tapped_model(mod: tvm.IRModule, layers: Sequence[Layer]) -> tvm.IRModule:
    """``main`` with, for candidate ``i``, its weight a parameter ``shift_w<i>`` and its output
    ``op(x, shift_w<i>) + shift_c<i>`` (a per-channel correction parameter); it returns, per
    layer, the per-channel mean of that output (candidates in binding order), after the model's
    own output(s): ``(outputs, (means...))``."""
    weights: list = []
    corrections: list = []
    taps: list = []
    nondf = relax.transform.ToNonDataflow()(mod)

    def rule(var, value, bb):
        if candidate_kind(value) is None:
            return None
        layer = layers[len(weights)]
        w = relax.Var(f"shift_w{len(weights)}", value.args[1].ty)
        c = relax.Var(f"shift_c{len(weights)}", relax.TensorType(_correction_shape(layer), "float32"))
        weights.append(w)
        corrections.append(c)
        taps.append((var, layer))
        y = bb.emit(relax.Call(value.op, [value.args[0], w], value.attrs))
        return relax.op.add(y, c)

    out, _ = rewrite_bindings(nondf, lambda _func: rule, ["main"])
    func = out["main"]
    means = [relax.op.mean(v, axis=_channel_axes(layer.op, len(layer.out_shape))) for v, layer in taps]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(func.body.blocks, relax.Tuple([func.body.body, relax.Tuple(means)])))
    out["main"] = relax.Function(list(func.params) + weights + corrections, body)
    return relax.transform.Normalize()(out)


class ShiftedModel:
    """The tapped model compiled once on ``samples``: for any weights and corrections, the model's
    first output per sample and the per-channel output means of every candidate layer."""

    def __init__(self, mod: tvm.IRModule, layers: Sequence[Layer], input_names: Sequence[str], samples: Sequence[dict]):
        self._vm = host_vm(tapped_model(mod, layers))
        dev = self._dev = tvm.cpu()
        self._inputs = [[tvm.runtime.tensor(np.ascontiguousarray(s[n]), dev) for n in input_names] for s in samples]
        self.layers = list(layers)

    def _runs(self, weights, corrections, which):
        args = [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=np.float32), self._dev) for a in [*weights, *corrections]]
        for i in which:
            outputs, means = self._vm["main"](*self._inputs[i], *args)
            yield flatten_outputs(outputs)[0], [m.numpy().astype(np.float64) for m in means]

    def means(self, weights, corrections, which: Sequence[int]) -> list[np.ndarray]:
        """Per layer, its per-channel output means averaged over the samples ``which``."""
        total = None
        for _out, means in self._runs(weights, corrections, which):
            total = means if total is None else [t + m for t, m in zip(total, means)]
        return [t / len(which) for t in total]

    def outputs(self, weights, corrections, which: Sequence[int]) -> list[np.ndarray]:
        """The model's first output on each sample of ``which``."""
        return [out for out, _means in self._runs(weights, corrections, which)]

    def zero_corrections(self) -> list[np.ndarray]:
        return [np.zeros(_correction_shape(layer), np.float32) for layer in self.layers]


def _relative(deltas, scale) -> float:
    """Mean over the shifted layers of mean_c |delta_c| / RMS of the layer's FP32 channel means."""
    vals = [float(np.mean(np.abs(d)) / (s + 1e-30)) for d, s in zip(deltas, scale)]
    return float(np.mean(vals)) if vals else 0.0


def corrections(model: ShiftedModel, decoded: dict, which: Sequence[int]) -> tuple[dict, dict]:
    """Per shifted layer (``decoded``: name -> decoded weight, op layout), the bias to add
    (``-delta``, float32, one per output channel) measured on the samples ``which``, and a
    summary of what it did."""
    layers = model.layers
    zero = model.zero_corrections()
    ref = model.means([layer.weight for layer in layers], zero, which)
    shifted = [decoded.get(layer.name, layer.weight) for layer in layers]
    corr = [z.astype(np.float64) for z in zero]
    active = [i for i, layer in enumerate(layers) if layer.name in decoded]
    scale = [float(np.sqrt(np.mean(ref[i] ** 2))) for i in active]
    before = None
    for i in active:  # in binding order: each layer sees the corrections upstream of it
        got = model.means(shifted, [c.astype(np.float32) for c in corr], which)
        if before is None:
            before = _relative([got[j] - ref[j] for j in active], scale)
        corr[i] = corr[i] - (got[i] - ref[i]).reshape(corr[i].shape)
    got = model.means(shifted, [c.astype(np.float32) for c in corr], which)
    after = _relative([got[j] - ref[j] for j in active], scale)
    bias = {layers[i].name: corr[i].reshape(-1).astype(np.float32) for i in active}
    info = {"samples": len(which), "model_runs": len(active) + 2, "mean_shift_before": round(before, 5), "mean_shift_after": round(after, 5)}
    return bias, info


def as_corrections(model: ShiftedModel, bias: dict) -> list[np.ndarray]:
    """``bias`` (name -> per-channel vector) as the tapped model's correction parameters."""
    return [bias[layer.name].reshape(z.shape) if layer.name in bias else z for layer, z in zip(model.layers, model.zero_corrections())]
