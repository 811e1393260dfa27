"""Bias correction of shifted layers (passes/shift_bias.py), checked against an independent
onnxruntime computation: the sequential empirical correction, layer by layer."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper as h, numpy_helper as nh
from test_shift_pass import ONNX_WEIGHT, imported, tiny_model

import shiftc
from shiftc.passes import shift as S

SHIFTED = ["conv2d_0", "conv2d_1", "matmul_0"]  # matmul_1 (the model output) skipped
OUT = {"conv2d_0": ("c0", "b0", (0, 2, 3)), "conv2d_1": ("c1", "b1", (0, 2, 3)), "matmul_0": ("g", "b2", (0,))}


def _calibration(n=8, seed=5):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0.5, 1.0, (1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _ort(decoded: bool, bias: dict, samples, outputs=("y",)):
    """onnxruntime on the tiny model with decoded 4-bit weights (or FP32 ones) and the biases ``bias``;
    the depthwise conv gets a bias input ``b1`` (zeros unless given)."""
    _, mod = imported()
    layers = {l.name: l for l in S.find_layers(mod)}
    model = tiny_model()
    inits = {i.name: i for i in model.graph.initializer}
    if decoded:
        for name in SHIFTED:
            wd = S.decoded_weight(layers[name], *S.encode(layers[name], S.ShiftConfig(4)))
            onnx_name, transposed = ONNX_WEIGHT[name]
            inits[onnx_name].CopyFrom(nh.from_array(np.ascontiguousarray(wd.T if transposed else wd), onnx_name))
    model.graph.node[2].input.append("b1")
    model.graph.initializer.append(nh.from_array(np.zeros(8, np.float32), "b1"))
    inits["b1"] = model.graph.initializer[-1]
    for name, b in bias.items():
        inits[name].CopyFrom(nh.from_array(b.astype(np.float32), name))
    for out in outputs:
        if out != "y":
            model.graph.output.append(h.make_empty_tensor_value_info(out))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [sess.run(list(outputs), s) for s in samples]


def _sequential_correction(samples):
    """Layer by layer: new bias = bias - (E[output with decoded weights and corrected biases so far]
    - E[FP32 output]) per channel, over the calibration samples."""
    init = {i.name: nh.to_array(i) for i in tiny_model().graph.initializer}
    bias = {"b0": init["b0"], "b1": np.zeros(8, np.float32), "b2": init["b2"]}
    for name in SHIFTED:
        out, b, axes = OUT[name]
        ref = np.mean([r[0] for r in _ort(False, {}, samples, (out,))], axis=0).mean(axis=axes)
        got = np.mean([r[0] for r in _ort(True, bias, samples, (out,))], axis=0).mean(axis=axes)
        bias[b] = (bias[b] - (got - ref)).astype(np.float32)
    return bias


def test_bias_correction_equals_sequential_empirical_correction(tmp_path):
    calib = _calibration()
    cm = shiftc.compile(tiny_model(), "x86", shift_bits=4, shift_skip="last", calibration=calib, output=tmp_path / "a")
    stage = next(s for s in cm.report.stages if s.name == "shift")
    info = stage.summary["bias_correction"]
    assert info["samples"] == len(calib) and info["model_runs"] == 3 + 2 and info["mean_shift_after"] < 0.01 * info["mean_shift_before"]
    assert all(r["bias_corrected"] for r in stage.rows if r["bits"])
    assert {r["layer"]: r["bias_bytes"] for r in stage.rows if r["bits"]} == {"conv2d_0": 32, "conv2d_1": 32, "matmul_0": 64}
    files = [p for p in (tmp_path / "a").rglob("*") if p.is_file() and p.name != "meta.json"]
    assert cm.report.sizes == {"onnx_model_bytes": tiny_model().ByteSize(), "artifact_files_bytes": sum(p.stat().st_size for p in files)}
    bias = _sequential_correction(calib)
    x = np.random.default_rng(3).normal(0.5, 1.0, size=(1, 3, 8, 8)).astype(np.float32)
    want = _ort(True, bias, [{"x": x}])[0][0]
    uncorrected = _ort(True, {}, [{"x": x}])[0][0]
    got = cm.run(x)["y"]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    assert np.linalg.norm(uncorrected - want) / np.linalg.norm(want) > 1e-2  # the correction really changed the model


@pytest.mark.parametrize("flag", ["--no-shift-bias-correction", "--shift-bias-correction"])
def test_cli_flag(tmp_path, flag):
    import json

    import onnx
    from click.testing import CliRunner

    from shiftc.cli import main

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(path))
    res = CliRunner().invoke(main, ["compile", str(path), "--shift-bits", "4", flag, "-o", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    stage = next(s for s in json.loads(res.output)["report"]["stages"] if s["name"] == "shift")
    assert ("bias_correction" in stage["summary"]) == (flag == "--shift-bias-correction")


def test_integer_only_build_carries_the_corrected_bias():
    """--integer-only re-emits the shift layers with the corrected bias through the requantiser:
    its output is closer to the float model with decoded weights and corrected biases
    (onnxruntime) than the uncorrected one is."""
    calib = _calibration()
    int_bc = shiftc.compile(tiny_model(), "x86", integer_only=True, shift_bits=4, shift_skip="last", calibration=calib)
    assert "bias_correction" in next(s for s in int_bc.report.stages if s.name == "shift").summary
    held = _calibration(16, seed=9)
    want = np.concatenate([r[0] for r in _ort(True, _sequential_correction(calib), held)])
    raw = np.concatenate([r[0] for r in _ort(True, {}, held)])
    got = np.concatenate([int_bc.run(s["x"])["y"] for s in held])
    assert np.linalg.norm(got - want) < 0.5 * np.linalg.norm(raw - want), (np.linalg.norm(got - want), np.linalg.norm(raw - want))
