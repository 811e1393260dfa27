"""arm target: cross-build, artifact contents, runner under qemu-aarch64 vs x86 and onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

import shiftc
from shiftc import api
from shiftc.core.errors import InputError, ToolchainError
from shiftc.targets import aarch64_runtime, arm

from conftest import make_model, ort_run
from helpers.toolchains import ARM_MISSING, has_arm, needs_arm

SHIFTC = str(Path(sys.executable).with_name("shiftc"))
AARCH64 = 183  # ELF e_machine of EM_AARCH64



def mixed_dtype_model():
    """Conv + matmul on float32, plus int8 / uint8 / int32 / int64 inputs and outputs."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["mm"]),
        helper.make_node("Cast", ["q"], ["qf"], to=TP.FLOAT),
        helper.make_node("Cast", ["u"], ["uf"], to=TP.FLOAT),
        helper.make_node("Add", ["mm", "qf"], ["s"]),
        helper.make_node("Add", ["s", "uf"], ["y"]),
        helper.make_node("ArgMax", ["y"], ["am"], axis=1, keepdims=0),
        helper.make_node("Add", ["am", "k"], ["z"]),
        helper.make_node("Mul", ["i", "three"], ["i3"]),
        helper.make_node("Sub", ["i3", "i"], ["j"]),
        helper.make_node("Add", ["u", "one_u8"], ["b"]),
    ]
    return make_model(
        nodes,
        [("x", [1, 3, 6, 6]), ("q", [1, 5], TP.INT8), ("k", [1], TP.INT64), ("u", [1, 5], TP.UINT8), ("i", [2, 3], TP.INT32)],
        [("y", [1, 5]), ("z", [1], TP.INT64), ("j", [2, 3], TP.INT32), ("b", [1, 5], TP.UINT8)],
        {
            "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "m": rng.standard_normal((144, 5)).astype(np.float32),
            "shape": np.array([1, -1], np.int64),
            "three": np.array(3, np.int32),
            "one_u8": np.array(1, np.uint8),
        },
    )


def mixed_inputs():
    rng = np.random.default_rng(2)
    return {
        "x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32),
        "q": rng.integers(-100, 100, (1, 5)).astype(np.int8),
        "k": np.array([1 << 40], np.int64),
        "u": rng.integers(0, 255, (1, 5)).astype(np.uint8),
        "i": rng.integers(-(1 << 20), 1 << 20, (2, 3)).astype(np.int32),
    }


@pytest.fixture(scope="module")
def model():
    return mixed_dtype_model()


@pytest.fixture(scope="module")
def x86_outputs(model):
    return api.compile(model, "x86").run(mixed_inputs())


@pytest.fixture(scope="module", params=["cortex-a53", "cortex-a72"])
def arm_model(request, model, tmp_path_factory):
    if not has_arm():
        pytest.skip(ARM_MISSING)
    out = tmp_path_factory.mktemp(request.param) / "artifact"
    return api.compile(model, "arm", cpu=request.param, output=out)


@needs_arm
def test_arm_matches_x86_and_onnxruntime(arm_model, model, x86_outputs):
    feeds = mixed_inputs()
    got = arm_model.run(feeds)
    ref = ort_run(model, feeds)
    assert list(got) == ["y", "z", "j", "b"]
    for (name, g), r in zip(got.items(), ref):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        np.testing.assert_allclose(g, x86_outputs[name], rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4, err_msg=name)
    # integer outputs are exact (the int64 one needs all 64 bits: k = 2^40)
    for name in ("z", "j", "b"):
        np.testing.assert_array_equal(got[name], x86_outputs[name])
    assert got["z"][0] >= 1 << 40


