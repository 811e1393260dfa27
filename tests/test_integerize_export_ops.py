"""Integer rules of layout, reduction and linear ops that public exports contain, on graphs as the
ONNX importer emits them: Gather by constant indices, ReduceMax/ReduceMin, nearest Resize by
integer factors, bilinear Resize, Pad and ConvTranspose -- bit for bit against reference
compositions, and within a stated bound of the FP32 model."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from shiftc import reference as ref
from shiftc.passes import float_scan
from shiftc.passes.integerize import scales as iq
from shiftc.reference import quant as rq
from shiftc.reference import resize as rr
from test_integerize import Compiled, deq, near_fp32, rand
from test_integerize_activation import compiled, onnx_mod, only_input, output_name


def ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def test_gather_by_constant_indices_and_reduce_max_min(rng):
    nodes = [helper.make_node("Gather", ["x", "idx"], ["g"], axis=1),
             helper.make_node("ReduceMax", ["g"], ["mx"], axes=[2], keepdims=1),
             helper.make_node("ReduceMin", ["g"], ["mn"], axes=[2], keepdims=1), helper.make_node("Sub", ["mx", "mn"], ["y"])]
    mod_inits = [("idx", np.array([3, 0, -1], np.int64))]
    c = compiled(rng, nodes, (1, 4, 5, 2), mod_inits, out_shape=(1, 3, 1, 2))
    x = rand(rng, (1, 4, 5, 2), 2.0)
    xq, want_f = only_input(c, x)
    g = xq[:, [3, 0, 3]].astype(np.int64)
    s, sy = c.s("x"), c.s(output_name(c), 16)
    want = ref.add_int(g.max(axis=2, keepdims=True), s, -g.min(axis=2, keepdims=True), s, sy, 16)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, sy))
    # x rounded to int8 (two roundings of s / 2 in the difference), the sum's int16 step
    near_fp32(got, want_f, atol=s * 1.01 + sy)
    assert float_scan.float_ops(c.mod) == []


@pytest.mark.parametrize("mode, nearest", [("half_pixel", "round_prefer_floor"), ("asymmetric", "floor")])
def test_nearest_resize_by_integer_factors_is_exact(rng, mode, nearest):
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest", coordinate_transformation_mode=mode, nearest_mode=nearest)
    c = compiled(rng, [node], (1, 2, 3, 4), [("sc", np.array([1, 1, 2, 3], np.float32))], out_shape=(1, 2, 6, 12))
    x = rand(rng, (1, 2, 3, 4), 2.0)
    xq, want_f = only_input(c, x)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(ref.nearest_upsample(xq, (2, 3)), c.s("x")))
    # exact: only x's int8 rounding
    near_fp32(got, want_f, atol=c.s("x") * 0.5 * (1 + 1e-5))
    assert c.row("nearest_upsample")["replaces"] is None


BILINEAR = [("half_pixel", "sizes", (1, 2, 8, 11)), ("pytorch_half_pixel", "scales", (1, 2, 10, 14)),
            ("align_corners", "sizes", (1, 2, 9, 4)), ("asymmetric", "scales", (1, 2, 15, 7))]


@pytest.mark.parametrize("mode, given, out_shape", BILINEAR)
def test_bilinear_resize_on_the_integers(rng, mode, given, out_shape):
    """Bilinear Resize (scales or sizes input) stays on the integers at the input's scale: the
    reference's Q0.15 interpolation bit for bit, within half a step of float bilinear of the same
    integers, and within a step of FP32 (plus x's own int8 rounding)."""
    factor = np.array(out_shape, np.float32) / np.array((1, 2, 5, 7), np.float32)
    const = np.array(out_shape, np.int64) if given == "sizes" else factor
    inputs = ["x", "", "", "c"] if given == "sizes" else ["x", "", "c"]
    node = helper.make_node("Resize", inputs, ["y"], mode="linear", coordinate_transformation_mode=mode)
    c = compiled(rng, [node], (1, 2, 5, 7), [("c", const)], out_shape=out_shape)
    x = rand(rng, (1, 2, 5, 7), 2.0)
    xq, want_f = only_input(c, x)
    s = c.s("x")
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(rr.bilinear_resize_int(xq, out_shape[2:], mode), s))
    # what the integer arithmetic adds to float bilinear of the same integers: the final rounding
    # (s / 2) plus the Q0.15 weights' rounding, 2**-16 of each axis's tap difference (<= 255 steps)
    added = np.abs(got - rr.bilinear_resize_float(xq * np.float64(s), out_shape[2:], mode)).max()
    assert added <= s * (0.5 + 2 * 255 * 2.0**-16) * (1 + 1e-5), (added, s)
    near_fp32(got, want_f, atol=s * (1 + 2 * 255 * 2.0**-16) * (1 + 1e-5))  # and x's int8 rounding (s / 2)
    assert c.row("bilinear_resize")["mode"] == mode
    assert float_scan.float_ops(c.mod) == []


