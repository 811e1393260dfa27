"""Frontend graph simplification: shape computations that exporters emit (``Shape`` -> ``Gather`` ->
arithmetic feeding ``Pad``/``Reshape``) are folded after the inputs are pinned, and ``-1`` input dims
accept a pin. Each model must compile FP32 and match onnxruntime on the original graph."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest

import shiftc
from shiftc import frontend
from shiftc.core.errors import InputError, UnsupportedModelError
from conftest import ort_run

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
nn, F = torch.nn, torch.nn.functional

ROOT = Path(__file__).resolve().parents[1]


class SamePadConv(nn.Module):
    """TF-style "same" padding computed from the input's runtime shape (as timm's ``pad_same``)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        ih, iw = x.shape[-2], x.shape[-1]
        ph = torch.clamp((ih + 1) // 2 * 2 - 2 + 3 - ih, min=0)
        pw = torch.clamp((iw + 1) // 2 * 2 - 2 + 3 - iw, min=0)
        return torch.relu(self.conv(F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])))


class Attention(nn.Module):
    """ViT-style multi-head attention with ``x.reshape(x.shape[0], -1, heads, d)``."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(x.shape[0], -1, self.heads, self.d).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) * self.d**-0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


def export(make_module, shape, dynamic_axes) -> onnx.ModelProto:
    """``make_module()`` exported to ONNX; its weights are drawn after seeding (independent of test order)."""
    torch.manual_seed(0)
    module = make_module()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module.eval(), (torch.randn(*shape),), buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": dynamic_axes, "y": {}}, opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def minus_one_batch() -> onnx.ModelProto:
    """An export that spells its dynamic batch dim ``-1`` (and leaves the output's unknown)."""
    model = export(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5)),
                   (1, 3, 6, 6), {0: "n"})
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    return model


def check_compiles(model, shape, rtol=1e-5):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = ort_run(model, {"x": x})[0]
    compiled = shiftc.compile(model, "x86", input_shapes={"x": shape})
    got = compiled.run({"x": x})
    got = got[next(iter(got))] if isinstance(got, dict) else got[0]
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol)
    return compiled


def test_same_padding_from_shape_ops_is_folded():
    model = export(SamePadConv, (1, 3, 9, 9), {0: "n", 2: "h", 3: "w"})
    assert any(n.op_type == "Shape" for n in model.graph.node)
    compiled = check_compiles(model, (1, 3, 11, 10))
    stage = next(s for s in compiled.report.stages if s.name == "simplify")
    assert stage.summary["applied"] and stage.summary["nodes_after"] < stage.summary["nodes_before"]


def test_shape_arithmetic_into_reshape_is_folded():
    model = export(Attention, (1, 5, 16), {0: "n", 1: "tokens"})
    loaded = frontend.load(model, {"x": (2, 7, 16)})
    assert loaded.simplified["applied"]
    assert not any(n.op_type in ("Shape", "Gather", "Concat") for n in loaded.graph.graph.node)
    assert loaded.outputs[0].shape == (2, 7, 16)
    check_compiles(model, (2, 7, 16))


def test_minus_one_input_dim_accepts_a_pin():
    model = minus_one_batch()
    check_compiles(model, (3, 3, 6, 6))


def test_positive_static_dim_conflicting_with_pin_is_still_an_error():
    with pytest.raises(InputError, match="has static dim 3, --input-shape gives 4"):
        frontend.load(minus_one_batch(), {"x": (2, 4, 6, 6)})


def test_unpinned_minus_one_dim_is_still_an_error():
    with pytest.raises(InputError, match="dynamic dimension"):
        frontend.load(minus_one_batch())


def test_static_model_is_left_as_is():
    path = ROOT / "examples" / "models" / "cnn.onnx"
    loaded = frontend.load(path)
    assert loaded.graph is loaded.proto
    assert loaded.simplified == {"nodes_before": len(loaded.proto.graph.node), "nodes_after": len(loaded.proto.graph.node),
                                 "applied": False, "reason": "already static"}
    x = np.load(ROOT / "examples" / "models" / "cnn_input.npy").astype(np.float32)
    name = loaded.inputs[0].name
    ref = ort_run(onnx.load(str(path)), {name: x})[0]
    got = shiftc.compile(str(path), "x86").run({name: x})
    got = got[next(iter(got))] if isinstance(got, dict) else got[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_onnxruntime_load_failure_is_one_line(monkeypatch):
    model = export(Attention, (1, 5, 16), {0: "n", 1: "tokens"})

    def broken(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model failed\nsecond line")

    import onnxruntime

    monkeypatch.setattr(onnxruntime, "InferenceSession", broken)
    with pytest.raises(UnsupportedModelError) as err:
        frontend.load(model, {"x": (1, 5, 16)})
    assert str(err.value) == "onnxruntime could not load the model: [ONNXRuntimeError] : 1 : FAIL : Load model failed"


def _rapidocr_model(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("rapidocr-onnxruntime is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        pytest.skip(f"rapidocr-onnxruntime does not ship {name}")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [
    ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192)),  # batch dim declared -1
    ("ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320)),  # Shape ops make the output (-1, -1, 6625) unless folded
])
def test_paddle_exports_shipped_by_rapidocr(name, shape):
    """PaddleOCR's exported orientation classifier and text recogniser, as rapidocr ships them."""
    path = _rapidocr_model(name)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = ort_run(onnx.load(str(path)), {"x": x})[0]
    got = shiftc.compile(str(path), "x86", input_shapes={"x": shape}).run({"x": x})
    got = got[next(iter(got))] if isinstance(got, dict) else got[0]
    assert np.abs(got - ref).max() <= 1e-4


def test_unusable_simplification_falls_back_to_the_pinned_model(monkeypatch):
    """If the optimiser's graph has an op the importer lacks, the pinned original is imported."""
    from onnx import helper

    from conftest import make_model

    model = make_model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["r"]),
                        helper.make_node("Relu", ["r"], ["y"])], [("x", [2, 3])], [("y", [2, 3])])
    real = frontend._ort_basic

    def with_contrib_op(proto):
        graph = real(proto)
        graph.graph.node[-1].domain = "com.microsoft"
        graph.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        return graph

    monkeypatch.setattr(frontend, "_ort_basic", with_contrib_op)
    loaded = frontend.load(model)
    assert loaded.graph is loaded.proto
    assert not loaded.simplified["applied"] and "not used" in loaded.simplified["reason"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    got = shiftc.compile(model, "x86").run({"x": x})
    got = got[next(iter(got))] if isinstance(got, dict) else got[0]
    np.testing.assert_array_equal(got, np.maximum(x, 0))