@needs_arm
def test_artifact_is_self_contained_for_a_board(arm_model):
    folder = arm_model.path
    files = set(arm_model.meta["files"])
    assert files == {"model.so", "runner", "libtvm_runtime.so", "libtvm_ffi.so", "run.sh"}
    for name in ("model.so", "runner", "libtvm_runtime.so", "libtvm_ffi.so"):
        head = (folder / name).read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == AARCH64, name
    run_sh = (folder / "run.sh").read_text()
    assert "LD_LIBRARY_PATH" in run_sh and '"$here/runner" "$here/model.so"' in run_sh
    # shiftc's TVM thread pool defaults, unless the board's environment sets them
    assert 'TVM_THREAD_POOL_SPIN_COUNT="${TVM_THREAD_POOL_SPIN_COUNT:-0}"' in run_sh
    assert 'TVM_BIND_THREADS="${TVM_BIND_THREADS:-0}"' in run_sh
    assert os.access(folder / "run.sh", os.X_OK) and os.access(folder / "runner", os.X_OK)
    target = arm_model.meta["target"]
    assert target["tvm"]["mtriple"] == "aarch64-linux-gnu" and target["tvm"]["mcpu"] == target["options"]["cpu"]


@needs_arm
def test_runner_rejects_a_bad_input_file(arm_model, tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_text("not numpy")
    session = arm.RunnerSession(arm_model.path, 4)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(session.command(out, [bad]), capture_output=True, text=True)
    assert proc.returncode == 2 and "is not a .npy file" in proc.stderr


@needs_arm
def test_cli_run_on_arm_artifact(arm_model, tmp_path):
    feeds = mixed_inputs()
    np.savez(tmp_path / "in.npz", **feeds)
    proc = subprocess.run(
        [SHIFTC, "run", str(arm_model.path), "-i", str(tmp_path / "in.npz"), "--output", str(tmp_path / "o.npz"), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)["outputs"]) == {"y", "z", "j", "b"}
    with np.load(tmp_path / "o.npz") as o:
        np.testing.assert_array_equal(o["j"], feeds["i"] * 2)


def test_cpu_features():
    assert "+dotprod" in list(arm.Arm(cpu="cortex-a76").tvm_target().attrs["mattr"])
    assert "+dotprod" not in list(arm.Arm(cpu="cortex-a53").tvm_target().attrs["mattr"])
    with pytest.raises(InputError, match="unknown arm cpu"):
        shiftc.targets.get("arm", cpu="pentium")


def _path_without(program: str, tmp_path: Path) -> str:
    """A PATH in which ``program`` cannot be found but everything else in the usual dirs can."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in os.listdir(d):
            if entry != program and not (shadow / entry).exists():
                (shadow / entry).symlink_to(os.path.join(d, entry))
    return str(shadow)


def test_missing_cross_compiler_is_a_toolchain_error(model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_without("aarch64-linux-gnu-g++", tmp_path))
    with pytest.raises(ToolchainError, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        api.compile(model, "arm", output=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    proc = subprocess.run([SHIFTC, "compile", str(onnx_path), "-t", "arm", "-o", str(tmp_path / "a")], capture_output=True, text=True)
    assert proc.returncode == 4
    assert "g++-aarch64-linux-gnu" in proc.stderr and "Traceback" not in proc.stderr


@needs_arm
def test_missing_qemu_is_a_toolchain_error_at_load(arm_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_without("qemu-aarch64", tmp_path))
    with pytest.raises(ToolchainError, match="apt-get install qemu-user"):
        api.load(arm_model.path)


def test_uncached_runtime_without_network_is_a_toolchain_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SHIFTC_OFFLINE")  # downloads allowed, but pip may not reach any index
    monkeypatch.setenv("SHIFTC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(ToolchainError, match="aarch64 TVM runtime is not cached .* downloading it failed"):
        aarch64_runtime.runtime_libs()
    assert not any((tmp_path / "cache").rglob("*.so"))


def _no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download: {args}")

    monkeypatch.setattr(aarch64_runtime, "_fetch", refuse)
    monkeypatch.setattr(aarch64_runtime.subprocess, "run", refuse)


def test_the_test_suite_refuses_to_download_the_runtime(tmp_path, monkeypatch):
    """conftest sets SHIFTC_OFFLINE=1: an uncached runtime is a one-line error naming the setup command."""
    assert os.environ["SHIFTC_OFFLINE"] == "1"
    monkeypatch.setenv("SHIFTC_CACHE_DIR", str(tmp_path / "cache"))
    _no_downloads(monkeypatch)
    with pytest.raises(ToolchainError) as info:
        aarch64_runtime.runtime_libs()
    message = str(info.value)
    assert "\n" not in message and "not cached" in message and "SHIFTC_OFFLINE" in message
    assert "`shiftc targets --prefetch`" in message
    assert not (tmp_path / "cache").exists()


def _fake_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SHIFTC_CACHE_DIR", str(tmp_path / "cache"))
    folder = aarch64_runtime.runtime_dir()
    folder.mkdir(parents=True)
    for name in aarch64_runtime.RUNTIME_LIBS:
        (folder / name).write_bytes(b"cached " + name.encode())
    return folder


def test_a_cached_runtime_is_used_without_fetching(tmp_path, monkeypatch):
    folder = _fake_cache(tmp_path, monkeypatch)
    _no_downloads(monkeypatch)
    assert aarch64_runtime.runtime_libs() == {name: folder / name for name in aarch64_runtime.RUNTIME_LIBS}
    monkeypatch.delenv("SHIFTC_OFFLINE")
    assert aarch64_runtime.runtime_libs()["libtvm_runtime.so"].read_bytes() == b"cached libtvm_runtime.so"
    assert aarch64_runtime.prefetch() == folder


def test_prefetch_command(tmp_path, monkeypatch):
    """`shiftc targets --prefetch` (scripts/setup.sh): nothing to do when cached; a failed download
    is exit 4. PIP_NO_INDEX keeps pip off the network."""
    folder = _fake_cache(tmp_path, monkeypatch)
    env = dict(os.environ, PIP_NO_INDEX="1", SHIFTC_OFFLINE="0")
    proc = subprocess.run([SHIFTC, "targets", "--prefetch"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"aarch64 TVM runtime cached in {folder}"
    env["SHIFTC_CACHE_DIR"] = str(tmp_path / "empty")
    proc = subprocess.run([SHIFTC, "targets", "--prefetch"], capture_output=True, text=True, env=env)
    assert proc.returncode == 4 and "downloading it failed" in proc.stderr and "Traceback" not in proc.stderr


def test_targets_command_names_missing_packages(tmp_path):
    env = dict(os.environ, PATH=_path_without("qemu-aarch64", tmp_path))
    proc = subprocess.run([SHIFTC, "targets", "--json"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["targets"]}
    assert not rows["arm"]["ready"] and rows["arm"]["install"] == "qemu-user"
    assert {t["program"]: t["present"] for t in rows["arm"]["tools"]}["qemu-aarch64"] is False


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "mobilenetv2.py"


@pytest.mark.slow
@needs_arm
@pytest.mark.parametrize("cpu", ["cortex-a53", "cortex-a72"])
def test_mobilenetv2_fp32_under_qemu_matches_x86(cpu, mobilenetv2, tmp_path):
    path, x, x86_logits, ort_logits = mobilenetv2
    cm = api.compile(path, "arm", cpu=cpu, output=tmp_path / "arm")
    logits = cm.run(x)["logits"]
    assert logits.shape == (1, 1000)
    np.testing.assert_allclose(logits, x86_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, ort_logits, rtol=1e-3, atol=1e-3)
    assert logits.argmax() == ort_logits.argmax()


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~120 s on a loaded 2-core machine: two MobileNetV2 compiles and a qemu run
@needs_arm
def test_mobilenetv2_4bit_shift_under_qemu_matches_x86(mobilenetv2, tmp_path):
    """The float shift-add kernels (exponent arithmetic) give the same logits on aarch64."""
    path, x, _, _ = mobilenetv2
    # bias correction (55 MobileNetV2 host runs per compile) is not what this compares: off, to stay in time
    options = dict(shift_bits=4, shift_bias_correction=False, calibration=[{"input": x}])
    x86 = api.compile(path, "x86", **options)
    arm = api.compile(path, "arm", cpu="cortex-a72", output=tmp_path / "arm4", **options)
    layers = [[r["layer"] for s in cm.report.stages if s.name == "shift" for r in s.rows] for cm in (x86, arm)]
    assert layers[0] == layers[1] and len(layers[0]) == 53  # 52 convs + the classifier
    np.testing.assert_allclose(arm.run(x)["logits"], x86.run(x)["logits"], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def mobilenetv2(mbv2_onnx, mbv2_x86_artifact):
    """MobileNetV2 with ImageNet weights on a real photo: ONNX path, input, x86 and ORT logits.
    The export and its x86 compile are the session's (conftest.py), shared with test_mobilenetv2."""
    sys.path.insert(0, str(EXAMPLES.parents[1]))
    try:
        from examples import mobilenetv2 as mnv2
    finally:
        sys.path.pop(0)
    x = mnv2.imagenet_preprocess(mnv2.load_photo("chelsea"))[None].astype(np.float32)
    import onnx

    x86_logits = api.load(mbv2_x86_artifact).run(x)["logits"]
    return mbv2_onnx, x, x86_logits, ort_run(onnx.load(str(mbv2_onnx)), {"input": x})[0]


def resize_pad_model():
    """Conv -> reflect Pad -> bilinear Resize by 5x7 -> 8x11 (half-pixel, sizes) -> constant Pad:
    the integer resize and pad kernels between an integer conv and the output."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Pad", ["c", "p1"], ["r"], mode="reflect"),
        helper.make_node("Resize", ["r", "", "", "sizes"], ["z"], mode="linear"),
        helper.make_node("Pad", ["z", "p2", "v"], ["y"], mode="constant"),
    ]
    return make_model(
        nodes, [("x", [1, 3, 5, 7])], [("y", [1, 4, 10, 12])],
        {"w": (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "p1": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64),
         "sizes": np.array([1, 4, 8, 11], np.int64), "p2": np.array([0, 0, 1, 0, 0, 0, 1, 1], np.int64), "v": np.float32(0.25)},
    )


@pytest.mark.timeout(600)  # two integer-only compiles (calibration included) and a qemu run
@needs_arm
def test_integer_resize_and_pad_on_arm_match_x86_bit_for_bit(tmp_path):
    """--integer-only: the same integers on aarch64 (qemu) as on x86, so the same dequantised
    floats, bit for bit; and both near onnxruntime FP32."""
    model = resize_pad_model()
    rng = np.random.default_rng(4)
    cal = [{"x": rng.standard_normal((1, 3, 5, 7)).astype(np.float32)} for _ in range(3)]
    opts = dict(integer_only=True, calibration=cal)
    x86 = api.compile(model, "x86", **opts)
    on_arm = api.compile(model, "arm", cpu="cortex-a72", output=tmp_path / "arm", **opts)
    ops = [r["op"] for s in x86.report.stages if s.name == "integerize" for r in s.rows]
    assert "bilinear_resize" in ops
    x = {"x": rng.standard_normal((1, 3, 5, 7)).astype(np.float32)}
    got, want = on_arm.run(x)["y"], x86.run(x)["y"]
    np.testing.assert_array_equal(got, want)
    (ref,) = ort_run(model, x)
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()  # int8 input, weights and conv output


@needs_arm
def test_arm_build_is_deterministic(arm_model, model, tmp_path):
    again = api.compile(model, "arm", cpu=arm_model.meta["target"]["options"]["cpu"], output=tmp_path / "again")
    assert again.meta["files"] == arm_model.meta["files"]
