"""Reproducible artifacts: the same model, calibration data and options give the same bytes.

Two separate processes (different ``PYTHONHASHSEED``, working folder, arm runtime cache folder,
TVM/OpenMP thread count) each run the real ``shiftc compile`` CLI on their own copy of the
Fashion-MNIST CNN, its calibration sample and a tuning database, one with absolute and one with
relative paths, for FP32 / integer-only / shift x86, arm (cross-built, when the toolchain is here)
and vta. Every artifact must list the same
files with the same bytes, and no file may name the folder it was built in or this host's paths.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiftc.schedules import database

pytestmark = pytest.mark.slow  # 2 x 5 real-model compiles: about 75 s on 2 cores

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
SHIPPED_DB = ROOT / "schedules" / "databases" / "x86-64-v3" / "fashion-cnn"
X86 = ["--cpu", "x86-64-v3", "--cores", "4"]  # fixed: the defaults are this build host's
CONFIGS = {
    "fp32": ["-t", "x86", *X86, "--db", "fashion-cnn"],  # a copy of the shipped database, beside the model
    "int": ["-t", "x86", *X86, "--integer-only"],
    "shift4": ["-t", "x86", *X86, "--shift-bits", "4"],
    "arm": ["-t", "arm", "--cpu", "cortex-a72"],
    "vta": ["-t", "vta", *X86],  # vta sets integer-only itself
}
# one process compiles every configuration through the CLI's own entry point (one TVM import)
SCRIPT = """
import json, sys
from shiftc.cli import main
for name, args in json.loads(sys.argv[1]).items():
    try:
        main(args, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
"""


def _arm_ready() -> bool:
    from shiftc.targets import aarch64_runtime

    return shutil.which(aarch64_runtime.CXX) is not None and aarch64_runtime.runtime_cached()


def _side(tmp: Path, name: str, seed: int, absolute: bool, configs: dict, threads: str | None = None) -> tuple[subprocess.Popen, Path, Path]:
    """Start one compiling process in its own folder; returns (process, folder, artifacts folder)."""
    from shiftc.targets import aarch64_runtime

    work = tmp / name
    work.mkdir(parents=True)
    for f in ("cnn.onnx", "cnn_sample.npz"):
        shutil.copy(MODELS / f, work / f)
    shutil.copytree(SHIPPED_DB, work / "fashion-cnn")
    cache = tmp / f"cache-{name}"  # the arm runner is cross-built afresh in each process
    if "arm" in configs:
        shutil.copytree(aarch64_runtime.runtime_dir(), cache / "aarch64" / aarch64_runtime.runtime_dir().name)
    base = work if absolute else Path(".")
    args = {c: ["compile", str(base / "cnn.onnx"), "--calibrate", str(base / "cnn_sample.npz"), "-o", str(base / "out" / c),
                *[str(base / o) if o == "fashion-cnn" else o for o in opts]] for c, opts in configs.items()}
    env = dict(os.environ, PYTHONHASHSEED=str(seed), SHIFTC_CACHE_DIR=str(cache))
    if threads is not None:
        env.update(TVM_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(args)], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, work, work / "out"


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _differences(a: Path, b: Path) -> list[str]:
    """Human-readable differences between two artifact folders (empty: byte-identical)."""
    if _listing(a) != _listing(b):
        return [f"listings differ: {_listing(a)} vs {_listing(b)}"]
    out = []
    for rel in _listing(a):
        fa, fb = a / rel, b / rel
        if fa.is_file() and fa.read_bytes() != fb.read_bytes():
            detail = ""
            if rel.endswith(".json"):
                diff = difflib.unified_diff(fa.read_text().splitlines(), fb.read_text().splitlines(), lineterm="", n=1)
                detail = "\n" + "\n".join(list(diff)[2:20])
            out.append(f"{a.name}/{rel} differs{detail}")
    return out


def _foreign_paths(folder: Path, paths: list[Path]) -> list[str]:
    """Files of ``folder`` whose bytes contain any of ``paths``."""
    needles = [str(p).encode() for p in paths]
    return [str(f.relative_to(folder)) for f in sorted(folder.rglob("*"))
            if f.is_file() and any(n in f.read_bytes() for n in needles)]


def test_same_inputs_from_other_folders_and_processes_give_the_same_bytes(tmp_path):
    configs = dict(CONFIGS)
    if not _arm_ready():
        configs.pop("arm")  # no cross toolchain or cached aarch64 runtime: the other four still count
    t0 = time.perf_counter()
    sides = [_side(tmp_path, "a", 1, True, configs, threads="1"), _side(tmp_path / "elsewhere" / "deeper", "b", 2024, False, configs)]
    for proc, _, _ in sides:
        log, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, log[-3000:]
    print(f"2 x {len(configs)} compiles in {time.perf_counter() - t0:.0f}s")
    (_, work_a, out_a), (_, work_b, out_b) = sides
    assert sorted(p.name for p in out_a.iterdir()) == sorted(p.name for p in out_b.iterdir()) == sorted(configs)
    problems = [d for c in configs for d in _differences(out_a / c, out_b / c)]
    assert not problems, "\n".join(problems)
    host = [work_a, work_b, tmp_path, Path(sys.prefix)]
    leaks = {c: _foreign_paths(out_a / c, host) for c in configs}
    assert not any(leaks.values()), f"artifact files that name a build-host path: {leaks}"
    _check_sources(json.loads((out_a / "fp32" / "meta.json").read_text()))


def _check_sources(meta: dict) -> None:
    """The model, calibration data and --db are recorded by base name and sha256, not by path."""
    digest = {f: hashlib.sha256((MODELS / f).read_bytes()).hexdigest() for f in ("cnn.onnx", "cnn_sample.npz")}
    assert meta["sources"]["model"] == {"name": "cnn.onnx", "sha256": digest["cnn.onnx"]}
    assert meta["sources"]["calibration"] == {"name": "cnn_sample.npz", "sha256": digest["cnn_sample.npz"]}
    assert meta["sources"]["database"] == {"name": "fashion-cnn", "sha256": database.records_digest(SHIPPED_DB)}
    assert (meta["report"]["model"], meta["report"]["calibration"]) == ("cnn.onnx", "cnn_sample.npz")
    schedule = next(s for s in meta["report"]["stages"] if s["name"] == "schedule")
    assert schedule["summary"]["database"] == database.user_label(SHIPPED_DB) and schedule["summary"]["tuned"]
