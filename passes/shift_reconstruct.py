"""Layer-wise reconstruction of shift codes (``--shift-reconstruct``): AdaRound in the log domain.

Plain encoding gives every weight its *nearest* code.  Reconstruction lets every weight choose
between the two codes that bracket it instead, so that the layer's *output* on real calibration
activations is closest to the FP32 layer's (Nagel et al. 2020, AdaRound; Li et al. 2021, BRECQ):

* the representable values of a layer's format, in units of ``alpha_c``, are the sorted set ``T``
  of every sum of ``terms`` codes (``unit_table``; one term: ``{+-2**-p}``, with-zero adds 0).
  Weight ``w`` with ``u = w / alpha_c`` lies between its neighbours ``T[lo] <= u <= T[hi]``;
  multi-term codes choose their terms the same way (the chosen value's terms come from the table);
* the soft weight is ``alpha_c * (T[lo] + h(V) (T[hi] - T[lo]))`` with AdaRound's rectified
  sigmoid ``h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``, ``V`` initialised at the
  weight's own position; torch (Adam) minimises the layer's output error plus the annealed
  regulariser ``lambda * mean(1 - |2h - 1|**beta)`` (beta 20 -> 2 after a 20 % warm-up), then
  ``h >= 0.5`` picks the code;
* the output error is ``clamp(op(x_q, W_soft) + b + delta) - clamp(op(x_f, W) + b)`` (the kernel's
  own epilogue: folded bias and ReLU/Clip) where ``x_f`` is the layer's input in the FP32 model
  and ``x_q`` its input in the shifted model with the layers before it already reconstructed;
  ``delta`` (per output channel, learnt with ``V``) is the layer's bias correction;
* after rounding, ``alpha_c`` and ``delta_c`` are refit per channel by least squares on the
  output; the result is kept only where it lowers the layer's error, and the whole layer keeps
  whichever of {reconstructed, nearest codes with mean-error bias correction} has the lower output
  error on the calibration samples: reconstruction never makes a layer worse there.

``x_q`` comes from the model run with every weight and correction as a parameter (built once):
the layers are reconstructed in binding order in ``CHUNKS`` groups, and the inputs of a group are
captured once, with the groups before it reconstructed and the rest of its own group at nearest
codes (about ``CHUNKS`` model runs per sample instead of one per layer).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tvm
from tvm import relax

from shiftc.core.host import flatten_outputs, host_vm
from shiftc.core.relax_rewrite import rewrite_bindings
from shiftc.reference import shift as ref
from shiftc.reference import shift_uniform as ref_uniform

from . import shift as S

log = logging.getLogger(__name__)

ZETA, GAMMA = 1.1, -0.1  # AdaRound's rectified sigmoid stretch
ITERS = 300  # Adam steps per layer
LR = 0.03
REG = 0.01  # regulariser weight, relative to the layer's initial output error
WARMUP = 0.2
BETA = (20.0, 2.0)
DAMP = 0.01  # weight-space damping (GPTQ-style) against fitting few calibration rows
BATCH_SAMPLES = 4  # calibration samples per step
WINDOW = 16  # conv2d: each step fits one random window of at most WINDOW x WINDOW output positions
CHUNKS = 16  # input captures of the shifted model at most (groups of layers reconstructed between them)
MAX_SAMPLES = 16


@functools.cache
def unit_table(bits: int, terms: int, zero_free: bool, uniform: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values ``sum_i decode(code_i)`` (float64, units of alpha) of the format and,
    per value, one tuple of ``terms`` int8 codes that gives it (uniform: every level
    ``m * 2**-(bits-1)`` and its canonical terms)."""
    if uniform:
        L = (1 << (bits - 1)) - 1
        levels = np.arange(-L, L + 1)
        return np.ldexp(levels.astype(np.float64), 1 - bits), np.ascontiguousarray(ref_uniform.csd_codes(levels, bits).T)
    pmax = ref.p_limit(bits, zero_free)
    single = [s * (p + 1) for p in range(pmax + 1) for s in (1, -1)] + ([] if zero_free else [0])
    unit = {c: (0.0 if c == 0 else math.copysign(2.0 ** -(abs(c) - 1), c)) for c in single}
    best: dict[float, tuple[int, ...]] = {}
    for combo in itertools.product(single, repeat=terms):
        best.setdefault(sum(unit[c] for c in combo), combo)
    values = np.array(sorted(best), dtype=np.float64)
    return values, np.array([best[v] for v in values], dtype=np.int8)


