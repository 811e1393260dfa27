"""Integer-mode bias correction (passes/int_bias.py): exact output means from tap means, and the
integer-only model's per-channel mean error against onnxruntime FP32 before and after."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import helper
from tvm import relax

from shiftc.passes import int_bias

from conftest import make_model, ort_run


@pytest.mark.parametrize("groups, stride, padding", [(1, 1, 1), (4, 2, 1), (1, 2, 0)])
def test_tap_means_give_the_exact_conv_output_means(groups, stride, padding):
    rng = np.random.default_rng(groups + stride)
    x = rng.standard_normal((2, 4, 9, 9)) + 1.0
    w = rng.standard_normal((8, 4 // groups, 3, 3))
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((2, 4, 9, 9), "float64"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(xv, relax.const(w, "float64"), strides=stride, padding=padding, groups=groups))
            out = bb.emit_output(c)
        bb.emit_func_output(out)
    mod = bb.get()
    ex = tvm.compile(relax.transform.LegalizeOps()(mod), target="llvm")
    full = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    attrs = mod["main"].body.blocks[0].bindings[0].value.attrs
    got = int_bias.output_means("conv2d", w, int_bias.tap_means(x, w.shape, attrs), groups)
    np.testing.assert_allclose(got, full.mean(axis=(0, 2, 3)), rtol=1e-10, atol=1e-12)


def _biased_net():
    """Conv -> Relu -> Conv on non-negative inputs with a large mean: int8 weight rounding leaves a
    systematic per-channel error ``(W_q - W) E[x]``."""
    rng = np.random.default_rng(3)
    w0, w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32), (rng.standard_normal((6, 8, 3, 3)) * 0.2).astype(np.float32)
    b0, b1 = np.full(8, 0.5, np.float32), np.zeros(6, np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], name="conv0"),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["y"], pads=[1, 1, 1, 1], name="conv1")]
    model = make_model(nodes, [("x", [1, 3, 10, 10])], [("y", [1, 6, 10, 10])], {"w0": w0, "w1": w1, "b0": b0, "b1": b1})
    samples = [{"x": (rng.uniform(0, 4, (1, 3, 10, 10))).astype(np.float32)} for _ in range(8)]
    return model, samples


def _mean_channel_error(cm, model, samples) -> float:
    err = np.mean([cm.run(s)["y"] - ort_run(model, s)[0] for s in samples], axis=0)  # (1, 6, 10, 10)
    return float(np.abs(err.mean(axis=(0, 2, 3))).mean())


@pytest.mark.parametrize("mode", ["full", "weights"])
def test_bias_correction_removes_the_mean_channel_error(compiled, mode):
    """Both modes: ``full`` (weight and input codes) and ``weights`` (the int8 weight rounding only,
    measured on FP32 inputs) remove most of the systematic error of the weight rounding."""
    model, samples = _biased_net()
    before = compiled(model, integer_only=True, calibration=samples)
    after = compiled(model, integer_only=True, calibration=samples, int_bias_correction=mode)
    e0, e1 = _mean_channel_error(before, model, samples), _mean_channel_error(after, model, samples)
    assert e1 < 0.5 * e0, (e0, e1)
    notes = [n for s in after.report.stages if s.name == "integerize" for n in s.notes]
    what = "integer weight and input codes" if mode == "full" else "int8 weight codes"
    assert any(n.startswith(f"bias correction: 2 conv/matmul bias(es) corrected by the mean error of their {what}") for n in notes)


def test_weights_mode_is_the_weight_rounding_times_the_input_tap_means():
    """``inputs=False``: delta = (W_q - W) applied to the FP32 input's tap means, per output channel
    (here the first conv, whose input is the graph input: checked in NumPy)."""
    from onnx import numpy_helper

    from shiftc import calibrate, frontend
    from shiftc.passes.graph import unique_value_names
    from shiftc.passes.integerize.scales import weight_codes

    model, samples = _biased_net()
    mod = unique_value_names(frontend.to_relax(frontend.load(model)))
    deltas = int_bias.measure(mod, samples, calibrate.calibrate(mod, samples, "percentile"), inputs=False)
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    q, s = weight_codes(w["w0"], axis=0)
    xp = np.pad(np.concatenate([smp["x"] for smp in samples]).astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    taps = np.empty((3, 3, 3))  # (input channel, kh, kw)
    for i in range(3):
        for j in range(3):
            taps[:, i, j] = xp[:, :, i:i + 10, j:j + 10].mean(axis=(0, 2, 3))
    want = np.einsum("ocij,cij->o", q * s.reshape(-1, 1, 1, 1) - w["w0"], taps)
    got = [d for d in deltas.values() if d.size == 8]  # conv0 has 8 output channels, conv1 6
    assert len(deltas) == 2 and len(got) == 1
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-9)
