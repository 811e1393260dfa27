"""Per-layer mixed precision of ``--integer-only``: which matmul / conv operands are int16.

Every matmul / conv reads int8 operands by default. A layer whose operand is listed in
``IntOptions.wide`` reads it at int16 instead (int16 x int8 -> int32, the accumulator bound
``2**15 * sum|W|`` proved, or the reduction split along K: ``integerize.accumulate``); the graph
stays integer-only. Layers are chosen

- by name: ``--int16-layers`` (comma list of regexes matched against the layer's value name,
  e.g. ``output_dense`` for BERT's second FFN matmul), and/or
- by ``--accuracy-budget B`` with ``--integer-only``: the operands are ranked by their measured
  sensitivity (``operand_sensitivity``: the model's output error, relative L2 on the calibration
  samples, with only that operand int8-quantised at its calibrated threshold), and the top 0, 1,
  2, 4, 8, ... are made int16 until the integer model's output error (relative L2 against the
  float model on the last half of the calibration samples) is within ``B``. Each try builds and
  runs the integer model.
"""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax

from shiftc import evaluate

_LINEAR = ("relax.matmul", "relax.nn.conv2d", "relax.nn.conv2d_transpose")


def operands(mod: tvm.IRModule) -> dict[str, list[str]]:
    """``{layer value name: [its float activation operand names]}`` of every matmul / conv."""
    out: dict[str, list[str]] = {}
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name in _LINEAR:
                names = [a.name for a in v.args if isinstance(a, relax.Var) and str(a.ty.dtype) == "float32"]
                if names:
                    out[b.var.name] = names
    return out


def by_pattern(layers: dict[str, list[str]], patterns: str, nodes: dict | None = None) -> frozenset:
    """The operands of the layers that any of the comma-separated regexes finds in the layer's
    value name, or in its ONNX node's name or op type (``nodes``: ``shiftc.core.provenance``)."""
    pats = [re.compile(p.strip()) for p in patterns.split(",") if p.strip()]
    nodes = nodes or {}

    def names_of(layer):
        n = nodes.get(layer)
        return [layer] + ([n.name, n.op_type] if n is not None else [])

    return frozenset(n for layer, names in layers.items() if any(p.search(t) for p in pats for t in names_of(layer)) for n in names)


def ranked(sens: dict[str, float]) -> list[str]:
    """Operand names, most sensitive first (ties by name: deterministic)."""
    return sorted(sens, key=lambda n: (-sens[n], n))


def tries(n: int) -> list[int]:
    """How many of the ranked operands each try makes int16: 0, 1, 2, 4, ..., n."""
    out, k = [0], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n] if n else out


def output_error(reference: list[list[np.ndarray]], got: list[list[np.ndarray]], normalise: bool) -> float:
    """Worst relative L2 over the outputs; ``normalise``: rows L2-normalised first (the L2
    normalisation that ``--l2norm remove`` took out of the integer model)."""
    if normalise:
        unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)  # noqa: E731
        reference = [[unit(np.asarray(a, np.float64)) for a in r] for r in reference]
        got = [[unit(np.asarray(a, np.float64)) for a in r] for r in got]
    return float(evaluate.compare(reference, got)["rel_l2"])


def choose(order: list[str], budget: float, error_of) -> tuple[frozenset, list[dict], bool]:
    """The smallest prefix of ``order`` (in ``tries``' steps) whose ``error_of(wide)`` is within
    ``budget``; returns it, every try ``{int16, rel_l2}``, and whether the budget was met (if
    not: all of ``order``)."""
    trials = []
    for k in tries(len(order)):
        wide = frozenset(order[:k])
        err = error_of(wide)
        trials.append({"int16": k, "rel_l2": round(err, 6)})
        if err <= budget:
            return wide, trials, True
    return frozenset(order), trials, False