def test_upsample_nearest_replaces_bilinear_only_by_integer_factors(rng):
    """``upsample="nearest"`` swaps a bilinear Resize by integer factors for nearest (reported as a
    replacement); one by 128 -> 224-like factors has no nearest form and stays bilinear."""
    doubled = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")
    c = Compiled(onnx_mod([doubled], (1, 2, 4, 4), [("sc", np.array([1, 1, 2, 2], np.float32))], (1, 2, 8, 8)),
                 [{"x": rand(rng, (1, 2, 4, 4))} for _ in range(2)], upsample="nearest")
    assert c.row("nearest_upsample")["replaces"] == "linear"
    odd = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear")
    c = Compiled(onnx_mod([odd], (1, 2, 4, 4), [("sz", np.array([1, 2, 7, 7], np.int64))], (1, 2, 7, 7)),
                 [{"x": rand(rng, (1, 2, 4, 4))} for _ in range(2)], upsample="nearest")
    assert c.row("bilinear_resize")["mode"] == "half_pixel" and not any(r["op"] == "nearest_upsample" for r in c.report.rows)


PADS = np.array([0, 0, 1, 3, 0, 0, 2, 1], np.int64)  # H: 1 before, 2 after; W: 3 before, 1 after
NP_MODE = {"constant": "constant", "reflect": "reflect", "edge": "edge"}


@pytest.mark.parametrize("mode, value", [("constant", 0.0), ("constant", 0.7), ("reflect", 0.0), ("edge", 0.0)])
def test_pad_on_the_integers(rng, mode, value):
    """ONNX Pad (imported as relax.nn.pad) on the int8 codes at x's scale: np.pad of the codes with
    the pad value quantised like an input, bit for bit; within half a step of FP32."""
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
    c = compiled(rng, [node], (1, 2, 5, 6), [("p", PADS), ("v", np.float32(value))], out_shape=(1, 2, 8, 10))
    x = rand(rng, (1, 2, 5, 6), 2.0)
    xq, want_f = only_input(c, x)
    s = c.s("x")
    code = rq.quantize(np.float32(value), s, 8)
    width = list(zip(PADS[:4], PADS[4:]))
    want = np.pad(xq, width, NP_MODE[mode], **({"constant_values": code} if mode == "constant" else {}))
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, s))
    near_fp32(got, want_f, atol=s * 0.5 * (1 + 1e-5))  # x and the pad value rounded to the int8 grid
    assert float_scan.float_ops(c.mod) == []


def test_pad_with_minus_flt_max_before_max_pool(rng):
    """A -FLT_MAX pad (``same`` max pooling written out; shiftc refuses non-finite weights, so not
    -inf) becomes the int8 minimum, which no window maximum of real codes loses to: the FP32
    result, to x's rounding."""
    nodes = [helper.make_node("Pad", ["x", "p", "v"], ["xp"], mode="constant"),
             helper.make_node("MaxPool", ["xp"], ["y"], kernel_shape=[3, 3])]
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    c = compiled(rng, nodes, (1, 2, 5, 6), [("p", pads), ("v", np.float32(-np.finfo(np.float32).max))], out_shape=(1, 2, 5, 6))
    x = rand(rng, (1, 2, 5, 6), 2.0)
    xq, want_f = only_input(c, x)
    padded = np.pad(xq.astype(np.int64), [(0, 0), (0, 0), (1, 1), (1, 1)], constant_values=-128)
    want = np.max([padded[:, :, i:i + 5, j:j + 6] for i in range(3) for j in range(3)], axis=0)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, c.s("x")))
    near_fp32(got, want_f, atol=c.s("x") * 0.5 * (1 + 1e-5))


def test_conv_transpose(rng):
    W, b = rand(rng, (4, 3, 3, 3), 0.3), rand(rng, (3,), 0.1)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    c = compiled(rng, [node], (1, 4, 5, 5), [("w", W), ("b", b)], out_shape=(1, 3, 10, 10))
    x = rand(rng, (1, 4, 5, 5), 2.0)
    xq, want_f = only_input(c, x)
    w, sw = iq.weight_codes(W, axis=1)
    s = c.s("x")
    acc = _conv_transpose(xq.astype(np.int64), w.astype(np.int64), 2, 1, 1) + rq.bias_codes(b, s * sw).reshape(1, 3, 1, 1)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(acc, (s * sw).reshape(1, 3, 1, 1)))
    # x and W rounded to int8, exact int32 accumulation
    near_fp32(got, want_f, 0.03)
    assert c.row("conv2d_transpose")["weights"] == "int8 per-channel"


def _conv_transpose(x, w, stride, pad, out_pad):
    """NCHW x IOHW transposed convolution in int64: scatter every input pixel's weighted kernel."""
    n, ci, h, wd = x.shape
    _, co, kh, kw = w.shape
    H, W = (h - 1) * stride + kh, (wd - 1) * stride + kw
    full = np.zeros((n, co, H + out_pad, W + out_pad), np.int64)
    for i in range(h):
        for j in range(wd):
            full[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += np.einsum("nc,cokl->nokl", x[:, :, i, j], w)
    return full[:, :, pad:H + out_pad - pad, pad:W + out_pad - pad]

