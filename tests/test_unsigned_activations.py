"""Unsigned u8 activations (issue 13 item 5): where calibration proves a value non-negative (after
ReLU / ReLU6 / a clip at >= 0) it enters convs and matmuls as uint8 codes ``[0, 255]`` at scale
``T / 255``; u8 x s8 accumulates in int32. The requantiser that makes them, the u8 x s8 conv and
matmul and the lowered requantiser match ``shiftc.reference`` bit for bit, on x86 and on arm."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper
from tvm import relax, te

import shiftc
from shiftc import reference as R
from shiftc.calibrate import Calibration, calibrate
from shiftc.kernels import integer as K
from helpers.toolchains import needs_arm
from shiftc.schedules.int_relax import LowerIntElementwise

from conftest import make_model, ort_run

TARGET = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
EX = settings(max_examples=20, deadline=None)
_BUILT: dict = {}


def _run(key, make, *arrays):
    """Build ``make() -> (inputs, output)`` once per key and run it on ``arrays``."""
    if key not in _BUILT:
        ins, out = make()
        _BUILT[key] = (tvm.compile(te.create_prim_func(list(ins) + [out]), target=TARGET), ins, out)
    lib, ins, out = _BUILT[key]
    args = [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=str(t.dtype)), tvm.cpu()) for a, t in zip(arrays, ins)]
    o = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype)), tvm.cpu())
    lib(*args, o)
    return o.numpy()


def test_reference_saturates_unsigned_to_0_255():
    z = np.array([-(2**31), -1, 0, 1, 300, 2**31 - 1], np.int64)
    got = R.requantize(z, 1 << 30, 30, 8, unsigned=True)
    assert got.dtype == np.uint8 and got.tolist() == [0, 0, 0, 1, 255, 255]
    assert R.code_range(8, unsigned=True) == (0, 255) and R.code_range(8) == (-128, 127)


@EX
@given(hnp.arrays(np.int32, (4, 16), elements=st.integers(-(2**31), 2**31 - 1)), st.sampled_from([1e-5, 0.0123, 0.5]))
def test_unsigned_requantize_kernel_matches_reference(z, scale):
    m, e = R.dyadic(scale)
    got = _run(("u_rq", m, e), lambda: ((x := te.placeholder((4, 16), "int32"),), K.requantize(x, m, e, 8, unsigned=True)), z)
    assert got.dtype == np.uint8 and np.array_equal(got, R.requantize(z, m, e, 8, unsigned=True))


@EX
@given(hnp.arrays(np.int32, (2, 3, 5), elements=st.integers(-(2**31), 2**31 - 1)), st.lists(st.floats(1e-6, 1.0), min_size=3, max_size=3))
def test_unsigned_requantize_per_axis_kernel_matches_reference(z, scales):
    m, e = R.dyadic(np.array(scales))

    def make():
        x, mt, et = te.placeholder((2, 3, 5), "int32"), te.placeholder((3,), "int32", "m"), te.placeholder((3,), "int32", "e")
        return (x, mt, et), K.requantize_per_axis(x, mt, et, axis=1, bits=8, unsigned=True)

    got = _run("u_rq_axis", make, z, m.astype(np.int32), e.astype(np.int32))
    assert np.array_equal(got, R.requantize(z, m, e, 8, axis=1, unsigned=True))


def _relax_build(f: relax.Function):
    mod = LowerIntElementwise()(tvm.IRModule({"main": f}))
    return relax.VirtualMachine(tvm.compile(relax.transform.LegalizeOps()(mod), target=TARGET), tvm.cpu())


@pytest.mark.parametrize("groups", [1, 4])
def test_u8_x_s8_conv2d_and_matmul_match_reference(groups):
    """The Relax ops the integeriser emits (uint8 data, int8 weights, int32 out), built for x86."""
    rng = np.random.default_rng(groups)
    x = rng.integers(0, 256, (1, 4, 7, 7)).astype(np.uint8)
    x[0, 0] = 255  # full-scale codes: 255 * 127 * taps must not wrap
    w = rng.integers(-128, 128, (8, 4 // groups, 3, 3)).astype(np.int8)
    wm = rng.integers(-128, 128, (4, 6)).astype(np.int8)
    bb = relax.BlockBuilder()
    xv, mv = relax.Var("x", relax.TensorType((1, 4, 7, 7), "uint8")), relax.Var("m", relax.TensorType((3, 4), "uint8"))
    with bb.function("main", [xv, mv]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(xv, relax.const(w), strides=2, padding=1, groups=groups, out_dtype="int32"))
            mm = bb.emit(relax.op.matmul(mv, relax.const(wm), out_dtype="int32"))
            out = bb.emit_output(relax.Tuple([c, mm]))
        bb.emit_func_output(out)
    xm = rng.integers(0, 256, (3, 4)).astype(np.uint8)
    vm = _relax_build(bb.get()["main"])
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(xm))
    assert np.array_equal(got[0].numpy(), R.conv2d_int(x, w, stride=2, padding=1, groups=groups))
    assert np.array_equal(got[1].numpy(), R.matmul_int(xm, wm))


def _relu_net():
    """Conv -> Relu -> Conv -> Relu6 (Clip) -> Conv: two non-negative conv inputs."""
    rng = np.random.default_rng(0)
    w = [(rng.standard_normal(s) * 0.3).astype(np.float32) for s in ((6, 3, 3, 3), (6, 6, 3, 3), (4, 6, 1, 1))]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1], name="conv0"),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    inits = {"w0": w[0], "w1": w[1], "w2": w[2], "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    model = make_model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])], inits)
    samples = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    return model, samples


def test_calibration_records_non_negative_values():
    model, samples = _relu_net()
    from shiftc.frontend import load, to_relax

    mod = to_relax(load(model))
    calib = calibrate(mod, samples)
    assert calib.nonnegative and calib.nonnegative < set(calib.thresholds)
    name = max(sorted(calib.nonnegative), key=calib.thresholds.get)  # a value with a non-zero range
    assert calib.scale(name, 8, unsigned=True) == pytest.approx(calib.thresholds[name] / 255)
    assert Calibration("x", 1, {"v": 2.0}).nonnegative == frozenset()


def test_integer_only_feeds_u8_after_relu_and_s8_elsewhere(compiled):
    model, samples = _relu_net()
    cm = compiled(model, integer_only=True, calibration=samples)
    rows = [r for s in cm.report.stages if s.name == "integerize" for r in s.rows if r["op"] == "conv2d"]
    assert [r["input"] for r in rows] == ["s8", "u8", "u8"]
    ref = ort_run(model, samples[0])[0]
    got = cm.run(samples[0])["y"]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_no_unsigned_activations_feeds_s8_everywhere(compiled):
    """``unsigned_activations=False`` (``--no-unsigned-activations``): the same net, every conv input signed."""
    model, samples = _relu_net()
    cm = compiled(model, integer_only=True, calibration=samples, unsigned_activations=False)
    rows = [r for s in cm.report.stages if s.name == "integerize" for r in s.rows if r["op"] == "conv2d"]
    assert [r["input"] for r in rows] == ["s8", "s8", "s8"]
    ref = ort_run(model, samples[0])[0]
    assert np.abs(cm.run(samples[0])["y"] - ref).max() <= 0.05 * np.abs(ref).max()


@needs_arm
def test_u8_integer_graph_is_bit_equal_on_arm(compiled, tmp_path):
    """The same integer-only graph under qemu-aarch64: every output bit equal to x86's."""
    model, samples = _relu_net()
    x86 = compiled(model, integer_only=True, calibration=samples).run(samples[1])["y"]
    on_arm = shiftc.compile(model, "arm", integer_only=True, calibration=samples, output=tmp_path / "a").run(samples[1])["y"]
    assert np.array_equal(on_arm, x86)
