"""The ``vta`` target: partition of the integerised graph, simulator runs bit-exact against the x86
integer path, the report, and required options."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper

import shiftc
from shiftc.cli import main as cli_main
from shiftc.core.errors import InputError
from shiftc.targets.vta import partition

from conftest import make_model

RNG = np.random.default_rng(7)


def _w(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def synthetic_cnn():
    """conv3x3+relu+maxpool -> depthwise conv+relu -> strided conv+relu -> mean -> dense+relu -> dense."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=20),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["d4"], transB=1),
        helper.make_node("Relu", ["d4"], ["r4"]),
        helper.make_node("Gemm", ["r4", "w5", "b5"], ["y"], transB=1),
    ]
    init = {"w1": _w(20, 3, 3, 3), "b1": _w(20, scale=0.1), "wd": _w(20, 1, 3, 3), "bd": _w(20, scale=0.1),
            "w3": _w(24, 20, 3, 3, scale=0.1), "b3": _w(24, scale=0.1), "w4": _w(18, 24), "b4": _w(18, scale=0.1),
            "w5": _w(5, 18), "b5": _w(5, scale=0.1)}
    return make_model(nodes, [("x", [1, 3, 12, 12])], [("y", [1, 5])], init)


MODEL = synthetic_cnn()
CALIB = [{"x": RNG.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(8)]
INPUTS = [RNG.standard_normal((1, 3, 12, 12)).astype(np.float32) * 1.5 for _ in range(4)]


@pytest.fixture(scope="module", params=[None, 4], ids=["int8", "shift4"])
def pair(request):
    opts = {} if request.param is None else {"shift_bits": request.param}
    vta = shiftc.compile(MODEL, "vta", calibration=CALIB, **opts)
    x86 = shiftc.compile(MODEL, "x86", calibration=CALIB, integer_only=True, requant="pow2", **opts)
    return request.param, vta, x86


def _stage(cm):
    return next(s for s in cm.meta["report"]["stages"] if s["name"] == "vta")


def test_vta_bit_exact_with_x86_integer_path(pair):
    shift_bits, vta, x86 = pair
    for x in INPUTS:
        a, b = vta.run(x)["y"], x86.run(x)["y"]
        assert np.array_equal(a, b), (shift_bits, a, b)
    calls = vta._session.counters.calls
    assert len(calls) == 4 and all(n == len(INPUTS) for n in calls.values())
    # the runtime's cycle counts are the report's (the cycle model does not depend on the data)
    per_layer = [row["cycles"] for row in _stage(vta)["summary"]["layers"]]
    assert sorted(vta._session.counters.cycles.values()) == sorted(c * len(INPUTS) for c in per_layer)


def test_partition_report(pair):
    shift_bits, vta, _ = pair
    st = _stage(vta)
    s = st["summary"]
    layers = s["layers"]
    assert [row["kind"] for row in layers] == ["conv2d", "conv2d", "dense", "dense"]
    assert all(row["wgt_mode"] == ("shift" if shift_bits else "int8") for row in layers)
    ops = "macs" if shift_bits is None else "shift_adds"
    assert all(row[ops] > 0 for row in layers) and s["total_cycles"] == sum(row["cycles"] for row in layers)
    assert layers[0]["host_after"] == ["relax.nn.max_pool2d"] and layers[0]["out_bits"] == 8
    assert layers[-1]["out_bits"] == 32  # raw int32 logits go to the host dequantiser
    depthwise = [r for r in st["rows"] if r["placement"] == "host" and "groups=20" in r["reason"]]
    assert len(depthwise) == 1 and "conv2d" in depthwise[0]["op"]
    assert {r["placement"] for r in st["rows"]} == {"vta", "host"}
    pool = [r for r in st["rows"] if r["op"] == "nn.max_pool2d"]
    assert len(pool) == 1 and pool[0]["placement"] == "host" and "moved after VTA layer 0" in pool[0]["reason"]
    kinds = {(r["kind"], r["nodsp"]) for r in s["resources"]}
    assert {("mac", False), ("shift", False)} <= kinds
    assert set(s["optional_tools"]) == {"iverilog", "verilator", "yosys"}
    files = vta.meta["files"]
    assert {"vta/layers.json", "vta/layer_0.insn", "vta/layer_0.dram", "model.so"} <= set(files)
    doc = json.loads((vta.path / "vta" / "layers.json").read_text())
    assert doc["format"] == "shiftc-vta/1" and len(doc["layers"]) == 4


def test_reload_runs_the_same(pair, tmp_path):
    _, vta, _ = pair
    again = shiftc.load(vta.save(tmp_path / "a"))
    assert np.array_equal(again.run(INPUTS[0])["y"], vta.run(INPUTS[0])["y"])


def test_conflicting_options_are_input_errors():
    with pytest.raises(InputError, match="requant='pow2'"):
        shiftc.compile(MODEL, "vta", requant="dyadic")
    with pytest.raises(InputError, match="integer_only=True"):
        shiftc.compile(MODEL, "vta", integer_only=False)
    r = CliRunner().invoke(cli_main, ["compile", "m.onnx", "-t", "vta", "-o", "out", "--requant", "dyadic"])
    assert r.exit_code == 2 and "requant" in r.output


def test_partition_ir_before_after():
    """conv2d -> add -> maximum -> requantiser becomes one call_dps_packed."""
    import tvm
    from tvm import relax

    from shiftc.kernels import integer as K

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 6, 6), "int8"))
    w = RNG.integers(-127, 128, (32, 16, 3, 3)).astype(np.int8)
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1, 1, 1], out_dtype="int32"))
            a = bb.emit(relax.op.add(c, relax.const(np.ones((1, 32, 1, 1), np.int32))))
            r = bb.emit(relax.op.maximum(a, relax.const(0, "int32")))
            m, e = relax.const(np.ones(32, np.int64)), relax.const(np.full(32, 9, np.int32))
            q = bb.emit(bb.call_te(K.requantize_per_axis, r, m, e, 1, 8, primfunc_name_hint="requant_axis",
                                   primfunc_attrs={"shiftc.requant": "per_axis", "shiftc.axis": 1, "shiftc.bits": 8}))
            out = bb.emit_output(q)
        bb.emit_func_output(out)
    mod = bb.get()
    chains, host = partition.find_layers(mod)
    assert len(chains) == 1 and not host
    assert chains[0].relu and chains[0].out_bits == 8 and list(np.unique(chains[0].shift_e)) == [9]
    new = partition.offload(mod, chains, ["shiftc.vta.test.layer_0"])
    text = new["main"].script()
    assert "call_dps_packed" in text and "conv2d" not in text and "requant_axis" not in text
    assert [gv.name_hint for gv in new.functions] == ["main"]
    assert isinstance(new["main"], tvm.relax.Function)


