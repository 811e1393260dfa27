"""Shared test helpers: tiny ONNX graphs, onnxruntime as the reference, and session-scoped real
models (exports and compiles made once per test session; tests that use them must not change them)."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

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


def conv_relu_model(rng) -> onnx.ModelProto:
    """A small Conv+Relu model with a dynamic batch dimension; its weights are ``rng``'s next draws."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv0"), helper.make_node("Relu", ["c"], ["y"], name="relu0")],
        [("x", ["N", 3, 8, 8])],
        [("y", ["N", 4, 8, 8])],
        {"w": w},
    )


@pytest.fixture
def conv_model(rng):
    """conv_relu_model drawn from the test's ``rng`` (so the test's own draws follow the weights')."""
    return conv_relu_model(rng)


# ----------------------------------------------------------------------------- shared real models
def _freeze(value):
    """A hashable key for compile arguments: paths, ONNX protos, arrays, and lists/dicts of them."""
    if isinstance(value, Path):  # and its bytes, should a file at that path be rewritten
        digest = hashlib.sha256(value.read_bytes()).hexdigest() if value.is_file() else None
        return ("path", str(value.resolve()), digest)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, onnx.ModelProto):
        return ("onnx", hashlib.sha256(value.SerializeToString(deterministic=True)).hexdigest())
    if isinstance(value, np.ndarray):
        return ("array", value.shape, str(value.dtype), hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_freeze(v) for v in value))
    raise TypeError(f"compiled(): cannot key an argument of type {type(value).__name__}; pass lists, dicts, arrays or paths")


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """``compiled(model, target="x86", **options)``: ``shiftc.compile``'s model, built once per session
    for each distinct set of arguments (calibration data is keyed by its bytes).

    Every call returns a freshly loaded ``CompiledModel`` (its own runtime session and counters) of
    the one artifact folder; a test that changes the folder must copy it first. The key is the
    arguments only: a compile under a monkeypatch (or any other changed state) must call
    ``shiftc.compile`` itself.
    """
    import shiftc

    folders: dict = {}

    def get(model, target="x86", **options):
        model_key = _freeze(Path(model) if isinstance(model, str) else model)  # a path given as str or Path
        key = (model_key, target, _freeze(options))
        if key not in folders:
            out = tmp_path_factory.mktemp(f"compiled-{target}") / "artifact"
            shiftc.compile(model, target, output=out, **options)
            folders[key] = out
        return shiftc.load(folders[key])

    return get


@pytest.fixture(scope="session")
def mbv2_onnx(tmp_path_factory):
    """MobileNetV2 with ImageNet weights exported to ONNX (examples/mobilenetv2.py), once a session."""
    from examples.mobilenetv2 import export_mobilenetv2

    return export_mobilenetv2(tmp_path_factory.mktemp("mbv2") / "mobilenetv2.onnx")


@pytest.fixture(scope="session")
def mbv2_x86_artifact(mbv2_onnx, tmp_path_factory):
    """``shiftc compile mobilenetv2.onnx --target x86 -o DIR`` through the CLI, once a session: DIR."""
    from click.testing import CliRunner

    from shiftc.cli import main

    out = tmp_path_factory.mktemp("mbv2-x86") / "out"
    res = CliRunner().invoke(main, ["compile", str(mbv2_onnx), "--target", "x86", "-o", str(out)])
    assert res.exit_code == 0, res.stderr
    return out


@pytest.fixture(scope="session")
def minilm_model():
    """A loader of MiniLM's torch model (examples.minilm.load_model()), which loads it on the first
    call of the session; call it after any skip check. Callers must not change the model."""
    from examples import minilm

    return functools.cache(minilm.load_model)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running real-model checks (deselect with -m 'not slow')")
    # Tests never touch the network: shiftc refuses to download (the aarch64 TVM runtime comes from
    # scripts/setup.sh's `shiftc targets --prefetch`), here and in the CLI subprocesses tests start.
    os.environ["SHIFTC_OFFLINE"] = "1"
