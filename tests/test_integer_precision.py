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


def test_measured_sensitivity_quantises_one_operand_at_a_time(rng):
    """The gated probe (passes/operand_sensitivity.py): gate 0 is the float model; the one-hot gate
    of the ReLU output reads it through its u8 codes (checked in NumPy); the outlier LayerNorm's
    operand costs the output most."""
    import tvm

    from onnx import numpy_helper

    from shiftc import calibrate, frontend
    from shiftc.core.host import flatten_outputs, host_vm
    from shiftc.passes import operand_sensitivity as S
    from shiftc.passes.graph import unique_value_names
    from shiftc.reference.quant import round_half_up

    model, calib = block(rng), _samples(rng, 6)
    mod = unique_value_names(frontend.to_relax(frontend.load(model)))
    names = sorted({n for ns in P.operands(mod).values() for n in ns})
    assert len(names) == 2  # the LayerNorm output and the ReLU output
    cal = calibrate.calibrate(mod, calib, "percentile")
    relu_out = next(n for n in names if n in cal.nonnegative)
    vm = host_vm(S.gated(mod, names, cal))
    x = calib[0]["x"]
    w2 = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w2")).astype(np.float64)
    (r,) = flatten_outputs(host_vm(calibrate.probe_module(mod, [relu_out]))["main"](tvm.runtime.tensor(x)))

    def run(g):
        return vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(np.asarray(g, np.float32))).numpy()

    floats = shiftc.compile(model, "x86").run({"x": x})["y"]
    np.testing.assert_allclose(run([0, 0]), floats, rtol=1e-5, atol=1e-5)
    s = cal.scale(relu_out, 8, unsigned=True)
    rq = np.clip(round_half_up(r.astype(np.float64) / s), 0, 255) * s
    want = rq @ w2 + 0.1
    g = [0, 0]
    g[names.index(relu_out)] = 1
    np.testing.assert_allclose(run(g), want, rtol=1e-4, atol=1e-4)
    sens = S.measure(mod, names, cal, calib, lambda a, b: P.output_error(a, b, False))
    assert P.ranked(sens)[0] != relu_out and sens[relu_out] > 0
    assert P.tries(5) == [0, 1, 2, 4, 5] and P.tries(0) == [0]
