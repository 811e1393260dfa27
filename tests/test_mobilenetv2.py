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


@pytest.fixture
def onnx_path(mbv2_onnx):
    """The session's MobileNetV2 export (conftest.py), shared with test_examples."""
    return mbv2_onnx


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


def test_cli_compile_and_run_match_onnxruntime(tmp_path, onnx_path, mbv2_x86_artifact):
    """``shiftc compile --target x86`` (the session's mbv2_x86_artifact, conftest.py, which checks
    the command's exit code) and ``shiftc run`` on it."""
    import onnx

    x = mbv2.real_photos(1)[:1]
    np.save(tmp_path / "x.npy", x)
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(mbv2_x86_artifact), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npz")])
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


def test_integer_only_build_agrees_with_fp32_on_real_photos(onnx_path):
    """MobileNetV2 --integer-only (calibrated on 8 photos, ReLU6 as per-channel integer clamps,
    dot-intrinsic kernels on x86): every kernel the x86 build compiles is integer-only between the
    boundary kernels, and top-1 agrees with onnxruntime FP32 on other photos. Measured on 64
    photos: 73% (minmax), 77% (percentile); per-tensor int8 PTQ of MobileNetV2 is lossy."""
    import shiftc.api
    import tvm
    from tvm import relax

    from shiftc import evaluate, frontend
    from shiftc.core.host import flatten_outputs
    from shiftc.passes import float_scan

    photos = mbv2.real_photos(32, seed=0)
    calib = [{"input": x[None]} for x in mbv2.real_photos(40, seed=1)[-8:]]
    ref = np.concatenate([r[0] for r in evaluate.onnxruntime_outputs(frontend.load(onnx_path).proto, [{"input": x[None]} for x in photos])])
    prepared = shiftc.api.prepare(onnx_path, "x86", calibration=calib, integer_only=True, calibration_method="percentile")
    assert float_scan.build_float_ops(prepared.module, prepared.finished()) == []
    vm = relax.VirtualMachine(prepared.compile(), tvm.cpu())
    out = np.concatenate([flatten_outputs(vm["main"](tvm.runtime.tensor(x[None])))[0] for x in photos])
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.6
    integer = next(s for s in prepared.report.stages if s.name == "integerize")
    assert integer.error["cosine"] > 0.95  # measured on the calibration photos
