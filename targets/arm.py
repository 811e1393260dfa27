"""64-bit ARM Linux (aarch64-linux-gnu): cross-compiled with LLVM + aarch64-linux-gnu-g++.

The artifact is self-contained for a board: ``model.so``, the C++ ``runner``, the aarch64
``libtvm_runtime.so`` / ``libtvm_ffi.so`` and ``run.sh``. On a non-ARM host ``load`` runs the
runner under ``qemu-aarch64 -L /usr/aarch64-linux-gnu``; on an aarch64 host it runs it natively.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from shiftc.core import thread_pool
from shiftc.core.errors import ShiftcError

from . import aarch64_runtime
from .base import Target, TargetOption, Tool

# LLVM CPU name -> extra features. NEON is baseline on aarch64; +dotprod (sdot/udot) from Armv8.2
# cores that have it, which lets TVM pick its int8 dot-product intrinsics.
CPUS: dict[str, tuple[str, ...]] = {
    "generic": ("+neon",),
    "cortex-a53": ("+neon",),
    "cortex-a55": ("+neon", "+dotprod"),
    "cortex-a57": ("+neon",),
    "cortex-a72": ("+neon",),
    "cortex-a73": ("+neon",),
    "cortex-a75": ("+neon", "+dotprod"),
    "cortex-a76": ("+neon", "+dotprod"),
    "cortex-a77": ("+neon", "+dotprod"),
    "cortex-a78": ("+neon", "+dotprod"),
    "cortex-x1": ("+neon", "+dotprod"),
    "neoverse-n1": ("+neon", "+dotprod"),
    "neoverse-v1": ("+neon", "+dotprod", "+i8mm"),
    "neoverse-n2": ("+neon", "+dotprod", "+i8mm"),
}
SYSROOT = "/usr/aarch64-linux-gnu"

RUN_SH = """#!/bin/sh
# Run this shiftc artifact on an aarch64 Linux board:
#   ./run.sh OUT_DIR IN_0.npy [IN_1.npy ...]     (one .npy per model input, in model order)
# Outputs are written as OUT_DIR/output_<i>.npy. Add --repeat N to time N runs.
# TVM's thread pool: idle workers sleep at once and are not pinned to cores, unless set
# (what shiftc runs with everywhere; TVM_NUM_THREADS picks the thread count).
here="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TVM_THREAD_POOL_SPIN_COUNT="${TVM_THREAD_POOL_SPIN_COUNT:-0}" TVM_BIND_THREADS="${TVM_BIND_THREADS:-0}"
mkdir -p "$1"
exec "$here/runner" "$here/model.so" "$@"
"""


def host_is_aarch64() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


@dataclass
class Arm(Target):
    """``cpu``: an aarch64 LLVM CPU name (see ``CPUS``); it sets ``mcpu`` and ``mattr``."""

    cpu: str = "cortex-a72"
    name = "arm"
    summary = "aarch64 Linux (LLVM, cross-compiled; C++ runner; runs here under qemu-aarch64)"
    option_specs = (TargetOption("cpu", str, "aarch64 CPU (LLVM name)", choices=tuple(CPUS), default="cortex-a72"),)
    tools = (
        Tool("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "cross-links the model and the runner"),
        Tool("qemu-aarch64", "qemu-user", "runs aarch64 artifacts on this host", needed_for="run"),
    )

    def tvm_target(self):
        import tvm

        return tvm.target.Target(
            {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": self.cpu, "mattr": list(CPUS[self.cpu]), "num-cores": 4}
        )

    def missing_tools(self) -> list[Tool]:
        # qemu is only needed where the host cannot run aarch64 code itself
        return [t for t in super().missing_tools() if not (t.needed_for == "run" and host_is_aarch64())]

    def emulator(self) -> str | None:
        return None if host_is_aarch64() else "qemu"

    def notes(self) -> list[str]:
        if aarch64_runtime.runtime_cached():
            return [f"aarch64 TVM runtime cached in {aarch64_runtime.runtime_dir()}"]
        return ["aarch64 TVM runtime not cached yet: `shiftc targets --prefetch` (or the first arm compile) downloads it"]

    def build(self, executable, out_dir: Path) -> list[str]:
        from tvm.support import cc

        self.require_tools()
        libs = aarch64_runtime.runtime_libs()
        runner = aarch64_runtime.runner_binary()
        executable.export_library(str(out_dir / "model.so"), fcompile=cc.cross_compiler(aarch64_runtime.CXX))
        shutil.copy(runner, out_dir / "runner")
        for name, path in libs.items():
            shutil.copy(path, out_dir / name)
        (out_dir / "run.sh").write_text(RUN_SH)
        for exe in ("runner", "run.sh"):
            (out_dir / exe).chmod(0o755)
        return ["model.so", "runner", *libs, "run.sh"]

    def load(self, artifact_dir: Path, meta: dict) -> "RunnerSession":
        if not host_is_aarch64():
            self.require_tools("run")
        return RunnerSession(Path(artifact_dir), len(meta["outputs"]))


class RunnerSession:
    """Runs the artifact's C++ runner (under qemu on non-ARM hosts); data goes through .npy files."""

    def __init__(self, artifact_dir: Path, num_outputs: int):
        self.artifact_dir = artifact_dir.absolute()
        self.num_outputs = num_outputs
        self.last_run_s: float | None = None

    def command(self, out_dir: Path, inputs: Sequence[Path]) -> list[str]:
        cmd = [str(self.artifact_dir / "runner"), str(self.artifact_dir / "model.so"), str(out_dir), *map(str, inputs)]
        return cmd if host_is_aarch64() else ["qemu-aarch64", "-L", SYSROOT, *cmd]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import time

        with tempfile.TemporaryDirectory(prefix="shiftc-arm-run-") as tmp:
            paths = []
            for i, x in enumerate(inputs):
                paths.append(Path(tmp) / f"input_{i}.npy")
                np.save(paths[-1], np.ascontiguousarray(x))
            out_dir = Path(tmp) / "out"
            out_dir.mkdir()
            # TVM's pool settings as loading the model left them (shiftc.core.thread_pool)
            pool = {**thread_pool.tvm_env(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
            env = {"LD_LIBRARY_PATH": str(self.artifact_dir), "PATH": _path(), **{k: v for k, v in pool.items() if v is not None}}
            t0 = time.perf_counter()
            proc = subprocess.run(self.command(out_dir, paths), capture_output=True, text=True, env=env)
            self.last_run_s = time.perf_counter() - t0
            if proc.returncode != 0:
                tail = " ".join(proc.stderr.strip().splitlines()[-3:])
                raise ShiftcError(f"the arm runner failed (exit {proc.returncode}): {tail}")
            outs = [np.load(out_dir / f"output_{i}.npy") for i in range(self.num_outputs)]
            extra = len(list(out_dir.glob("output_*.npy"))) - self.num_outputs
            if extra:
                raise ShiftcError(f"the arm runner wrote {self.num_outputs + extra} outputs; meta.json lists {self.num_outputs}")
            return outs


def _path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")
