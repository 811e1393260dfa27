"""Real model: MobileNetV2 with ImageNet weights, through the CLI, against onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shiftc.cli import main
from conftest import assert_close, ort_run

from examples import mobilenetv2 as mbv2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return mbv2.export_mobilenetv2(tmp_path_factory.mktemp("mbv2") / "mbv2.onnx")


def conv_macs_from_torch() -> int:
    """Multiply-accumulates of every Conv2d, from the layer shapes seen in a forward pass."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += output.numel() * k

    model = mbv2.pretrained()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    return total


def test_cli_compile_and_run_match_onnxruntime(tmp_path, onnx_path):
    import onnx

    x = mbv2.real_photos(1)[:1]
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    res = runner.invoke(main, ["compile", str(onnx_path), "--target", "x86", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.stderr
    res = runner.invoke(main, ["run", str(tmp_path / "out"), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npz")])
    assert res.exit_code == 0, res.stderr
    got = np.load(tmp_path / "y.npz")["logits"]
    (ref,) = ort_run(onnx.load(str(onnx_path)), {"input": x})
    assert_close(got, ref, rtol=1e-4)
    assert got.argmax() == ref.argmax() and got.argmax() in mbv2.CAT_CLASSES  # chelsea is a cat


def test_inspect_mac_count_agrees_with_conv_shapes(onnx_path):
    res = CliRunner().invoke(main, ["inspect", str(onnx_path), "--json"])
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["macs_by_op"]["Conv"] == conv_macs_from_torch()
    assert info["macs_by_op"]["Gemm"] == 1280 * 1000
    assert info["ops"]["Conv"] == 52
