"""Per-layer mixed precision of ``--integer-only`` (passes/integerize_precision.py): ``--int16-layers``
by name and ``--accuracy-budget`` by measured sensitivity, checked on held-back samples; the graph
stays integer-only. A post-LN block whose LayerNorm has an outlier channel (BERT-like)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_model
from onnx import helper

import shiftc
from shiftc.core.errors import CheckFailedError, InputError
from shiftc.passes import integerize_precision as P

pytestmark = pytest.mark.timeout(900)


def block(rng):
    g = np.ones(32, np.float32)
    g[7] = 40.0  # the outlier channel
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["y"])]
    consts = {"g": g, "b": (rng.standard_normal(32) * 0.1).astype(np.float32),
              "w1": (rng.standard_normal((32, 48)) * 0.2).astype(np.float32),
              "w2": (rng.standard_normal((48, 16)) * 0.2).astype(np.float32), "b2": np.full(16, 0.1, np.float32)}
    return make_model(nodes, [("x", [1, 10, 32])], [("y", [1, 10, 16])], consts)


def _samples(rng, n):
    return [{"x": rng.standard_normal((1, 10, 32)).astype(np.float32)} for _ in range(n)]


def _stage(cm):
    return next(s for s in cm.report.stages if s.name == "integerize")


def test_budget_widens_the_sensitive_operand_and_is_met(rng):
    model, calib = block(rng), _samples(rng, 8)
    base = shiftc.compile(model, "x86", calibration=calib, integer_only=True)
    err8 = _stage(base).error["rel_l2"]
    cm = shiftc.compile(model, "x86", calibration=calib, integer_only=True, accuracy_budget=err8 * 0.6)
    st = _stage(cm)
    budget = st.summary["budget"]
    assert budget["met"] and budget["tries"][0] == {"int16": 0, "rel_l2": budget["tries"][0]["rel_l2"]}
    assert budget["tries"][0]["rel_l2"] > err8 * 0.6 >= budget["tries"][-1]["rel_l2"]
    # the outlier LayerNorm feeds the first matmul (value "h"): that operand is the most sensitive one
    assert st.summary["int16_operands"]["layers"] == ["h"]
    assert st.error["rel_l2"] < err8
    assert st.summary["float_ops"] == 0
    x = _samples(np.random.default_rng(9), 1)[0]
    assert np.isfinite(cm.run(x)["y"]).all()


def test_budget_out_of_reach_fails_in_one_line(rng):
    with pytest.raises(CheckFailedError, match="--accuracy-budget 1e-06 not met with every matmul / conv operand at int16"):
        shiftc.compile(block(rng), "x86", calibration=_samples(rng, 4), integer_only=True, accuracy_budget=1e-6)


def test_int16_layers_by_name(rng):
    cm = shiftc.compile(block(rng), "x86", calibration=_samples(rng, 4), integer_only=True, int16_layers="MatMul")  # the ONNX op type: every MatMul node
    assert _stage(cm).summary["int16_operands"]["layers"] == ["h", "m2"]  # both matmuls
    rows = [r for r in _stage(cm).rows if r.get("op") == "matmul"]
    assert sorted(r["input"] for r in rows) == ["s16", "u16"]  # the ReLU output is non-negative: unsigned
    with pytest.raises(InputError, match="matches no matmul"):
        shiftc.compile(block(rng), "x86", calibration=_samples(rng, 2), integer_only=True, int16_layers="nope")


def test_sensitivity_ranks_clipped_and_coarse_values_first():
    rng = np.random.default_rng(0)
    smooth = np.abs(rng.standard_normal(10000))
    spiky = smooth.copy()
    spiky[0] = 200.0  # max|x| 200: the int8 step swamps the rest
    sens = P.sensitivity({"smooth": smooth, "spiky": spiky}, {"smooth": smooth.max(), "spiky": spiky.max()})
    assert P.ranked(sens) == ["spiky", "smooth"] and sens["spiky"] > 5 * sens["smooth"]
    assert P.tries(5) == [0, 1, 2, 4, 5] and P.tries(0) == [0]
