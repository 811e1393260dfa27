"""Helpers shared by the normalisation-pass tests: import, rewrite, run, compare."""

from __future__ import annotations

import numpy as np

from shiftc import evaluate, frontend
from shiftc.passes.graph import op_counts


def imported(model):
    loaded = frontend.load(model)
    return loaded, frontend.to_relax(loaded)


def samples(loaded, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [{s.name: rng.standard_normal(s.shape).astype(s.dtype) for s in loaded.inputs} for _ in range(n)]


def max_rel_error(loaded, mod, n=2) -> float:
    """max |relax - onnxruntime| / max(1, |onnxruntime|) over the first output of ``n`` samples."""
    feeds = samples(loaded, n)
    ref = evaluate.onnxruntime_outputs(loaded.proto, feeds)
    got = evaluate.relax_outputs(mod, loaded.inputs, feeds)
    return max(
        float(np.max(np.abs(np.float64(g[0]) - r[0]) / np.maximum(1.0, np.abs(np.float64(r[0])))))
        for g, r in zip(got, ref)
    )


def counts(mod) -> dict:
    return dict(op_counts(mod))
