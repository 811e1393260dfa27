"""Bit allocation under a size budget (``--max-bits-per-weight B``): mixed codes and primitives per layer.

Every stored bit counts (``stored_bits``): the codes (packed, plus the kernels' spare byte), one
float32 alpha / scale per output channel and the float32 bias each kernel adds (a layer without
one gets one when bias correction is on). The budget is ``B`` times the number of weights of the
rewritten layers, so a layer's share is its weight count: on MobileNetV2 the classifier and the
last 1x1 conv hold half the weights, the depthwise convs (the layers power-of-two codes hurt most)
under 1 %, and 8 bits on a depthwise conv costs almost nothing.

Each layer chooses one rung of ``RUNGS``: power-of-two codes (3, 4, 5 bits, one term; 3 and 4
bits, two terms) or ``int8`` (per-channel int8 weights kept as a multiply: the "mixture of
primitives"; ``shift.Int8Config``). The allocation, measured on the calibration samples:

1. every layer's *local* output error ``e_l(r) = ||op(x, W_r) - op(x, W)|| / ||op(x, W)||`` for
   every rung, on the real activations reaching it (``shift_measure``);
2. its *gain* ``g_l``: the whole model's output rel-L2 with only this layer at ``4b x1`` (one
   host model run per layer), divided by ``e_l(4b x1)``; the model error of a plan is predicted as
   ``sqrt(sum_l (g_l e_l(r_l))^2)`` (independent errors add in power);
3. greedy: start with every layer at its cheapest rung; repeatedly take the move (one layer to a
   more accurate rung) with the largest drop in predicted squared error per stored bit added
   (free moves first) that keeps the total within the budget; stop when none fits. The total
   never exceeds ``floor(B * weights)`` bits, so the report's bits per weight is <= ``B``;
4. the path is the Pareto table: at most ``PARETO_POINTS`` of its steps (first and last always)
   are *measured*: whole-model rel-L2 against FP32 with that step's plan (before bias correction
   and reconstruction, which only lower it).

With ``--integer-only`` an ``int8`` layer is left to the integer pass (its own int8 codes).
"""

from __future__ import annotations

import math

import numpy as np

from shiftc.core.errors import InputError

from . import shift as S
from . import shift_measure as M

RUNG_FORMATS = [(3, 1), (4, 1), (5, 1), (3, 2), (4, 2)]  # power-of-two (bits, terms)
UNIFORM_RUNGS = (3, 4, 5)  # uniform levels run as canonical shift terms; int8 is the last rung
REF_RUNG = 1  # 4b x1: where each layer's model-level gain is measured
PARETO_POINTS = 12


def rungs(zero_free: bool) -> list:
    return [S.ShiftConfig(b, t, zero_free) for b, t in RUNG_FORMATS] + [S.uniform_config(b) for b in UNIFORM_RUNGS] + [S.INT8]


