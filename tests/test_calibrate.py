"""Calibration: observers, probe collection, one-sample mode, and the integer-only pipeline stage."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from tvm import relax

from shiftc import calibrate
from shiftc.core.errors import InputError, UnsupportedModelError

from conftest import make_model


def test_minmax_percentile_mse_on_heavy_tail(rng):
    x = rng.standard_normal(200_000).astype(np.float32)
    x[:5] = 40.0  # five outliers
    obs = {m: calibrate.make_observer(m) for m in ("minmax", "percentile", "mse")}
    for o in obs.values():
        o.update(x[:100_000])
        o.update(x[100_000:])
    assert obs["minmax"].threshold() == pytest.approx(40.0)
    p = obs["percentile"].threshold()
    assert 3.0 < p < 40.0  # 99.99th percentile of |N(0,1)| ~ 3.9, outliers excluded
    t = obs["mse"].threshold()
    assert t < 40.0
    # MSE's choice really has lower int8 fake-quant error than min/max on this data
    def err(T):
        s = T / 127
        return np.mean((np.clip(np.floor(x / s + 0.5), -127, 127) * s - x) ** 2)

    assert err(t) < err(40.0)
    assert obs["minmax"].scale(8) == pytest.approx(40.0 / 127)


def test_observer_rejects_nan():
    with pytest.raises(InputError, match="NaN"):
        calibrate.MinMax().update(np.array([1.0, np.nan], np.float32))
    with pytest.raises(InputError, match="unknown calibration method"):
        calibrate.make_observer("entropy")


def test_weight_scales_per_output_channel():
    w = np.array([[1.0, -2.0], [0.0, 0.0], [0.5, 0.25]])
    np.testing.assert_allclose(calibrate.weight_scales(w, axis=0), [2 / 127, 0, 0.5 / 127])


def _tiny_mod():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.multiply(x, relax.const(2.0, "float32")), name_hint="h")
            o = bb.emit_output(relax.op.nn.relu(h))
        bb.emit_func_output(o)
    return bb.get()


def test_collect_probes_intermediates_and_one_sample_mode():
    mod = _tiny_mod()
    samples = [{"x": np.full((2, 3), v, np.float32)} for v in (1.0, -5.0, 3.0)]
    obs = calibrate.collect(mod, samples)
    assert set(obs) == {"x", "h", "gv"} or set(obs) >= {"x", "h"}
    assert obs["x"].threshold() == 5.0 and obs["h"].threshold() == 10.0
    one = calibrate.calibrate(mod, samples, max_samples=1)
    assert one.samples == 1 and one.thresholds["h"] == 2.0  # only the first sample was seen
    with pytest.raises(InputError, match="unknown value"):
        calibrate.collect(mod, samples, ["nope"])
    with pytest.raises(InputError, match=">= 1"):
        calibrate.collect(mod, samples, max_samples=0)


def _onnx_mlp(rng):
    w1 = (rng.standard_normal((8, 16)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 4)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Softmax", ["m"], ["y"], axis=-1),
    ]
    return make_model(nodes, [("x", [1, 8])], [("y", [1, 4])], {"w1": w1, "w2": w2})


def test_compile_integer_only_reports_and_runs(rng, tmp_path):
    import shiftc

    model = _onnx_mlp(rng)
    cal = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(8)]
    cm = shiftc.compile(model, "x86", calibration=cal, integer_only=True, calibration_method="percentile", calibration_samples=1)
    stage = next(s for s in cm.report.stages if s.name == "integerize")
    assert stage.lossy and stage.error is not None and stage.error["samples"] == 8
    assert stage.summary["calibration"] == "percentile on 1 sample(s)"
    assert stage.summary["integer_ops"]["shiftmax"] == 1 and stage.summary["float_ops"] == 0
    x = cal[3]["x"]
    y = cm.run(x)["y"]
    assert y.shape == (1, 4) and abs(float(y.sum()) - 1.0) < 0.1  # still a softmax


def test_cli_integer_only_unsupported_op_exit_code(rng, tmp_path):
    from click.testing import CliRunner

    from shiftc.cli import main

    model = make_model([helper.make_node("Cos", ["x"], ["y"], name="cos0")], [("x", [1, 4])], [("y", [1, 4])])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    res = CliRunner().invoke(main, ["compile", str(path), "-o", str(tmp_path / "out"), "--integer-only"])
    assert res.exit_code == 3, res.output
    assert "cos" in res.output and "--float-fallback" in res.output
    assert not (tmp_path / "out").exists()


def test_auto_observer_is_percentile_for_a_cnn_and_minmax_with_attention():
    from shiftc.passes.integerize_stage import default_observer

    def module(with_softmax: bool):
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit(relax.op.nn.conv2d(x, relax.const(np.ones((4, 3, 3, 3), np.float32))))
                if with_softmax:
                    y = bb.emit(relax.op.nn.softmax(y))
                out = bb.emit_output(y)
            bb.emit_func_output(out)
        return bb.get()

    assert default_observer(module(False)) == "percentile"
    assert default_observer(module(True)) == "minmax"


def test_observers_record_non_negative_values():
    obs = calibrate.make_observer("percentile")
    obs.update(np.array([0.0, 1.0, 5.0], np.float32))
    neg = calibrate.make_observer("minmax")
    neg.update(np.array([-0.5, 3.0], np.float32))
    cal = calibrate.Calibration.from_observers({"relu": obs, "any": neg}, 1)
    assert cal.nonnegative == {"relu"}
    # MSE searches unsigned codes for a never-negative value: a finer grid, a threshold of its own
    mse = calibrate.make_observer("mse")
    mse.update(np.abs(np.random.default_rng(0).standard_normal(10_000)).astype(np.float32))
    assert mse.minimum >= 0 and 0 < mse.threshold() <= mse.absmax