def _epilogue_graph(lower, upper=None):
    """conv2d -> add -> maximum(., per-channel const) [-> minimum(., per-channel const)] ->
    max_pool2d -> requantiser: the integeriser's form of a shift kernel's folded clamp."""
    from tvm import relax

    from shiftc.kernels import integer as K

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 6, 6), "int8"))
    w = RNG.integers(-127, 128, (32, 16, 3, 3)).astype(np.int8)
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1, 1, 1], out_dtype="int32"))
            r = bb.emit(relax.op.add(c, relax.const(np.ones((1, 32, 1, 1), np.int32))))
            r = bb.emit(relax.op.maximum(r, relax.const(np.asarray(lower, np.int32).reshape(1, 32, 1, 1))))
            if upper is not None:
                r = bb.emit(relax.op.minimum(r, relax.const(np.asarray(upper, np.int32).reshape(1, 32, 1, 1))))
            p = bb.emit(relax.op.nn.max_pool2d(r, pool_size=[2, 2], strides=[2, 2]))
            m, e = relax.const(np.ones(32, np.int64)), relax.const(np.full(32, 9, np.int32))
            q = bb.emit(bb.call_te(K.requantize_per_axis, p, m, e, 1, 8, primfunc_name_hint="requant_axis",
                                   primfunc_attrs={"shiftc.requant": "per_axis", "shiftc.axis": 1, "shiftc.bits": 8}))
            out = bb.emit_output(q)
        bb.emit_func_output(out)
    return bb.get()


