"""NVIDIA GPUs through TVM's CUDA codegen (no GPU is needed to build).

Kernels are scheduled with ``shiftc.schedules.gpu`` (DLight defaults) and compiled to CUDA C.
TVM 0.27 stores that CUDA C in ``model.so`` and compiles it when the module is loaded (its
``tvm_callback_cuda_compile``: NVRTC via ``cuda-bindings``, or ``nvcc`` with
``TVM_CUDA_COMPILE_MODE=nvcc``). So that a broken kernel fails at build time and not on the GPU
machine, ``build`` also compiles the kernels ahead of time with ``nvcc --ptx`` for ``arch`` and
ships ``kernels.cu`` and ``kernels.ptx`` in the artifact (they are also what one inspects).
``load`` needs a CUDA device and refuses plainly without one.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shiftc.core.errors import ShiftcError, ToolchainError

from .base import Target, TargetOption, Tool
from .x86 import VMSession

ARCHS = ("sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90")


@dataclass
class Cuda(Target):
    """``arch``: the GPU's compute capability as ``sm_XY``."""

    arch: str = "sm_80"
    name = "cuda"
    summary = "NVIDIA GPU (CUDA, DLight schedules); builds without a GPU, runs only where one is present"
    option_specs = (TargetOption("arch", str, "GPU architecture (compute capability)", choices=ARCHS, default="sm_80"),)
    tools = (
        Tool("nvcc", "nvidia-cuda-toolkit", "compiles the CUDA kernels ahead of time (PTX)"),
        Tool("g++", "g++", "links the host library"),
    )
    # Debian's nvidia-cuda-toolkit is large and in non-free; an NVIDIA install with nvcc on PATH works too
    installed_by_default = False
    load_on_open = False

    def tvm_target(self):
        import tvm

        host = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
        return tvm.target.Target({"kind": "cuda", "arch": self.arch, "host": host})

    def lowering(self) -> None:
        return None  # schedule() below: DLight, no tuning databases

    def schedule(self, mod):
        from shiftc.schedules import gpu

        return gpu.schedule_for_gpu(mod, self.tvm_target())

    def can_run_here(self) -> str | None:
        return None if gpu_present() else "no GPU"

    def notes(self) -> list[str]:
        return ["GPU present: artifacts run here"] if gpu_present() else ["no GPU here: builds only (runs need a GPU machine)"]

    def build(self, executable, out_dir: Path) -> list[str]:
        self.require_tools()
        source = cuda_source(executable)
        (out_dir / "kernels.cu").write_text(source)
        (out_dir / "kernels.ptx").write_text(compile_ptx(source, self.tvm_target()) if source else "")
        executable.export_library(str(out_dir / "model.so"))
        return ["model.so", "kernels.cu", "kernels.ptx"]

    def load(self, artifact_dir: Path, meta: dict) -> VMSession:
        if not gpu_present():
            raise ToolchainError(
                f"no CUDA device; the artifact was built and can run on a machine with an {self.arch}+ GPU"
            )
        with nvcc_mode():
            return VMSession(Path(artifact_dir) / "model.so", device="cuda")


def gpu_present() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


def cuda_modules(executable):
    """The CUDA device modules in a Relax executable's import tree."""
    found, todo = [], [executable.mod]
    while todo:
        mod = todo.pop()
        if mod.kind == "cuda":
            found.append(mod)
        todo.extend(mod.imports)
    return found


def cuda_source(executable) -> str:
    return "\n".join(m.inspect_source("cuda") for m in cuda_modules(executable))


def compile_ptx(source: str, target) -> str:
    """PTX of CUDA C ``source`` for the cuda ``target``'s arch via nvcc; a compile error is a build error."""
    from tvm.support import nvcc

    arch = str(target.arch)
    try:
        with target:
            return nvcc.compile_cuda(source, target_format="ptx", arch=["-arch", arch], compiler="nvcc").decode()
    except Exception as exc:  # nvcc's own message, one line
        raise ShiftcError(f"nvcc could not compile the generated CUDA kernels for {arch}: {_nvcc_error(exc)}") from None


@contextmanager
def nvcc_mode():
    """Load-time CUDA compile with nvcc unless cuda-bindings (NVRTC) is installed."""
    import importlib.util

    if importlib.util.find_spec("cuda") is not None or "TVM_CUDA_COMPILE_MODE" in os.environ:
        yield
        return
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        yield
    finally:
        os.environ.pop("TVM_CUDA_COMPILE_MODE", None)


def _nvcc_error(exc: Exception) -> str:
    """TVM prefixes nvcc's message with the whole source; keep nvcc's error lines."""
    lines = [ln for ln in str(exc).splitlines() if "error" in ln.lower()]
    return " | ".join(lines[:3])[:500] or str(exc).strip().splitlines()[-1][:300]


_MULTIPLY = re.compile(r"^(mul|mad|fma|mul24|mad24|dp4a|dp2a|mma|wmma)\.")
_REG = re.compile(r"%[a-z]+\d+")


def data_multiplies(ptx: str) -> list[str]:
    """PTX multiply instructions with an operand computed from loaded memory (tensor data).

    A register is *data* when a load from memory (``ld.*`` except kernel parameters) writes it, or any instruction computes it from a data
    register (propagated to a fixed point, so loop-carried values count). Index arithmetic built
    from thread ids, loop counters and constants (``mul.wide.s32 %rd, %r_tid, 4``) is not data,
    so an empty list means no tensor value (a weight or an activation) is ever multiplied
    (multiplies include ``dp4a``/``dp2a`` dot products and ``mma``).
    """
    instrs = []
    for line in ptx.splitlines():
        line = line.split("//")[0].strip().rstrip(";")
        if not line or line.startswith((".", "{", "}", "$", "@")) and not line.startswith("@%"):
            continue
        if line.startswith("@"):  # predicated: drop the guard
            line = line.split(None, 1)[1] if " " in line else ""
        op, _, rest = line.partition(" ")
        if op.startswith(("st.", "bra", "ret", "bar", "red.", "atom.")) and not op.startswith("atom."):
            continue
        dst, _, srcs = rest.partition(",")
        instrs.append((op, line, set(_REG.findall(dst)), set(_REG.findall(srcs))))
    data: set[str] = set()
    changed = True
    while changed:
        changed = False
        for op, _, dst, srcs in instrs:
            loads_data = op.startswith("ld.") and not op.startswith("ld.param")
            if (loads_data or srcs & data) and not dst <= data:
                data |= dst
                changed = True
    return [line for op, line, _, srcs in instrs if _MULTIPLY.match(op) and srcs & data]
