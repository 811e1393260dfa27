"""CI cannot pass without checking: every test runs under a timeout, and a hung test fails the run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_test_runs_under_a_timeout(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout (the dev extra) is not installed"
    assert 0 < float(pytestconfig.getini("timeout")) <= 300
    assert pytestconfig.getini("timeout_method") == "thread"


HANG = """import ctypes


def test_deadlocks_in_c():
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER (glibc)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # waits for itself, forever


def test_after():
    pass
"""


def test_a_test_deadlocked_in_c_fails_the_run(tmp_path):
    """setup.cfg's timeout settings (the limit shortened to 2 s) stop a test deadlocked in a C call
    that released the GIL, as TVM's calls do. The signal method would wait forever here: the SIGALRM
    handler only runs once the C call returns, and pthread_mutex_lock does not return on a signal."""
    (tmp_path / "test_hang.py").write_text(HANG)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(REPO / "setup.cfg"),
           "--rootdir", str(tmp_path), "-o", "timeout=2", str(tmp_path / "test_hang.py")]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and time.monotonic() - t0 < 150, output
    assert "Timeout" in output and "test_deadlocks_in_c" in output and "passed" not in output, output
