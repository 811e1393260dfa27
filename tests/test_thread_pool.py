"""Loading a model applies shiftc's TVM thread pool defaults (spin count 0, no pinning, the
physical cores as the thread count) to the variables the user left unset, before TVM's pool
starts; what TVM's pool then does is read back in a fresh process (its size, and each thread's
CPU affinity from /proc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shiftc.core import thread_pool
from shiftc.core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "models" / "cnn.onnx"
ALL_TVM = (*thread_pool.TVM_ENV, "OMP_NUM_THREADS")

# Load and run the artifact in a fresh interpreter, then report TVM's pool size and the CPU
# affinity of every thread of the process (TVM pins its workers through sched_setaffinity).
CHILD = r"""
import json, os, sys
import numpy as np
start = sorted(os.sched_getaffinity(0))
import shiftc, tvm
from shiftc.core import thread_pool
model = shiftc.load(sys.argv[1], **json.loads(sys.argv[2]))
model.run(np.zeros((1, 1, 28, 28), np.float32))
tasks = {}
for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{tid}/status") as f:
        tasks[tid] = next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list"))
print(json.dumps({"env": thread_pool.tvm_env(), "pool": tvm.runtime.num_threads(), "start": start, "tasks": tasks}))
"""


def _cpus(text: str) -> list[int]:
    """A /proc Cpus_allowed_list ("0-3,6") as CPU ids."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


@pytest.fixture(scope="module")
def cnn_artifact(compiled):
    return compiled(CNN).path


def _run_child(artifact: Path, env: dict, **load_kwargs) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ALL_TVM}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(artifact), json.dumps(load_kwargs)], env={**clean, **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def no_tvm_env(monkeypatch):
    for key in ALL_TVM:
        monkeypatch.delenv(key, raising=False)


def test_configure_fills_in_only_what_the_user_left_unset(no_tvm_env, monkeypatch):
    assert thread_pool.configure() == {"TVM_NUM_THREADS": str(thread_pool.physical_cores()),
                                       "TVM_THREAD_POOL_SPIN_COUNT": "0", "TVM_BIND_THREADS": "0", "TVM_EXCLUDE_WORKER0": None}
    for key in ALL_TVM:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TVM_THREAD_POOL_SPIN_COUNT", "1000")
    monkeypatch.setenv("TVM_BIND_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # TVM's fallback for the thread count: left to it
    assert thread_pool.configure() == {"TVM_NUM_THREADS": None, "TVM_THREAD_POOL_SPIN_COUNT": "1000",
                                       "TVM_BIND_THREADS": "1", "TVM_EXCLUDE_WORKER0": None}


def test_physical_cores_follow_the_process_affinity():
    one = subprocess.run([sys.executable, "-c", "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
                          "from shiftc.core import thread_pool; print(thread_pool.physical_cores())"],
                         capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and one.stdout.strip() == "1", one.stderr
    assert 1 <= thread_pool.physical_cores() <= len(os.sched_getaffinity(0))


def test_a_loaded_model_runs_tvms_pool_with_the_defaults(cnn_artifact):
    got = _run_child(cnn_artifact, {})
    cores = thread_pool.physical_cores()
    assert got["env"] == {"TVM_NUM_THREADS": str(cores), "TVM_THREAD_POOL_SPIN_COUNT": "0", "TVM_BIND_THREADS": "0",
                          "TVM_EXCLUDE_WORKER0": None}
    assert got["pool"] == cores
    # nothing pinned: every thread, TVM's workers and the caller, keeps the process's affinity
    assert {tid: _cpus(c) for tid, c in got["tasks"].items()} == {tid: got["start"] for tid in got["tasks"]}


def test_threads_argument_sets_the_pool_size(cnn_artifact):
    got = _run_child(cnn_artifact, {"TVM_NUM_THREADS": "4"}, threads=1)
    assert got["env"]["TVM_NUM_THREADS"] == "1" and got["pool"] == 1
    with pytest.raises(InputError, match="threads must be at least 1"):
        __import__("shiftc").load(cnn_artifact, threads=0)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or os.sched_getaffinity(0) != set(range(os.cpu_count() or 0)),
                    reason="TVM pins workers to CPUs by number, which needs every CPU in this process's affinity")
def test_user_settings_are_kept_and_tvm_pins_its_workers_as_told(cnn_artifact):
    got = _run_child(cnn_artifact, {"TVM_BIND_THREADS": "1", "TVM_THREAD_POOL_SPIN_COUNT": "1000", "TVM_NUM_THREADS": "2"})
    assert got["env"] == {"TVM_NUM_THREADS": "2", "TVM_THREAD_POOL_SPIN_COUNT": "1000", "TVM_BIND_THREADS": "1",
                          "TVM_EXCLUDE_WORKER0": None}
    assert got["pool"] == 2
    # TVM's binding: its worker sits on one CPU alone
    assert any(len(_cpus(c)) == 1 for c in got["tasks"].values()), got["tasks"]
