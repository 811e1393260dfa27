"""Integer rules of layout, reduction and linear ops that public exports contain, on graphs as the
ONNX importer emits them: Gather by constant indices, ReduceMax/ReduceMin, nearest Resize by
integer factors and ConvTranspose -- bit for bit against reference compositions, and within a
stated bound of the FP32 model."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from shiftc import reference as ref
from shiftc.passes import float_scan
from shiftc.passes.integerize import scales as iq
from shiftc.reference import quant as rq
from test_integerize import deq, near_fp32, rand
from test_integerize_activation import compiled, only_input, output_name


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

