"""x86-64 Linux via LLVM, run in-process with the Relax VM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from shiftc.core.host import flatten_outputs, host_cpu  # noqa: F401 (re-exported)

from .base import Target, Tool


@dataclass
class X86(Target):
    """``cpu``: an LLVM CPU name; ``None`` means the host's (detected), ``x86-64-v3`` is generic AVX2."""

    cpu: str | None = None
    name = "x86"
    summary = "x86-64 Linux (LLVM), runs natively"
    tools = (Tool("g++", "g++", "links the model library"),)

    def __post_init__(self):
        if self.cpu is None:
            self.cpu = host_cpu()

    def options(self) -> dict:
        return {"cpu": self.cpu}

    def tvm_target(self):
        import tvm

        return tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": self.cpu, "num-cores": 2})

    def build(self, executable, out_dir: Path) -> list[str]:
        # -s: no debug info or local symbols in the shipped library (it is ~15% of an untuned model's size)
        executable.export_library(str(out_dir / "model.so"), options=["-s"])
        return ["model.so"]

    def load(self, artifact_dir: Path, meta: dict) -> "VMSession":
        return VMSession(artifact_dir / "model.so")


class VMSession:
    """Relax VM over a shared library on the host CPU."""

    def __init__(self, lib_path: Path, device: str = "cpu"):
        import tvm
        from tvm import relax

        self._dev = tvm.device(device, 0)
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), self._dev)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import tvm

        out = self._vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x), self._dev) for x in inputs])
        return flatten_outputs(out)
