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


# LLVM's optimisation level for these builds (artifacts keep TVM's default, 3). They are built once,
# run on a few samples and dropped: level 1 takes ~40% less LLVM time (MobileNetV2: ~2 s of its two
# builds) and their unscheduled kernels run about as fast. Outputs equal level 3's bit for bit
# (MobileNetV2: all 1244 calibration taps and the integer model's outputs; tests/test_host_build.py).
HOST_OPT_LEVEL = 1


def host_target(opt_level: int = HOST_OPT_LEVEL):
    """The LLVM target of this machine's CPU that ``host_vm`` builds for."""
    import tvm

    return tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": host_cpu(), "opt-level": opt_level})


def host_vm(mod, opt_level: int = HOST_OPT_LEVEL):
    """Build ``mod`` for this machine's CPU (``host_target``); a Relax VM on ``tvm.cpu()``."""
    import tvm
    from tvm import relax

    target = host_target(opt_level)
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=target)
    return relax.VirtualMachine(ex, tvm.cpu())


def flatten_outputs(out) -> list[np.ndarray]:
    """The VM returns a tensor or a (nested) tuple of tensors."""
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [a for o in out for a in flatten_outputs(o)]