def brackets(u: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the neighbours ``values[lo] <= u <= values[hi]`` (both the end outside the table's
    range) and ``u``'s position between them in [0, 1]."""
    hi = np.clip(np.searchsorted(values, u, side="left"), 0, len(values) - 1)
    lo = np.where(values[hi] <= u, hi, np.maximum(hi - 1, 0))
    gap = values[hi] - values[lo]
    frac = np.where(gap > 0, (u - values[lo]) / np.where(gap > 0, gap, 1.0), 0.0)
    return lo, hi, np.clip(frac, 0.0, 1.0)


def codes_of(layer: S.Layer, table_codes: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """Codes ``(terms, *oi_shape)`` int8 of the table entries ``choice`` (``(O, rest)``)."""
    c = table_codes[choice.reshape(-1)]  # (n, terms)
    return np.ascontiguousarray(c.T.reshape((c.shape[1],) + layer.oi_weight.shape))


# --------------------------------------------------------------------------- the shifted model's layer inputs
def input_taps(mod: tvm.IRModule, count: int) -> tvm.IRModule:
    """``main`` with candidate ``i``'s weight a parameter ``shift_w<i>``, a per-channel correction
    ``shift_c<i>`` added to its output, returning every candidate's input (binding order)."""
    from .shift_bias import _correction_shape

    layers = S.find_layers(mod)
    assert len(layers) == count
    params: list = []
    taps: list = []

    def rule(_var, value, bb):
        if S.candidate_kind(value) is None:
            return None
        i = len(taps)
        w = relax.Var(f"shift_w{i}", value.args[1].ty)
        c = relax.Var(f"shift_c{i}", relax.TensorType(_correction_shape(layers[i]), "float32"))
        params.append((w, c))
        taps.append(value.args[0])
        return relax.op.add(bb.emit(relax.Call(value.op, [value.args[0], w], value.attrs)), c)

    out, _ = rewrite_bindings(relax.transform.ToNonDataflow()(mod), lambda _f: rule, ["main"])
    func = out["main"]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(func.body.blocks, relax.Tuple(taps)))
    out["main"] = relax.Function(list(func.params) + [w for w, _ in params] + [c for _, c in params], body)
    return relax.transform.Normalize()(out)


class LayerInputs:
    """The tapped model built once: every candidate's input for any weights and corrections."""

    def __init__(self, mod, layers: Sequence[S.Layer], input_names: Sequence[str], samples: Sequence[dict]):
        self._vm = host_vm(input_taps(mod, len(layers)))
        dev = self._dev = tvm.cpu()
        self._inputs = [[tvm.runtime.tensor(np.ascontiguousarray(s[n]), dev) for n in input_names] for s in samples]
        self.runs = 0

    def capture(self, weights, corrections) -> list[list[np.ndarray]]:
        """Per sample, the input of every candidate layer."""
        args = [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=np.float32), self._dev) for a in [*weights, *corrections]]
        self.runs += 1
        return [flatten_outputs(self._vm["main"](*x, *args)) for x in self._inputs]


# --------------------------------------------------------------------------- the whole model
@dataclass
class Reconstruction:
    encoded: dict  # name -> (codes, alpha)
    bias: dict  # name -> per-channel bias correction (float32)
    info: dict  # for the report (no wall-clock time: meta.json stays reproducible)
    seconds: float


def _chunks(items: list, n: int) -> list[list]:
    size = max(1, math.ceil(len(items) / max(1, n)))
    return [items[i : i + size] for i in range(0, len(items), size)]


