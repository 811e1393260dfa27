"""x86-64 Linux via LLVM, run in-process with the Relax VM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from shiftc.core.errors import InputError
from shiftc.core.host import flatten_outputs, host_cpu  # noqa: F401 (re-exported)
from shiftc.schedules import Lowering, shift_form

from .base import Target, TargetOption, Tool


CPU = TargetOption("cpu", str, "LLVM CPU name (default: this host's; x86-64-v3 is generic AVX2)")
CORES = TargetOption("cores", int, "cores of the machine the model runs on, recorded as the LLVM target's "
                     "num-cores for tuning (default: the cores this build may use)")
FLOAT_SHIFT_FORM = TargetOption("float_shift_form", str, "float shift layers: 'auto' (the form measured faster on x86), "
                                "'shift' (shift-add kernels over the packed codes: the small artifact) or 'dot' (FP32 "
                                "conv/matmul over the weights decoded while compiling: faster, FP32-sized weights)",
                                choices=("auto", "shift", "dot"), default="auto")


def host_cores() -> int:
    """The cores this process may run on (its affinity: what a container or taskset grants)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class X86(Target):
    """``cpu``: an LLVM CPU name; ``None`` means the host's (detected), ``x86-64-v3`` is generic AVX2.
    ``cores``: the deployment machine's core count; ``None`` means the build host's (docs/targets.md).
    ``float_shift_form``: which form float shift layers run in (``FLOAT_SHIFT_FORM``)."""

    cpu: str | None = None
    cores: int | None = None
    float_shift_form: str = "auto"
    name = "x86"
    summary = "x86-64 Linux (LLVM), runs natively"
    option_specs = (CPU, CORES, FLOAT_SHIFT_FORM)
    loads_on_tvm_runtime = True  # VMSession: the Relax VM over model.so
    tools = (Tool("g++", "g++", "links the model library"),)

    def __post_init__(self):
        if self.cpu is None:
            self.cpu = host_cpu()
        if self.cores is None:
            self.cores = host_cores()
        super().__post_init__()
        if self.cores < 1:
            raise InputError(f"target {self.name!r}: cores must be at least 1, got {self.cores}")

    def tvm_target(self):
        import tvm

        return tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": self.cpu, "num-cores": self.cores})

    def integer_form(self) -> str:
        # measured on x86 cores; targets built on this one (vta's host, plugins) run on the same cores
        return shift_form.int_kernel_form("x86")

    def lowering(self) -> Lowering:
        """CPU lowerings and schedules, int8 GEMMs on the x86 dot-product intrinsic."""
        form = shift_form.float_kernel_form("x86") if self.float_shift_form == "auto" else self.float_shift_form
        return Lowering(cpu=True, shift_form=self.integer_form(), int8_dot=True, float_shift_form=form)

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
        from tvm.runtime.vm import VirtualMachine  # = relax.VirtualMachine, in TVM's runtime alone

        self._dev = tvm.device(device, 0)
        self._vm = VirtualMachine(tvm.runtime.load_module(str(lib_path)), self._dev)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import tvm

        out = self._vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x), self._dev) for x in inputs])
        return flatten_outputs(out)
