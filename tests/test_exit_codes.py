"""Exact exit codes for what a hostile user hands the CLI (issue 16): corrupt strings inside a model,
NaN/Inf weights and inputs, unreadable .npz members, unwritable outputs, a failing matrix, and no
second stderr line from TVM's C++ logging."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

import shiftc
from shiftc.cli import main
from shiftc.core.errors import EXIT_CODES, InputError
from conftest import make_model

REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line(code, stderr, expected, *fragments):
    assert code == expected, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def gemm_model() -> onnx.ModelProto:
    w = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
    return make_model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="fc0")], [("x", [1, 8])], [("y", [1, 4])], {"w": w})


@pytest.fixture(scope="module")
def gemm_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("gemm") / "gemm.onnx"
    onnx.save(gemm_model(), str(path))
    return path


@pytest.fixture(scope="module")
def artifact(gemm_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "gemm"
    shiftc.compile(str(gemm_path), "x86", output=out)
    return out


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create entries in: a chmod 500 one, or (as root, who ignores modes) /sys."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    for candidate in (folder, Path("/sys")):
        probe = candidate / ".shiftc-test-probe"
        try:
            probe.mkdir()
        except OSError:
            return candidate
        probe.rmdir()
    pytest.skip("no unwritable folder here (root, and /sys is writable)")


# --- corrupt models -------------------------------------------------------------------------------


@pytest.mark.parametrize("word,broken", [(b"fc0", b"f\xff0"), (b"Gemm", b"Ge\x80m")])
def test_model_string_that_is_not_utf8(tmp_path, word, broken):
    """A flipped byte in a name or op type: protobuf keeps it as bytes and the ONNX checker's own
    error message then failed to decode (UnicodeDecodeError, exit 1)."""
    data = gemm_model().SerializeToString()
    assert word in data
    path = tmp_path / "flipped.onnx"
    path.write_bytes(data.replace(word, broken))
    one_line(*cli("inspect", path)[::2], 2, "not valid UTF-8")
    code, _, err = cli("compile", path, "-o", tmp_path / "out")
    one_line(code, err, 2, "not valid UTF-8")
    assert not (tmp_path / "out").exists() and sorted(os.listdir(tmp_path)) == ["flipped.onnx"]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_weights(tmp_path, value):
    model = gemm_model()
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0] = value
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "w"))
    path = tmp_path / "nan.onnx"
    onnx.save(model, str(path))
    code, out, err = cli("inspect", path)
    one_line(code, err, 2, "'w'", "NaN/Inf")


def test_weight_whose_bytes_do_not_fill_its_dims(tmp_path):
    model = gemm_model()
    model.graph.initializer[0].raw_data += b"\0\0\0\0"  # too many bytes: the ONNX checker lets it through
    path = tmp_path / "long.onnx"
    onnx.save(model, str(path))
    one_line(*cli("inspect", path)[::2], 2, "'w'")


# --- .npz members that fail only when read ---------------------------------------------------------


def pickled_npz(path: Path) -> Path:
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    return path


def bad_crc_npz(path: Path) -> Path:
    np.savez(path, x=np.ones((1, 8), np.float32))
    data = bytearray(path.read_bytes())
    data[data.find(b"NUMPY") + 100] ^= 0xFF  # inside the array's bytes (stored, not deflated): only the CRC notices
    path.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile):
        np.load(path)["x"]
    return path


@pytest.mark.parametrize("make,fragment", [(pickled_npz, "allow_pickle"), (bad_crc_npz, "CRC")])
def test_unreadable_npz_member(tmp_path, artifact, gemm_path, make, fragment):
    npz = make(tmp_path / "data.npz")
    one_line(*cli("run", artifact, "-i", npz)[::2], 2, "data.npz", fragment)
    code, _, err = cli("compile", gemm_path, "-o", tmp_path / "out", "--calibrate", npz)
    one_line(code, err, 2, "data.npz", fragment)
    assert not (tmp_path / "out").exists()


# --- NaN / Inf inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_run_refuses_nonfinite_inputs(tmp_path, artifact, value):
    x = np.ones((1, 8), np.float32)
    x[0, 3] = value
    np.save(tmp_path / "x.npy", x)
    one_line(*cli("run", artifact, "-i", tmp_path / "x.npy")[::2], 2, "'x'", "1 NaN/Inf", "--allow-nonfinite")
    code, out, err = cli("run", artifact, "-i", tmp_path / "x.npy", "--allow-nonfinite", "--json")
    assert code == 0, err


def test_api_run_refuses_nonfinite_inputs(artifact):
    cm = shiftc.load(artifact)
    nan = np.full((1, 8), np.nan, np.float32)
    with pytest.raises(InputError, match="8 NaN/Inf"):
        cm.run(nan)
    with pytest.raises(InputError, match="NaN/Inf"):
        cm.run({"x": nan})
    assert cm.run(nan, allow_nonfinite=True)["y"].shape == (1, 4)
    assert np.isfinite(cm.run(np.ones((1, 8), np.float32))["y"]).all()


def test_nonfinite_calibration_data(tmp_path, gemm_path):
    np.savez(tmp_path / "cal.npz", x=np.full((3, 1, 8), np.nan, np.float32))
    code, _, err = cli("compile", gemm_path, "-o", tmp_path / "out", "--calibrate", tmp_path / "cal.npz")
    one_line(code, err, 2, "NaN/Inf")
    assert not (tmp_path / "out").exists()


# --- outputs that cannot be written ---------------------------------------------------------------


def test_run_output_missing_folder_or_file_parent(tmp_path, artifact):
    np.save(tmp_path / "x.npy", np.ones((1, 8), np.float32))
    one_line(*cli("run", artifact, "-i", tmp_path / "x.npy", "--output", tmp_path / "no" / "o.npz")[::2], 2, "does not exist")
    (tmp_path / "file").write_text("")
    one_line(*cli("run", artifact, "-i", tmp_path / "x.npy", "--output", tmp_path / "file" / "o.npz")[::2], 2, "not a folder")
    assert sorted(os.listdir(tmp_path)) == ["file", "x.npy"]


def test_run_output_unwritable(tmp_path, artifact):
    folder = unwritable_folder(tmp_path)
    np.save(tmp_path / "x.npy", np.ones((1, 8), np.float32))
    one_line(*cli("run", artifact, "-i", tmp_path / "x.npy", "--output", folder / "o.npz")[::2], 2, "not writable")


def test_compile_output_unwritable(tmp_path, gemm_path):
    folder = unwritable_folder(tmp_path)
    one_line(*cli("compile", gemm_path, "-o", folder / "art")[::2], 2, "not writable")
    one_line(*cli("compile", gemm_path, "-o", folder / "deeper" / "art")[::2], 2, "not writable")
    (tmp_path / "file").write_text("")
    one_line(*cli("compile", gemm_path, "-o", tmp_path / "file" / "art")[::2], 2, "not a folder")
    assert not (tmp_path / "file" / "art").exists()


def test_compile_creates_missing_parents(tmp_path, gemm_path):
    code, _, err = cli("compile", gemm_path, "-o", tmp_path / "a" / "b" / "art")
    assert code == 0, err
    assert (tmp_path / "a" / "b" / "art" / "meta.json").is_file()


def test_api_compile_checks_output_before_compiling(tmp_path, gemm_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        shiftc.compile(str(gemm_path), "x86", output=tmp_path / "file" / "art")


# --- matrix: a failed check is not an internal error ---------------------------------------------


def test_matrix_failure_has_its_own_exit_code(tmp_path, gemm_path):
    assert EXIT_CODES[5].startswith("a check failed") and EXIT_CODES[1].startswith("internal error")
    # no output is within a negative tolerance: the row fails its comparison
    code, out, err = cli("matrix", gemm_path, "--targets", "x86", "--tolerance", "-1", "--json-out", tmp_path / "m.json")
    one_line(code, err, 5, "matrix failed for x86")
    assert (tmp_path / "m.json").is_file()
    one_line(*cli("matrix", gemm_path, "--targets", "x86", "--json-out", tmp_path / "no" / "m.json")[::2], 2, "does not exist")


def test_readme_lists_every_exit_code():
    readme = (REPO / "README.md").read_text()
    for code in EXIT_CODES:
        assert f"\n| {code} | " in readme, code


@pytest.mark.parametrize("args,fragment", [(["compile", "--bogus", "m.onnx"], "--bogus"), (["compile"], "MODEL"),
                                           (["nosuchcommand"], "nosuchcommand"), (["run", "a", "-i", "x.npy", "--output", "."], "directory")])
def test_click_usage_errors_are_one_line(args, fragment):
    one_line(*cli(*args)[::2], 2, fragment, "--help")


def test_bare_shiftc_still_prints_the_help():
    result = CliRunner().invoke(main, [])
    assert "Usage:" in result.output and "compile" in result.output


# --- TVM's C++ logging --------------------------------------------------------------------------


def test_no_cxx_log_line_on_stderr(tmp_path):
    """A Conv whose weight does not match its input: the Relax importer raises mid-block, and TVM's
    C++ BlockBuilder destructor logs a warning to fd 2 (and the importer print()s to stdout)."""
    w = np.ones((4, 1, 3, 3), np.float32)
    model = make_model([helper.make_node("Relu", ["x"], ["r"], name="relu0"), helper.make_node("Conv", ["r", "w"], ["y"], name="conv0")],
                       [("x", [1, 4, 6, 6])], [("y", [1, 4, 4, 4])], {"w": w})
    path = tmp_path / "mismatch.onnx"
    onnx.save(model, str(path))
    run = lambda *flags: subprocess.run([sys.executable, "-m", "shiftc.cli", *flags, "inspect", str(path)],  # noqa: E731
                                        capture_output=True, text=True, timeout=300)
    debug = run("--debug")
    assert "block_builder.cc" in debug.stderr, "the model no longer provokes TVM's warning; pick another"
    proc = run()
    one_line(proc.returncode, proc.stderr, 3, "Relax ONNX importer")
    assert proc.stdout == ""