def reconstruct(mod, layers: Sequence[S.Layer], plan: dict, input_names, samples: Sequence[dict], fit_bias: bool = True,
                fixed: dict | None = None) -> Reconstruction:
    """Every shift layer of ``plan`` reconstructed in binding order on ``samples`` (at most
    ``MAX_SAMPLES``): codes, alpha and bias correction per layer (module docstring). ``fixed``:
    weights of other layers as they will run (int8 layers of a mixed plan), not reconstructed."""
    import torch

    from . import shift_adaround as A

    t0 = time.perf_counter()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-step tensors: one thread is faster, and the result does not depend on the machine's cores
    try:
        return _reconstruct(torch, A, mod, layers, plan, input_names, samples, fit_bias, t0, fixed or {})
    finally:
        torch.set_num_threads(threads)


def _reconstruct(torch, A, mod, layers, plan, input_names, samples, fit_bias, t0, fixed) -> Reconstruction:
    samples = list(samples)[:MAX_SAMPLES]
    tap = LayerInputs(mod, layers, input_names, samples)
    from .shift_bias import _correction_shape

    weights = [layer.weight for layer in layers]
    corr = [np.zeros(_correction_shape(layer), np.float32) for layer in layers]
    xf = tap.capture(weights, corr)
    active = [i for i, layer in enumerate(layers) if layer.name in plan]
    for i in active:  # nearest codes until reconstructed
        weights[i] = S.decoded_weight(layers[i], *S.encode(layers[i], plan[layers[i].name]))
    weights = [fixed.get(layer.name, w) for layer, w in zip(layers, weights)]
    encoded, bias, rows = {}, {}, []
    for chunk in _chunks(active, CHUNKS):
        xq = tap.capture(weights, corr)
        for i in chunk:
            layer = layers[i]
            res = A.reconstruct_layer(torch, layer, plan[layer.name], [s[i] for s in xq], [s[i] for s in xf], seed=i, fit_bias=fit_bias)
            encoded[layer.name] = (res.codes, res.alpha)
            if fit_bias:
                bias[layer.name] = res.delta
            weights[i] = S.decoded_weight(layer, res.codes, res.alpha)
            corr[i] = res.delta.reshape(corr[i].shape)
            rows.append({"layer": layer.name, "output_rel_l2_nearest": round(res.error_nearest, 5), "output_rel_l2": round(res.error, 5)})
        del xq
    info = {"samples": len(samples), "model_runs": tap.runs, "iterations_per_layer": ITERS, "layers": rows,
            "mean_output_rel_l2_nearest": round(float(np.mean([r["output_rel_l2_nearest"] for r in rows])), 5) if rows else 0.0,
            "mean_output_rel_l2": round(float(np.mean([r["output_rel_l2"] for r in rows])), 5) if rows else 0.0}
    return Reconstruction(encoded, bias, info, time.perf_counter() - t0)


def stage_step(o, mod, layers, plan, input_names, samples, summary, notes, fixed: dict | None = None) -> Reconstruction | None:
    """The shift stage's reconstruction step (``--shift-reconstruct``), recorded in the report;
    None when off. ``fixed``: the int8 layers of a mixed plan (kept as they are)."""
    plan = {n: c for n, c in plan.items() if not isinstance(c, S.Int8Config)}
    if not o.shift_reconstruct or not plan:
        return None
    rec = reconstruct(mod, layers, plan, input_names, samples, fit_bias=bool(o.shift_bias_correction), fixed=fixed)
    summary["reconstruction"] = rec.info
    log.info("shift: reconstruction of %d layer(s) took %.1fs", len(plan), rec.seconds)
    kept = sum(r["output_rel_l2"] < r["output_rel_l2_nearest"] for r in rec.info["layers"])
    notes.append(
        f"reconstruction: each shifted layer's codes (the two that bracket each weight), alpha and "
        f"{'bias correction' if o.shift_bias_correction else 'no bias (--no-shift-bias-correction)'} chosen to minimise its output error on "
        f"{rec.info['samples']} calibration sample(s) with the layers before it already reconstructed ({rec.info['model_runs']} model runs, "
        f"{ITERS} Adam steps a layer); {kept} of {len(plan)} layer(s) improved on nearest codes, mean layer output rel-L2 "
        f"{rec.info['mean_output_rel_l2_nearest']:.4g} -> {rec.info['mean_output_rel_l2']:.4g}"
    )
    return rec
