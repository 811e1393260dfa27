"""``import shiftc`` stays light (no TVM) and still gives the API and every submodule on access;
``shiftc --help`` imports neither numpy nor TVM, and ``shiftc run`` only what running needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CNN = Path(__file__).resolve().parents[1] / "examples" / "models" / "cnn.onnx"
SAMPLE = CNN.with_name("cnn_sample.npz")

PROBE = """
import sys
import shiftc
assert "tvm" not in sys.modules, "import shiftc imported TVM"
assert shiftc.api.prepare is not None and shiftc.compile is shiftc.api.compile
assert shiftc.frontend.load is not None
try:
    shiftc.no_such_module
except AttributeError as exc:
    assert "no_such_module" in str(exc)
else:
    raise AssertionError("no AttributeError for a missing name")
print("ok")
"""


def test_import_shiftc_is_lazy_and_complete():
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# shiftc's own process (``program``: the console script, ``python -m shiftc.cli``) running ARGV;
# prints which of the watched modules it imported, and whether it left a torch blocker behind.
COMMAND_PROBE = """
import json, sys
from shiftc.cli import program
sys.argv = ["shiftc", *ARGV]
try:
    program()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "blocker_left": "torch" in sys.modules and sys.modules["torch"] is None,
                  "imported": sorted(m for m in WATCHED if m in sys.modules)}))
"""
WATCHED = ("numpy", "tvm", "torch", "onnx", "onnxruntime", "tvm.relax", "tvm.relax.frontend.onnx", "shiftc.frontend",
           "shiftc.pipeline", "shiftc.passes", "shiftc.calibrate", "shiftc.targets.vta.target")


def _probe(*argv) -> dict:
    code = COMMAND_PROBE.replace("ARGV", repr(list(argv))).replace("WATCHED", repr(WATCHED))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_help_imports_neither_numpy_nor_tvm():
    assert _probe("--help") == {"code": 0, "blocker_left": False, "imported": []}


@pytest.mark.parametrize("options", [{}, {"integer_only": True, "calibration": SAMPLE}], ids=["fp32", "integer-only"])
def test_run_loads_only_the_runtime_and_gives_the_same_outputs(compiled, tmp_path, options):
    """``shiftc run`` on an x86 artifact imports TVM's runtime only (no Relax, no compiler library),
    no torch (tvm_ffi's optional import), ONNX, onnxruntime, other targets or shiftc's compiler
    side; its outputs are the in-process run's (full TVM), bit for bit."""
    model = compiled(CNN, "x86", **options)
    x = np.load(CNN.with_name("cnn_input.npy"))
    np.save(tmp_path / "x.npy", x)
    got = _probe("run", str(model.path), "-i", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npz"))
    assert got == {"code": 0, "blocker_left": False, "imported": ["numpy", "tvm"]}
    with np.load(tmp_path / "y.npz") as y:
        assert np.array_equal(y["logits"], model.run(x)["logits"])


def test_compile_imports_tvm_without_torch(tmp_path):
    """``shiftc compile`` imports TVM with torch hidden (tvm_ffi imports it only for optional interop;
    the import costs seconds of every compile) and leaves torch importable."""
    got = _probe("compile", str(CNN), "-o", str(tmp_path / "artifact"))
    assert got["code"] == 0 and not got["blocker_left"], got
    assert "tvm.relax" in got["imported"] and "torch" not in got["imported"], got
