"""shiftc matrix: every target built, x86 and arm (qemu) run and compared, cuda reported honestly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shiftc import matrix
from shiftc.targets import cuda

from conftest import make_model
from helpers import json_schema
from helpers.toolchains import ARM_MISSING, has_arm

SHIFTC = str(Path(sys.executable).with_name("shiftc"))
HAVE_CROSS = has_arm()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import numpy as np
    from onnx import helper

    rng = np.random.default_rng(0)
    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("MatMul", ["f", "m"], ["y"])],
        [("x", [1, 3, 8, 8])],
        [("y", [1, 10])],
        {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "m": rng.standard_normal((256, 10)).astype(np.float32)},
    )  # fmt: skip
    path = tmp_path_factory.mktemp("matrix") / "small.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def matrix_json(model_path, tmp_path_factory):
    keep = tmp_path_factory.mktemp("keep")
    allow = [] if cuda.gpu_present() else ["--allow-skip", "cuda"]  # as scripts/ci-matrix.sh does
    proc = subprocess.run([SHIFTC, "matrix", str(model_path), "--targets", "x86,arm,cuda", "--keep", str(keep), "--json", *allow],
                          capture_output=True, text=True)
    return proc, json.loads(proc.stdout) if proc.stdout else None, keep


def test_matrix_json(matrix_json):
    proc, result, keep = matrix_json
    assert proc.returncode == 0, proc.stderr
    rows = {r["target"]: r for r in result["rows"]}
    assert list(rows) == ["x86", "arm", "cuda"] and result["ok"]
    assert result["skipped"] == ([] if cuda.gpu_present() else ["cuda"])
    assert not rows["x86"]["skipped"] and rows["cuda"]["skipped"] == (not cuda.gpu_present())
    assert rows["x86"]["built"] and rows["x86"]["ran"] and rows["x86"]["max_error"] <= 1e-4
    if HAVE_CROSS:
        assert rows["arm"]["built"] and rows["arm"]["ran"] and rows["arm"]["max_error"] <= 1e-4
        assert rows["arm"]["size_bytes"] > 1_000_000  # carries the aarch64 runtime
    if cuda.Cuda().tools[0].path():
        assert rows["cuda"]["built"] and (keep / "cuda" / "kernels.ptx").is_file()
        assert rows["cuda"]["ran"] == cuda.gpu_present()
        if not cuda.gpu_present():
            assert rows["cuda"]["run_note"] == "no (no GPU)" and rows["cuda"]["max_error"] is None
    for name, row in rows.items():
        assert row["compared_with"] == "onnxruntime FP32"
        if row["built"]:
            assert (keep / name / "meta.json").is_file()


def test_matrix_fails_above_tolerance(model_path, matrix_json):
    x86_error = matrix_json[1]["rows"][0]["max_error"]
    if x86_error == 0:
        pytest.skip("x86 matched onnxruntime exactly; no tolerance below the error exists")
    proc = subprocess.run([SHIFTC, "matrix", str(model_path), "--targets", "x86", "--tolerance", f"{x86_error / 2:g}"], capture_output=True, text=True)
    assert proc.returncode == 5  # a check failed (README, exit codes)
    assert "matrix FAILED" in proc.stdout and "x86" in proc.stdout


def test_matrix_table_and_unknown_target(model_path):
    proc = subprocess.run([SHIFTC, "matrix", str(model_path), "--targets", "x86"], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 0, proc.stderr
    assert "shiftc matrix" in proc.stdout and "max error" in proc.stdout and "matrix ok" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if "target" in line and "max error" in line)
    assert re.split(r"\s{2,}", header.strip())[3:5] == ["max error", "ok"]  # columns: 2+ blanks apart
    row = next(line for line in proc.stdout.splitlines() if line.startswith("x86 "))
    assert re.split(r"\s{2,}", row.strip())[4] == "yes" and "compared with onnxruntime FP32: x86" in proc.stdout
    proc = subprocess.run([SHIFTC, "matrix", str(model_path), "--targets", "x86,riscv"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown target" in proc.stderr


def test_missing_toolchain_fails_unless_allowed_to_skip(model_path, tmp_path, monkeypatch):
    from test_arm import _path_without

    monkeypatch.setenv("PATH", _path_without("aarch64-linux-gnu-g++", tmp_path))
    (row,) = matrix.run_matrix(model_path, ["arm"])
    assert not row.built and not row.ok and not row.skipped
    assert row.build_note == "no toolchain: apt-get install g++-aarch64-linux-gnu; not checked (pass --allow-skip arm to accept)"
    x86, arm_row = matrix.run_matrix(model_path, ["x86", "arm"], allow_skip=["x86", "arm"])
    assert not arm_row.built and arm_row.ok and arm_row.skipped
    assert arm_row.build_note == "no toolchain: apt-get install g++-aarch64-linux-gnu"
    assert x86.ran and x86.ok and not x86.skipped  # allowed to skip, but it ran: checked as usual


def test_uncached_arm_runtime_offline_fails_unless_allowed_to_skip(model_path, tmp_path, monkeypatch):
    """The aarch64 runtime cannot be fetched (SHIFTC_OFFLINE, empty cache): a build that cannot happen here."""
    if not HAVE_CROSS:
        pytest.skip(ARM_MISSING)
    monkeypatch.setenv("SHIFTC_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("SHIFTC_OFFLINE", "1")
    (row,) = matrix.run_matrix(model_path, ["arm"])
    assert not row.built and not row.ok and "aarch64 TVM runtime is not cached" in row.build_note
    (row,) = matrix.run_matrix(model_path, ["arm"], allow_skip=["arm"])
    assert not row.built and row.ok and row.skipped and "--allow-skip" not in row.build_note


def test_a_target_that_cannot_run_here_fails_unless_allowed_to_skip(model_path, monkeypatch):
    """Built but not run (as cuda without a GPU) is no check: exit 5, unless --allow-skip names it."""
    from click.testing import CliRunner

    from shiftc.cli import main
    from shiftc.targets.x86 import X86

    monkeypatch.setattr(X86, "can_run_here", lambda self: "no CPU today")
    res = CliRunner().invoke(main, ["matrix", str(model_path), "--targets", "x86", "--json"])
    assert res.exit_code == 5, res.output
    result = json_schema.validate("matrix", json.loads(res.stdout))
    (row,) = result["rows"]
    assert not result["ok"] and row["built"] and not row["ran"] and not row["ok"] and not row["skipped"]
    assert row["run_note"] == "no (no CPU today); not checked (pass --allow-skip x86 to accept)"
    res = CliRunner().invoke(main, ["matrix", str(model_path), "--targets", "x86", "--allow-skip", "vta,x86", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    (row,) = result["rows"]
    assert result["ok"] and result["skipped"] == ["x86"]
    assert row["skipped"] and row["ok"] and row["run_note"] == "no (no CPU today)"
    res = CliRunner().invoke(main, ["matrix", str(model_path), "--targets", "x86", "--allow-skip", "x86"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "skipped" in res.stdout and "matrix ok (x86 skipped: allowed by --allow-skip)" in res.stdout


def test_allow_skip_names_known_targets(model_path):
    proc = subprocess.run([SHIFTC, "matrix", str(model_path), "--targets", "x86", "--allow-skip", "cdua"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown target" in proc.stderr and "cdua" in proc.stderr


def test_output_error():
    import numpy as np

    ref = [np.array([1.0, 100.0]), np.array([3], np.int64)]
    assert matrix.output_error([np.array([1.0, 100.0]), np.array([3])], ref) == 0
    assert matrix.output_error([np.array([1.5, 101.0]), np.array([3])], ref) == pytest.approx(0.5)
    assert matrix.output_error([np.array([1.0, 100.0])], ref) == float("inf")


def test_vta_is_compared_bit_for_bit_with_the_x86_integer_build(model_path, tmp_path):
    proc = subprocess.run([SHIFTC, "matrix", str(model_path), "--targets", "x86,vta", "--keep", str(tmp_path), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    x86, vta = result["rows"]
    assert result["ok"] and x86["compared_with"] == "onnxruntime FP32" and x86["max_error"] <= 1e-4
    assert vta["compared_with"] == "x86 --integer-only --requant pow2, bit for bit"
    assert vta["ran"] and vta["ok"] and vta["max_error"] == 0
    (reference,) = tmp_path.glob("reference-x86-*")
    options = json.loads((reference / "meta.json").read_text())["options"]
    assert options["integer_only"] is True and options["requant"] == "pow2"


def test_a_bit_for_bit_comparison_fails_on_any_difference(model_path, monkeypatch):
    """Against the float x86 build the integer vta outputs differ a little: with tolerance 0 the row fails."""
    from shiftc.targets import Comparison
    from shiftc.targets.vta.target import VTA

    monkeypatch.setattr(VTA, "comparison", lambda self: Comparison("x86", {}, tolerance=0))
    (row,) = matrix.run_matrix(model_path, ["vta"], tolerance=1.0)
    assert row.ran and row.max_error > 0 and not row.ok and row.compared_with == "x86, bit for bit"
