"""Real-model checks of --integer-only: Fashion-MNIST CNN and ViT (true test accuracy against FP32
onnxruntime on the same images), the float-op scan on the ViT and a Segmenter-style model.

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
from shiftc import frontend  # noqa: E402
from shiftc.passes import float_scan  # noqa: E402
from shiftc.pipeline import STAGES, PassOptions, StageContext  # noqa: E402
from shiftc.core.report import StageReport  # noqa: E402
from shiftc.targets.x86 import flatten_outputs  # noqa: E402

MODELS = ROOT / "examples" / "models"

pytestmark = pytest.mark.slow


def integer_module(path, samples, **opts):
    """The pipeline's enabled stages up to and including integerize (no error measurement)."""
    import shiftc.passes  # noqa: F401  (registers the stages)

    loaded = frontend.load(path)
    mod = frontend.to_relax(loaded)
    options = PassOptions.from_kwargs(dict(integer_only=True, **opts))
    reports = {}
    for stage in STAGES:
        if stage.enabled(options):
            reports[stage.name] = StageReport(stage.name)
            mod = stage.apply(mod, StageContext(options, samples, loaded, reports[stage.name]))
    return mod, reports


def predict(mod, x):
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
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
    mod, reports = integer_module(path, cal)
    assert float_scan.float_ops(mod) == []
    assert reports["integerize"].summary["float_ops"] == 0
    fp32 = ev.accuracy(ev.onnx_predict(path, x), y)
    acc = ev.accuracy(predict(mod, x), y)
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
    mod, reports = integer_module(path, cal, gelu="lambda", upsample="nearest", l2norm="remove", calibration_samples=1)
    assert float_scan.float_ops(mod) == []
    ops = reports["integerize"].summary["integer_ops"]
    assert ops["nearest_upsample"] == 1 and ops["l2_normalize removed"] == 2 and ops["lambda_shift_gelu"] >= 1
    assert reports["integerize"].summary["calibration"] == "minmax on 1 sample(s)"
    # and with the model left as trained (bilinear, L2 norm) integer-only is refused, naming the ops
    from shiftc.core.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="resize2d"):
        integer_module(path, cal[:1])
