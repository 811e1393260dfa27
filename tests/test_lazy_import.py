"""``import shiftc`` stays light (no TVM) and still gives the API and every submodule on access."""

from __future__ import annotations

import subprocess
import sys

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
