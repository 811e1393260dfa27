"""Real-model checks of --integer-only: Fashion-MNIST CNN and ViT (true test accuracy against FP32
onnxruntime on the same images), the float-op scan on them and on a Segmenter-style model.

The scan reads what the x86 build compiles (``shiftc.api.prepare``: the module after the target's
CPU lowerings, fusion and schedules, and every PrimFunc handed to TIR codegen), and the accuracy is
that of the executable compiled from that very module.

Full-test-set numbers: benchmarks/integer_accuracy.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples import evaluate as ev  # noqa: E402
from examples import fashion_mnist as fm  # noqa: E402
import shiftc  # noqa: E402
from shiftc.passes import float_scan  # noqa: E402
from shiftc.targets.x86 import flatten_outputs  # noqa: E402

MODELS = ROOT / "examples" / "models"

pytestmark = pytest.mark.slow


def integer_build(path, samples, **opts):
    """What ``shiftc.compile(path, "x86", integer_only=True, ...)`` compiles (``pipeline.Prepared``),
    its kernels as TIR codegen receives them, and the passes' stage reports by name."""
    prepared = shiftc.api.prepare(path, "x86", calibration=samples, integer_only=True, **opts)
    return prepared, prepared.finished(), {s.name: s for s in prepared.report.stages}


def predict(executable, x):
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return np.concatenate([flatten_outputs(vm["main"](tvm.runtime.tensor(x[i : i + 1])))[0] for i in range(len(x))])


@pytest.fixture(scope="module")
def fashion():
    xtr, _ = fm.load("train")
    xte, yte = fm.load("test")
    cal = [{"input": v[None]} for v in fm.preprocess(xtr[:32])]
    return cal, fm.preprocess(xte[:500]), yte[:500]


@pytest.mark.parametrize("name, tolerance", [("cnn", 0.01), ("vit", 0.02), ("unvit", 0.02)])
def test_integer_only_accuracy_and_float_scan(fashion, name, tolerance):
    cal, x, y = fashion
    path = MODELS / f"{name}.onnx"
    prepared, finished, reports = integer_build(path, cal)
    assert float_scan.build_float_ops(prepared.module, finished) == []
    assert reports["integerize"].summary["float_ops"] == 0
    fp32 = ev.accuracy(ev.onnx_predict(path, x), y)
    acc = ev.accuracy(predict(prepared.compile(), x), y)
    assert acc >= fp32 - tolerance, f"{name}: integer-only {acc:.3f} vs FP32 {fp32:.3f} on 500 test images"


def _segmenter_path(tmp_path_factory):
    trained = MODELS / "segmenter.onnx"
    if trained.exists():
        return trained
    # the architecture (untrained weights) is enough for the structural float-op scan
    import torch

    from examples.models import Segmenter

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seg") / "segmenter.onnx"
    torch.onnx.export(Segmenter().eval(), (torch.randn(1, 1, 56, 56),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True)
    return path


def test_segmenter_integer_only_float_scan(tmp_path_factory):
    path = _segmenter_path(tmp_path_factory)
    xtr, ytr = fm.load("train")
    imgs, _ = fm.mosaics(xtr, ytr, 2, seed=0)
    cal = [{"input": v[None]} for v in fm.preprocess(imgs)]
    prepared, finished, reports = integer_build(path, cal, gelu="lambda", upsample="nearest", l2norm="remove",
                                                calibration_samples=1)
    assert float_scan.build_float_ops(prepared.module, finished) == []
    ops = reports["integerize"].summary["integer_ops"]
    assert ops["nearest_upsample"] == 1 and ops["l2_normalize removed"] == 2 and ops["lambda_shift_gelu"] >= 1
    assert reports["integerize"].summary["calibration"] == "minmax on 1 sample(s) (auto)"  # attention: minmax
    # and with the model left as trained integer-only is refused for the L2 norm alone (its
    # bilinear resize has an integer form), naming the op
    from shiftc.core.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="l2_normalize") as refused:
        integer_build(path, cal[:1])
    assert "resize2d" not in str(refused.value)


def _cos_model():
    """Conv -> Cos -> Conv: Cos has no integer form, so --float-fallback keeps it in float."""
    from conftest import make_model
    from onnx import helper

    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), (rng.standard_normal((2, 4, 1, 1)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1], name="conv0"),
             helper.make_node("Cos", ["c"], ["s"], name="cos0"),
             helper.make_node("Conv", ["s", "w2"], ["y"], name="conv1")]
    return make_model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 2, 8, 8])], {"w1": w1, "w2": w2}), rng


def test_build_scan_sees_a_float_op_in_the_integer_region():
    """The scan can fail: a --float-fallback build of a model with an op that has no integer form
    keeps that op in float between two integer convs, and the scan of the build names it even with
    the float-island boundary kernels exempt (and reports those kernels too when they are not)."""
    model, rng = _cos_model()
    cal = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    prepared, finished, reports = integer_build(model, cal, float_fallback=True)
    assert reports["integerize"].summary["float_ops"] == 1
    islands_exempt = float_scan.build_float_ops(prepared.module, finished, exempt=float_scan.BOUNDARY + ("float_island",))
    assert any(o.startswith("kernel") and "cos" in o and "float32" in o for o in islands_exempt), islands_exempt
    assert any(o.startswith("value") and "cos" in o for o in islands_exempt), islands_exempt
    strict = float_scan.build_float_ops(prepared.module, finished)
    assert set(islands_exempt) < set(strict)  # the island's dequantize / quantize kernels as well
    # and the same build without the float op is clean (the offence is the cos, not the scan)
    clean = [o for o in islands_exempt if "cos" not in o]
    assert clean == [], clean