def test_partition_per_channel_zero_lower_bound_is_relu():
    """``maximum(., zeros per channel)`` (a shift kernel's folded ReLU, integerised) is ReLU: the chain
    absorbs it, the max pool and the requantiser, exactly like ``maximum(., 0)``."""
    chains, host = partition.find_layers(_epilogue_graph(np.zeros(32)))
    assert len(chains) == 1 and not host
    c = chains[0]
    assert c.relu and c.out_bits == 8 and len(c.pools) == 1 and len(c.members) == 5 and not c.notes


@pytest.mark.parametrize("lower, upper", [(np.arange(32) - 3, None), (np.zeros(32), np.full(32, 900))],
                         ids=["lower_not_zero", "upper_bound"])
def test_partition_other_clamps_stay_on_the_host(lower, upper):
    """A lower bound other than 0 or an upper bound is not lowered: the chain ends before it (int32
    output), the clamp, pool and requantiser run on the host, and a note says so."""
    chains, host = partition.find_layers(_epilogue_graph(lower, upper))
    assert len(chains) == 1 and chains[0].out_bits == 32 and not chains[0].pools
    assert chains[0].relu == (upper is not None) and len(chains[0].members) == (3 if upper is not None else 2)
    assert any("stay on the host" in n for n in chains[0].notes)
    assert len(host) == 3  # the clamp, the max pool and the requantiser


@pytest.mark.parametrize("out_bits", [8, 16, 32])
def test_codegen_per_channel_shifts_and_wide_outputs(out_bits):
    """Per-channel SHR amounts from accumulator rows and byte-plane stores match the reference,
    under random module interleavings too (the tokens order the in-place SHR 8 after each STORE)."""
    from helpers.vta_layers import run_layer
    from shiftc.reference.accelerator import qconv2d, qdense
    from shiftc.targets.vta.codegen import QConv2d, QDense
    from shiftc.targets.vta.config import load_config

    rng = np.random.default_rng(out_bits)
    x = rng.integers(-128, 128, (2, 20, 9, 9)).astype(np.int8)
    w = rng.integers(-127, 128, (37, 20, 3, 3)).astype(np.int8)
    b = rng.integers(-5000, 5000, 37).astype(np.int32)
    e = rng.integers(0, 14, 37)
    small = load_config().replace(LOG_ACC_BUFF_SIZE=load_config().LOG_ACC_BUFF_SIZE - 5)  # many tiles
    for relu in (False, True):
        ref = qconv2d(x, w, b, e, 1, 1, relu=relu, out_bits=out_bits)
        assert ref.dtype == np.dtype(f"int{out_bits}")
        for seed in ("program", 0):
            r = run_layer(QConv2d(w, b, e, 1, 1, relu=relu, out_bits=out_bits), x, cfg=small, schedule=seed)
            assert np.array_equal(r.output, ref)
        assert r.report[0].tiling["n_tiles"] > 1
        xd = rng.integers(-128, 128, (3, 70)).astype(np.int8)
        wd = rng.integers(-127, 128, (21, 70)).astype(np.int8)
        ed = rng.integers(0, 12, 21)
        rd = run_layer(QDense(wd, None, ed, relu, out_bits=out_bits), xd)
        assert np.array_equal(rd.output, qdense(xd, wd, None, ed, relu, out_bits=out_bits))
        if out_bits < 32:  # left shifts (negative e) on some channels, or on all
            for el in (rng.integers(-3, 3, 21), np.full(21, -2)):
                rl = run_layer(QDense(wd, None, el, relu, out_bits=out_bits), xd)
                ref = qdense(xd, wd, None, el, relu, out_bits=out_bits)
                assert np.array_equal(rl.output, ref) and np.any(ref == (2 ** (out_bits - 1) - 1))
