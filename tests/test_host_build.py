"""``core.host.host_vm`` (the builds shiftc runs while compiling: calibration, error measurement)
uses LLVM optimisation level ``HOST_OPT_LEVEL`` for speed; its outputs equal a level-3 build's bit
for bit, on every intermediate tensor the calibration reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm

from shiftc import calibrate, frontend
from shiftc.core.host import HOST_OPT_LEVEL, flatten_outputs, host_target, host_vm

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def test_host_builds_use_the_cheaper_level():
    assert HOST_OPT_LEVEL < 3 and int(host_target().attrs["opt-level"]) == HOST_OPT_LEVEL


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_cheaper_host_build_gives_level_3_outputs(name):
    loaded = frontend.load(MODELS / f"{name}.onnx")
    mod = frontend.to_relax(loaded)
    mod = calibrate.probe_module(mod, calibrate.float_values(mod["main"]))  # every float tensor
    with np.load(MODELS / f"{name}_sample.npz") as data:
        args = [tvm.runtime.tensor(np.ascontiguousarray(data[s.name][:1])) for s in loaded.inputs]
    cheap, full = (flatten_outputs(host_vm(mod, level)["main"](*args)) for level in (HOST_OPT_LEVEL, 3))
    assert len(cheap) > 10 and all(a.tobytes() == b.tobytes() for a, b in zip(cheap, full, strict=True))
