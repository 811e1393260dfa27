"""The shift pass: IR before/after, layer selection, numerics vs onnxruntime, compile + report."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T, helper as h, numpy_helper as nh
from shift_helpers import ShiftWeights
from tvm import relax

import shiftc
from shiftc import evaluate, frontend
from shiftc.core.errors import InputError
from shiftc.passes import shift as S


def tiny_model(seed=0):
    """Conv(bias, stride 2) -> ReLU -> depthwise Conv -> Clip(0, 0.5) -> Flatten -> Gemm(transB) -> ReLU -> MatMul."""
    rng = np.random.default_rng(seed)
    inits = {
        "w0": rng.normal(0, 0.3, (8, 3, 3, 3)), "b0": rng.normal(0, 0.1, (8,)),
        "w1": rng.normal(0, 0.3, (8, 1, 3, 3)),
        "w2": rng.normal(0, 0.1, (16, 128)), "b2": rng.normal(0, 0.1, (16,)),
        "w3": rng.normal(0, 0.3, (16, 10)), "lo": np.array(0.0), "hi": np.array(0.5),
    }
    nodes = [
        h.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2]),
        h.make_node("Relu", ["c0"], ["r0"]),
        h.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1], group=8),
        h.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),  # ReLU6: legalised to maximum/minimum call_tir
        h.make_node("Flatten", ["r1"], ["f"]),
        h.make_node("Gemm", ["f", "w2", "b2"], ["g"], transB=1),
        h.make_node("Relu", ["g"], ["r2"]),
        h.make_node("MatMul", ["r2", "w3"], ["y"]),
    ]
    graph = h.make_graph(
        nodes, "tiny", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])], [h.make_tensor_value_info("y", T.FLOAT, [1, 10])],
        [nh.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


ONNX_WEIGHT = {"conv2d_0": ("w0", False), "conv2d_1": ("w1", False), "matmul_0": ("w2", True), "matmul_1": ("w3", False)}


def imported():
    loaded = frontend.load(tiny_model())
    return loaded, relax.transform.FoldConstant()(frontend.to_relax(loaded))


def ops_in(mod):
    text = mod["main"].script(show_meta=False)
    return text.count("R.nn.conv2d("), text.count("R.matmul("), text.count("R.call_tir(shift_conv2d_float"), text.count("R.call_tir(shift_matmul_float")


def test_layers_are_found_and_named_in_graph_order():
    _, mod = imported()
    layers = S.find_layers(mod)
    assert [(l.name, l.op, l.weight.shape) for l in layers] == [
        ("conv2d_0", "conv2d", (8, 3, 3, 3)), ("conv2d_1", "conv2d", (8, 1, 3, 3)),
        ("matmul_0", "matmul", (128, 16)), ("matmul_1", "matmul", (16, 10)),  # Gemm transB folded to (K, N)
    ]
    assert layers[1].attrs["groups"] == 8 and layers[0].attrs["strides"] == (2, 2)
    assert [l.macs for l in layers] == [8 * 16 * 27, 8 * 16 * 9, 16 * 128, 10 * 16]


def test_skip_spec():
    _, mod = imported()
    layers = S.find_layers(mod)
    assert S.skipped(layers, "first,last") == {"conv2d_0", "matmul_1"}
    assert S.skipped(layers, "matmul_.*") == {"matmul_0", "matmul_1"}
    assert S.skipped(layers, "conv2d_1") == {"conv2d_1"}
    assert S.skipped(layers, "") == set()
    with pytest.raises(ValueError, match="not a layer name or regex"):
        S.skipped(layers, "conv2d_(")


def test_ir_before_and_after():
    _, mod = imported()
    assert ops_in(mod) == (2, 2, 0, 0)
    plan = {"conv2d_0": S.ShiftConfig(4), "conv2d_1": S.ShiftConfig(5, 2, False), "matmul_0": S.ShiftConfig(3)}
    out = ShiftWeights(plan)(mod)
    assert ops_in(out) == (0, 1, 2, 1)  # matmul_1 not in the plan stays a float matmul
    before, after = mod["main"].script(show_meta=False), out["main"].script(show_meta=False)
    assert before.count("R.add(") == 2 and after.count("R.add(") == 0  # conv and Gemm biases folded into the kernels
    assert before.count("R.nn.relu(") == 2 and after.count("R.nn.relu(") == 0  # and the ReLUs after them
    assert before.count("R.call_tir(m") == 2 and after.count("R.call_tir(m") == 0  # and the Clip
    layers = {l.name: l.epilogue for l in S.find_layers(mod)}
    assert (layers["conv2d_0"].bias is not None, layers["conv2d_0"].lo, layers["conv2d_0"].hi) == (True, 0.0, None)
    assert (layers["conv2d_1"].bias, layers["conv2d_1"].lo, layers["conv2d_1"].hi) == (None, 0.0, 0.5)
    assert layers["matmul_1"].bias is None and layers["matmul_1"].lo is None  # the model output: nothing follows
    kernels = {gv.name_hint: f for gv, f in out.functions.items() if gv.name_hint.startswith("shift_")}
    assert len(kernels) == 3
    assert all(f.attrs["shiftc.kernel"] == "shift_float" for f in kernels.values())
    # weights are stored as packed uint8 codes: 4 bits * 216 weights -> 108 bytes + 1 spare
    consts = [c for c in _constants(out) if c.dtype == "uint8"]
    assert sorted(c.shape[0] for c in consts) == sorted([(216 * 4 + 7) // 8 + 1, (2 * 72 * 5 + 7) // 8 + 1, (2048 * 3 + 7) // 8 + 1])


def _constants(mod):
    found = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            for a in getattr(b.value, "args", []):
                for item in (a.fields if hasattr(a, "fields") else [a]):
                    if hasattr(item, "value") and hasattr(item.value, "numpy"):
                        found.append(item.value.numpy())
    return found


def ort_with_decoded_weights(plan, x):
    """onnxruntime on the ONNX model whose weights are replaced by their decoded PoT values."""
    loaded, mod = imported()
    layers = {l.name: l for l in S.find_layers(mod)}
    model = tiny_model()
    inits = {i.name: i for i in model.graph.initializer}
    for name, cfg in plan.items():
        wd = S.decoded_weight(layers[name], *S.encode(layers[name], cfg))
        onnx_name, transposed = ONNX_WEIGHT[name]
        inits[onnx_name].CopyFrom(nh.from_array(np.ascontiguousarray(wd.T if transposed else wd), onnx_name))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("cfg", [S.ShiftConfig(4), S.ShiftConfig(3, 2, False)])
def test_rewritten_module_equals_decoded_weights_in_onnxruntime(cfg):
    loaded, mod = imported()
    plan = {l.name: cfg for l in S.find_layers(mod)}
    x = np.random.default_rng(3).normal(size=(1, 3, 8, 8)).astype(np.float32)
    got = evaluate.relax_outputs(ShiftWeights(plan)(mod), loaded.inputs, [{"x": x}])[0][0]
    want = ort_with_decoded_weights(plan, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    fp32 = evaluate.onnxruntime_outputs(loaded.proto, [{"x": x}])[0][0]
    assert np.linalg.norm(got - fp32) > 1e-3  # the encoding really changed the weights


def test_compile_shift_bits_4_report_and_run(tmp_path):
    # without bias correction the build is exactly the model with decoded weights (tests/test_shift_bias.py: with it)
    cm = shiftc.compile(tiny_model(), "x86", shift_bits=4, shift_skip="last", shift_bias_correction=False, output=tmp_path / "a")
    stage = next(s for s in cm.report.stages if s.name == "shift")
    assert stage.lossy and stage.error["samples"] == 4 and stage.error["rel_l2"] > 0
    rows = {r["layer"]: r for r in stage.rows}
    assert list(rows) == ["conv2d_0", "conv2d_1", "matmul_0", "matmul_1"]
    assert rows["matmul_1"]["bits"] is None and rows["matmul_1"]["kernel"] == "fp32 (skipped)"
    for name in ("conv2d_0", "conv2d_1", "matmul_0"):
        r = rows[name]
        assert r["bits"] == 4 and r["terms"] == 1 and r["shift_adds"] == r["macs"] > 0
        assert 0 < r["weight_rel_l2"] < 0.3 and 0 < r["output_rel_l2"] < 0.5
        assert r["kernel"] == S.KERNEL_FORM and r["op"] in ("conv2d", "matmul") and r["weight_shape"]
    assert stage.summary["rewritten"] == 3 and stage.summary["skipped"] == ["matmul_1"]
    assert 4 < stage.summary["bits_per_weight"] < 5.5  # 4-bit codes + per-channel alpha + bias + spare byte
    assert stage.summary["code_bits_per_weight"] < stage.summary["bits_per_weight"]
    assert rows["conv2d_0"]["bias_bytes"] == 8 * 4 and rows["conv2d_1"]["bias_bytes"] == 0  # only the model's own biases
    x = np.random.default_rng(3).normal(size=(1, 3, 8, 8)).astype(np.float32)
    plan = {n: S.ShiftConfig(4) for n in ("conv2d_0", "conv2d_1", "matmul_0")}
    want = ort_with_decoded_weights(plan, x)
    got = shiftc.load(tmp_path / "a").run(x)["y"]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert any(s["name"] == "shift" and len(s["rows"]) == 4 for s in meta["report"]["stages"])


def test_accuracy_budget_is_met_and_reported():
    budget = 0.05
    cm = shiftc.compile(tiny_model(), "x86", accuracy_budget=budget)
    stage = next(s for s in cm.report.stages if s.name == "shift")
    assert stage.summary["mode"] == "auto"
    assert stage.error["rel_l2"] <= budget * 1.01  # measured by the pipeline against onnxruntime
    assert any(n.startswith("auto allocation: tau=") for n in stage.notes)
    assert all(r["bits"] in (3, 4, 5) and r["terms"] in (1, 2, 3) for r in stage.rows)


@pytest.mark.parametrize("opts,match", [
    ({"shift_bits": 6}, "--shift-bits"), ({"shift_bits": 4, "shift_zero": "maybe"}, "--shift-zero"),
    ({"shift_bits": 4, "shift_terms": 4}, "--shift-terms"), ({"accuracy_budget": -1.0}, "--accuracy-budget"),
    ({"shift_bits": 4, "shift_skip": "conv("}, "regex"),
])
def test_bad_options_are_input_errors(opts, match):
    with pytest.raises(InputError, match=match):
        shiftc.compile(tiny_model(), "x86", **opts)


def test_cli_flags(tmp_path):
    from shiftc.cli import main

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), str(path))
    res = CliRunner().invoke(main, ["compile", str(path), "--shift-bits", "5", "--shift-zero", "with-zero", "--shift-terms", "2", "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    stage = next(s for s in json.loads(res.output)["report"]["stages"] if s["name"] == "shift")
    assert {(r["bits"], r["terms"], r["zero"]) for r in stage["rows"]} == {(5, 2, "with-zero")}
    bad = CliRunner().invoke(main, ["compile", str(path), "--shift-bits", "7", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--shift-bits" in bad.output
