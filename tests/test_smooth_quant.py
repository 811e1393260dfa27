"""SmoothQuant scale migration (passes/smooth_quant.py): exact in float, flattens the outlier
channel of a LayerNorm output, and leaves the LayerNorm's other readers (a residual) as they were."""

from __future__ import annotations

import numpy as np
from conftest import make_model
from norm_helpers import counts, imported, max_rel_error, samples
from onnx import helper

from shiftc import calibrate
from shiftc.passes.smooth_quant import factors, smooth_quant, targets


def post_ln_block(rng):
    """Post-LN BERT shape: y = LN(x); q = y W1; k = y W2; out = q + k + y (y also feeds the residual).
    gamma has one outlier channel (x 30), as BERT's LayerNorm outputs have."""
    gamma = np.ones(16, np.float32)
    gamma[3] = 30.0
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
             helper.make_node("MatMul", ["y", "w1"], ["q"]), helper.make_node("MatMul", ["y", "w2"], ["k"]),
             helper.make_node("Add", ["q", "k"], ["s"]), helper.make_node("Add", ["s", "y"], ["out"])]
    consts = {"g": gamma, "b": (rng.standard_normal(16) * 0.1).astype(np.float32),
              "w1": (rng.standard_normal((16, 16)) * 0.2).astype(np.float32),
              "w2": (rng.standard_normal((16, 16)) * 0.2).astype(np.float32)}
    return make_model(nodes, [("x", [1, 6, 16])], [("out", [1, 6, 16])], consts)


def test_smooth_quant_is_exact_and_flattens_the_outlier_channel(rng):
    loaded, mod = imported(post_ln_block(rng))
    found = targets(mod)
    assert len(found) == 1 and len(next(iter(found.values()))) == 2  # one LayerNorm, both matmuls
    name = next(iter(found))
    feeds = samples(loaded, 4)
    before = calibrate.channel_absmax(mod, feeds, [name])[name]
    s = factors(before, [w for _, w in found[name]], 0.5)
    after = smooth_quant(mod, {name: s})
    assert counts(mod)["nn.layer_norm"] == 1 and counts(after)["nn.layer_norm"] == 2  # the residual keeps the original
    assert max_rel_error(loaded, after, n=4) <= 1e-5
    copy = [k for k in targets(after) if k != name]
    assert len(copy) == 1  # the matmuls now read the scaled copy
    smoothed = calibrate.channel_absmax(after, feeds, copy)[copy[0]]
    ratio = lambda m: float(m.max() / np.median(m))  # noqa: E731
    assert ratio(before) > 10 and ratio(smoothed) < ratio(before) / 3
    np.testing.assert_allclose(smoothed, before / s, rtol=1e-4)


def test_factors_balance_activation_and_weight_ranges():
    act = np.array([1.0, 4.0, 100.0])
    w = np.array([[1.0, 2.0], [0.25, 0.5], [0.01, 0.04]])
    s = factors(act, [w], 0.5)
    np.testing.assert_allclose(act / s, np.abs(w).max(1) * s, rtol=1e-12)  # alpha 0.5: equal ranges after migration
