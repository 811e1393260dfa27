"""FP32 compile-and-run against onnxruntime (1e-4 relative) for the op families shiftc meets."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import shiftc
from conftest import assert_close, make_model, ort_run

R = np.random.default_rng(1)


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


def node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, name=f"{op.lower()}_{outs[0]}", **attrs)


CASES = {
    "conv_stride_bias": (
        [node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
        [("x", [1, 3, 9, 9])], [("y", [1, 8, 5, 5])], {"w": f32(8, 3, 3, 3), "b": f32(8)},
    ),
    "conv_depthwise_dilated": (
        [node("Conv", ["x", "w"], ["y"], group=6, pads=[2, 2, 2, 2], dilations=[2, 2])],
        [("x", [1, 6, 7, 7])], [("y", [1, 6, 7, 7])], {"w": f32(6, 1, 3, 3)},
    ),
    "gemm_transb_bias": (
        [node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        [("x", [2, 16])], [("y", [2, 10])], {"w": f32(10, 16), "b": f32(10)},
    ),
    "matmul_3d": (
        [node("MatMul", ["x", "w"], ["y"])],
        [("x", [1, 5, 12])], [("y", [1, 5, 7])], {"w": f32(12, 7)},
    ),
    "conv_batchnorm": (
        [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["y"], epsilon=1e-5)],
        [("x", [1, 3, 6, 6])], [("y", [1, 4, 6, 6])],
        {"w": f32(4, 3, 3, 3), "g": f32(4), "beta": f32(4), "m": f32(4), "v": np.abs(f32(4)) + 0.5},
    ),
    # a conv's NHWC layout must not spread to the ConvTranspose after it (DBNet-style decoder)
    "conv_then_conv_transpose": (
        [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("ConvTranspose", ["c", "wt", "bt"], ["y"], strides=[2, 2])],
        [("x", [1, 3, 8, 8])], [("y", [1, 5, 16, 16])], {"w": f32(4, 3, 3, 3), "wt": f32(4, 5, 2, 2), "bt": f32(5)},
    ),
    "layernorm": (
        [node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
        [("x", [1, 4, 16])], [("y", [1, 4, 16])], {"g": f32(16), "b": f32(16)},
    ),
    "softmax": (
        [node("Softmax", ["x"], ["y"], axis=-1)],
        [("x", [2, 3, 10])], [("y", [2, 3, 10])], {},
    ),
    "gelu_erf": (
        [node("Div", ["x", "sqrt2"], ["d"]), node("Erf", ["d"], ["e"]), node("Add", ["e", "one"], ["a"]),
         node("Mul", ["x", "a"], ["m"]), node("Mul", ["m", "half"], ["y"])],
        [("x", [1, 4, 8])], [("y", [1, 4, 8])],
        {"sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)},
    ),
    "resize_linear": (
        [node("Resize", ["x", "", "scales"], ["y"], mode="linear")],
        [("x", [1, 2, 4, 4])], [("y", [1, 2, 8, 8])], {"scales": np.array([1, 1, 2, 2], np.float32)},
    ),
    "resize_linear_sizes_align_corners": (
        [node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", coordinate_transformation_mode="align_corners")],
        [("x", [1, 2, 4, 5])], [("y", [1, 2, 7, 3])], {"sizes": np.array([1, 2, 7, 3], np.int64)},
    ),
    **{f"pad_{mode}": (  # imported as one relax.nn.pad (shiftc.frontend), legalised to TOPI's kernels
        [node("Pad", ["x", "pads", "value"], ["y"], mode=mode)],
        [("x", [1, 3, 6, 7])], [("y", [1, 3, 9, 11])],
        {"pads": np.array([0, 0, 1, 3, 0, 0, 2, 1], np.int64), "value": np.float32(0.5)},
    ) for mode in ("constant", "reflect", "edge")},
    "resize_nearest": (
        [node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
        [("x", [1, 2, 4, 4])], [("y", [1, 2, 8, 8])], {"scales": np.array([1, 1, 2, 2], np.float32)},
    ),
    "add_mul_broadcast": (
        [node("Add", ["x", "b"], ["a"]), node("Mul", ["a", "s"], ["y"])],
        [("x", [1, 3, 4, 4])], [("y", [1, 3, 4, 4])], {"b": f32(3, 1, 1), "s": f32(1, 3, 1, 1)},
    ),
    "pooling": (
        [node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         node("AveragePool", ["p"], ["q"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], count_include_pad=0),
         node("GlobalAveragePool", ["q"], ["y"])],
        [("x", [1, 4, 8, 8])], [("y", [1, 4, 1, 1])], {},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_onnxruntime(case):
    nodes, inputs, outputs, inits = CASES[case]
    model = make_model(nodes, inputs, outputs, inits)
    feeds = {name: f32(*shape) for name, shape in inputs}
    compiled = shiftc.compile(model, "x86")
    got = compiled.run(feeds)
    (ref,) = ort_run(model, feeds)
    assert_close(got[outputs[0][0]], ref)


def test_multiple_inputs_and_outputs_keep_their_names():
    model = make_model(
        [node("Add", ["a", "b"], ["s"]), node("Mul", ["a", "b"], ["p"])],
        [("a", [2, 3]), ("b", [2, 3])], [("s", [2, 3]), ("p", [2, 3])],
    )
    a, b = f32(2, 3), f32(2, 3)
    compiled = shiftc.compile(model, "x86")
    by_dict = compiled.run({"b": b, "a": a})
    positional = compiled.run(a, b)
    assert list(by_dict) == ["s", "p"]
    np.testing.assert_allclose(by_dict["s"], a + b, rtol=1e-6)
    np.testing.assert_allclose(positional["p"], a * b, rtol=1e-6)
