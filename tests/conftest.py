"""Shared test helpers: tiny ONNX graphs and onnxruntime as the reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    """A checked ONNX model from (name, shape[, dtype]) input/output tuples and named arrays."""

    def vi(spec):
        name, shape, *dtype = spec
        return helper.make_tensor_value_info(name, dtype[0] if dtype else TensorProto.FLOAT, shape)

    graph = helper.make_graph(
        nodes,
        "test",
        [vi(i) for i in inputs],
        [vi(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in dict(initializers).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close(got, ref, rtol=1e-4):
    """Relative to the reference's magnitude: |got - ref| <= rtol * max(1, |ref|)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max() <= rtol, f"max relative error {err.max():.3g} > {rtol}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def conv_model(rng):
    """A small Conv+Relu model with a dynamic batch dimension."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv0"), helper.make_node("Relu", ["c"], ["y"], name="relu0")],
        [("x", ["N", 3, 8, 8])],
        [("y", ["N", 4, 8, 8])],
        {"w": w},
    )
