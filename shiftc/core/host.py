"""The build machine: its LLVM target, and building a Relax module to run on it.

Used wherever shiftc runs a model while compiling (calibration, measuring lossy passes); the
``x86`` target takes its default CPU from here too.
"""

from __future__ import annotations

import numpy as np


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. znver3); it decides which vector units LLVM uses."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def host_vm(mod):
    """Build ``mod`` for this machine's CPU; a Relax VM on ``tvm.cpu()``."""
    import tvm
    from tvm import relax

    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": host_cpu()})
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=target)
    return relax.VirtualMachine(ex, tvm.cpu())


def flatten_outputs(out) -> list[np.ndarray]:
    """The VM returns a tensor or a (nested) tuple of tensors."""
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [a for o in out for a in flatten_outputs(o)]