def stored_bits(layer: S.Layer, cfg, bias_stored: bool) -> int:
    """Bits the artifact stores for ``layer`` at ``cfg``: codes (packed, one spare byte) or int8
    weights, one float32 alpha / scale per output channel, and the float32 bias if stored."""
    n, out = layer.weight.size, layer.oi_weight.shape[0]
    code = 8 * n if isinstance(cfg, S.Int8Config) else 8 * ((n * cfg.code_bits + 7) // 8 + 1)
    return code + 32 * out + (32 * out if bias_stored else 0)


def greedy_path(costs: dict[str, list[int]], err2: dict[str, list[float]], cap: int) -> list[tuple[dict, int, float, str | None]]:
    """The greedy of step 3: per step ``(choice name -> rung index, total bits, predicted
    squared error, the layer moved)``; starts at every layer's cheapest rung (must fit ``cap``)."""
    state = {n: int(np.argmin(c)) for n, c in costs.items()}
    total = sum(costs[n][j] for n, j in state.items())
    e2 = sum(err2[n][j] for n, j in state.items())
    path = [(dict(state), total, e2, None)]
    while True:
        best = None
        for n, j0 in state.items():
            c0, v0 = costs[n][j0], err2[n][j0]
            for j, (c, v) in enumerate(zip(costs[n], err2[n])):
                if v >= v0 or total - c0 + c > cap:
                    continue
                gain = math.inf if c <= c0 else (v0 - v) / (c - c0)
                if best is None or gain > best[0] or (gain == best[0] and v < err2[best[1]][best[2]]):
                    best = (gain, n, j)
        if best is None:
            return path
        _, n, j = best
        total += costs[n][j] - costs[n][state[n]]
        e2 += err2[n][j] - err2[n][state[n]]
        state[n] = j
        path.append((dict(state), total, e2, n))


def _measure_rungs(layers, active, inputs, zero_free, encode):
    """Per active layer: the encodings of every rung and their local output errors."""
    rs = rungs(zero_free)
    encoded, local = {}, {}
    for i, layer in enumerate(layers):
        if layer.name not in active:
            continue
        encoded[layer.name] = [encode(layer, c) for c in rs]
        decoded = [S.decoded_weight(layer, *e) for e in encoded[layer.name]]
        local[layer.name] = M.layer_output_error(layer, [s[i] for s in inputs], decoded)
    return rs, encoded, local


def _gains(layers, encoded, local, evaluator) -> tuple[dict, list]:
    """Step 2: each layer's model-level gain (model rel-L2 with it alone at ``REF_RUNG`` / its local error)."""
    fp32 = [layer.weight for layer in layers]
    ref = evaluator.run(fp32)
    gains = {}
    for i, layer in enumerate(layers):
        if layer.name not in encoded:
            continue
        ws = list(fp32)
        ws[i] = S.decoded_weight(layer, *encoded[layer.name][REF_RUNG])
        e_loc = local[layer.name][REF_RUNG]
        gains[layer.name] = M.rel_l2(ref, evaluator.run(ws)) / e_loc if e_loc > 0 else 0.0
    return gains, ref


def _pareto(layers, rs, encoded, path, weights, ref, evaluator) -> list[dict]:
    """Step 4: the table, with the measured model error at up to ``PARETO_POINTS`` steps."""
    last = len(path) - 1
    measured = {round(k * last / (PARETO_POINTS - 1)) for k in range(PARETO_POINTS)} if last else {0}
    rows = []
    for k, (state, total, e2, moved) in enumerate(path):
        row = {"step": k, "bits_per_weight": round(total / weights, 4), "predicted_rel_l2": round(math.sqrt(e2), 5),
               "moved": None if moved is None else f"{moved} -> {rs[state[moved]].label}"}
        if k in measured:
            ws = [S.decoded_weight(lay, *encoded[lay.name][state[lay.name]]) if lay.name in state else lay.weight for lay in layers]
            row["measured_rel_l2"] = round(M.rel_l2(ref, evaluator.run(ws)), 5)
        rows.append(row)
    return rows


def allocate_bits(layers, active, inputs, zero_free, max_bits, bias_on, evaluator, encode=S.encode) -> tuple[dict, dict, dict]:
    """Steps 1-4 of the module docstring: ``(plan name -> config, encoded name -> (codes, alpha),
    info for the report)``; ``InputError`` when even the cheapest plan exceeds the budget.
    ``encode(layer, cfg)`` gives a rung's codes (nearest or ``shift_gptq`` rounding)."""
    rs, encoded, local = _measure_rungs(layers, active, inputs, zero_free, encode)
    by_name = {layer.name: layer for layer in layers if layer.name in encoded}
    weights = sum(layer.weight.size for layer in by_name.values())
    costs = {n: [stored_bits(lay, c, bias_on or lay.epilogue.bias is not None) for c in rs] for n, lay in by_name.items()}
    cap = math.floor(max_bits * weights)
    floor_bits = sum(min(c) for c in costs.values())
    if floor_bits > cap:
        raise InputError(f"--max-bits-per-weight {max_bits:g} is below the smallest plan ({floor_bits / weights:.3f} stored bits "
                         "per weight: 3-bit codes everywhere, with alpha and bias)")
    gains, ref = _gains(layers, encoded, local, evaluator)
    err2 = {n: [(gains[n] * e) ** 2 for e in local[n]] for n in by_name}
    path = greedy_path(costs, err2, cap)
    state, total, _, _ = path[-1]
    plan = {n: rs[j] for n, j in state.items()}
    chosen = {n: encoded[n][j] for n, j in state.items()}
    info = {
        "max_bits_per_weight": max_bits, "weights": weights, "budget_bits": cap, "stored_bits": total,
        "bits_per_weight": round(total / weights, 4), "rungs": [c.label for c in rs], "model_runs": 1 + len(gains),
        "primitives": {label: sum(1 for c in plan.values() if c.label == label) for label in sorted({c.label for c in plan.values()})},
        "layers": [{"layer": n, "weights": by_name[n].weight.size, "gain": round(gains[n], 4), "rung": plan[n].label,
                    "local_rel_l2": {c.label: round(e, 5) for c, e in zip(rs, local[n])}} for n in by_name],
    }
    info["pareto"] = _pareto(layers, rs, encoded, path, weights, ref, evaluator)
    info["model_runs"] += sum("measured_rel_l2" in r for r in info["pareto"])
    return plan, chosen, info
