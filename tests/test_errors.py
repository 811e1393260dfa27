"""Every bad-input path: one line on stderr, the documented exit code, no partial artifact."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

import shiftc
from shiftc import artifact
from shiftc.cli import main
from conftest import conv_relu_model, make_model


def cli(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code, stderr, expected_code, *fragments):
    assert code == expected_code, stderr
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    assert lines[0].startswith("error:")
    assert "Traceback" not in stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


@pytest.fixture
def conv_path(tmp_path, conv_model):
    path = tmp_path / "conv.onnx"
    onnx.save(conv_model, str(path))
    return path


def test_missing_file(tmp_path):
    code, _, err = cli("compile", tmp_path / "nope.onnx", "-o", tmp_path / "out")
    assert_one_line_error(code, err, 2, "not found")
    assert not (tmp_path / "out").exists()


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffthis is not protobuf\x12\x99" * 10)
    code, _, err = cli("compile", bad, "-o", tmp_path / "out")
    assert_one_line_error(code, err, 2, "bad.onnx")
    assert not (tmp_path / "out").exists()


def test_truncated_file(tmp_path, conv_path):
    data = conv_path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = cli("compile", cut, "-o", tmp_path / "out")
    assert_one_line_error(code, err, 2, "cut.onnx")
    assert not (tmp_path / "out").exists()


def test_unsupported_op_lists_types_and_node_names(tmp_path):
    model = make_model(
        [helper.make_node("Celu", ["x"], ["c"], name="act_one"), helper.make_node("Celu", ["c"], ["y"], name="act_two")],
        [("x", [1, 4])], [("y", [1, 4])],
    )
    path = tmp_path / "celu.onnx"
    onnx.save(model, str(path))
    code, _, err = cli("compile", path, "-o", tmp_path / "out")
    assert_one_line_error(code, err, 3, "Celu", "act_one", "act_two")
    assert not (tmp_path / "out").exists()


def test_unpinned_dynamic_shape_names_the_input(tmp_path, conv_path):
    code, _, err = cli("compile", conv_path, "-o", tmp_path / "out")
    assert_one_line_error(code, err, 2, "'x'", "--input-shape")
    assert not (tmp_path / "out").exists()


def test_bad_input_shape_flag(tmp_path, conv_path):
    code, _, err = cli("compile", conv_path, "-o", tmp_path / "out", "--input-shape", "x=1x3")
    assert_one_line_error(code, err, 2, "rank")
    code, _, err = cli("compile", conv_path, "-o", tmp_path / "out", "--input-shape", "nosuch=1x3x8x8")
    assert_one_line_error(code, err, 2, "nosuch")


def test_unknown_target(tmp_path, conv_path):
    code, _, err = cli("compile", conv_path, "-o", tmp_path / "out", "--input-shape", "x=1x3x8x8", "--target", "z80")
    assert_one_line_error(code, err, 2, "z80", "x86")
    assert not (tmp_path / "out").exists()


def test_missing_toolchain_names_the_package(tmp_path, conv_path):
    code, _, err = cli("compile", conv_path, "-o", tmp_path / "out", "--input-shape", "x=1x3x8x8", env={"PATH": str(tmp_path)})
    assert_one_line_error(code, err, 4, "apt-get install g++")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """The conv model (the ``conv_model`` fixture's weights) compiled through the CLI, once."""
    folder = tmp_path_factory.mktemp("built")
    onnx.save(conv_relu_model(np.random.default_rng(0)), str(folder / "conv.onnx"))
    out = folder / "art"
    code, _, err = cli("compile", folder / "conv.onnx", "-o", out, "--input-shape", "x=1x3x8x8")
    assert code == 0, err
    return out


@pytest.fixture
def built(tmp_path, built_once):
    """A private copy of the compiled artifact: tests tamper with it and add files to it."""
    return shutil.copytree(built_once, tmp_path / "art")


def test_tampered_artifact_is_refused_before_loading(tmp_path, built):
    lib = built / "model.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    # a new inode: this process has the original mapped, and rewriting a mapped file crashes it
    (built / "tampered").write_bytes(bytes(data))
    os.replace(built / "tampered", lib)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    code, _, err = cli("run", built, "--input", tmp_path / "x.npy")
    assert_one_line_error(code, err, 2, "model.so", "sha256")


def test_unlisted_file_in_artifact_is_refused(tmp_path, built):
    (built / "extra.so").write_bytes(b"\x7fELF")
    with pytest.raises(shiftc.InputError, match="extra.so"):
        shiftc.load(built)


@pytest.mark.parametrize(
    "array, fragment",
    [(np.zeros((1, 3, 9, 9), np.float32), "[1, 3, 9, 9]"), (np.zeros((1, 3, 8, 8), np.float64), "float64")],
)
def test_wrong_input_shape_or_dtype_at_run_time(tmp_path, built, array, fragment):
    np.save(tmp_path / "x.npy", array)
    code, _, err = cli("run", built, "--input", tmp_path / "x.npy")
    assert_one_line_error(code, err, 2, "'x'", fragment)


def test_wrong_inputs_through_the_api(built):
    model = shiftc.load(built)
    with pytest.raises(shiftc.InputError, match="takes 1 input"):
        model.run(np.zeros((1, 3, 8, 8), np.float32), np.zeros(1, np.float32))
    with pytest.raises(shiftc.InputError, match="unknown"):
        model.run({"y": np.zeros((1, 3, 8, 8), np.float32)})


def test_failed_build_leaves_no_partial_artifact(tmp_path, conv_model, monkeypatch):
    from shiftc.targets.x86 import X86

    def broken(self, executable, out_dir):
        (out_dir / "model.so").write_bytes(b"half")
        raise RuntimeError("linker died")

    monkeypatch.setattr(X86, "build", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="linker died"):
        shiftc.compile(conv_model, "x86", input_shapes={"x": (1, 3, 8, 8)}, output=out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_refuses_to_overwrite_a_non_artifact(tmp_path, conv_model):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(shiftc.InputError, match="refusing to overwrite"):
        shiftc.compile(conv_model, "x86", input_shapes={"x": (1, 3, 8, 8)}, output=out)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_internal_errors_are_one_line_with_exit_1(tmp_path, conv_path, monkeypatch):
    from shiftc import frontend

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(frontend, "to_relax", boom)
    code, _, err = cli("compile", conv_path, "-o", tmp_path / "out", "--input-shape", "x=1x3x8x8")
    assert_one_line_error(code, err, 1, "internal error", "ZeroDivisionError")


def test_console_script_exit_code(tmp_path):
    """The installed entry point, not just click's runner."""
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("shiftc")), "compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
