"""Real model and data: the shipped Fashion-MNIST CNN keeps its true test accuracy when compiled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from examples import fashion_mnist

pytestmark = pytest.mark.slow
MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def test_compiled_cnn_keeps_its_onnxruntime_accuracy_on_the_full_test_set(compiled):
    images, labels = fashion_mnist.load("test")
    x = fashion_mnist.preprocess(images)
    cm = compiled(MODELS / "cnn.onnx", "x86")  # shiftc.compile, once a session (conftest.py)
    (spec,) = cm.inputs
    batch = spec.shape[0]
    assert len(x) % batch == 0
    logits = np.concatenate([cm.run(x[i : i + batch])[cm.outputs[0].name] for i in range(0, len(x), batch)])
    accuracy = float(np.mean(logits.argmax(1) == labels))
    # the FP32 figure onnxruntime measured on the same 10k images when the model was trained
    recorded = json.loads((MODELS / "cnn_metrics.json").read_text())["value"]
    assert accuracy == pytest.approx(recorded, abs=2e-4)
    assert accuracy > 0.9
