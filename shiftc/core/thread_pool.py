"""TVM's CPU thread pool settings, applied wherever shiftc runs a compiled model.

TVM 0.27 configures its pool only through the environment (``src/runtime/thread_pool.cc``,
``threading_backend.cc``), read when the pool starts (the first parallel kernel of a thread).
Its defaults hold up on an idle machine and fall apart when another process keeps a core busy:
idle workers ``sched_yield`` up to 300000 times before sleeping, and a yield beside a busy-loop
hands that process the core for a whole time slice; worker *i* is pinned to core *i*, so the
worker on the busy core cannot move. shiftc's defaults (docs/BENCHMARKS.md has the numbers):

- ``TVM_THREAD_POOL_SPIN_COUNT=0``: an idle worker sleeps at once; the next kernel wakes it;
- ``TVM_BIND_THREADS=0``: no pinning, the OS moves threads away from a busy core (TVM's binding
  also ignores the process's CPU affinity and narrows the calling thread's);
- ``TVM_NUM_THREADS``: the physical cores this process may use (its CPU affinity), as
  onnxruntime's default; TVM's own is half the machine's logical CPUs, whatever the affinity.

A variable the user set (``OMP_NUM_THREADS`` counts for the thread count: TVM falls back to it)
is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

NUM_THREADS = "TVM_NUM_THREADS"
SPIN_COUNT = "TVM_THREAD_POOL_SPIN_COUNT"
BIND_THREADS = "TVM_BIND_THREADS"
EXCLUDE_WORKER0 = "TVM_EXCLUDE_WORKER0"
TVM_ENV = (NUM_THREADS, SPIN_COUNT, BIND_THREADS, EXCLUDE_WORKER0)
DEFAULTS = {SPIN_COUNT: "0", BIND_THREADS: "0"}

_AFFINITY_BIG = 1  # TVM's ThreadGroup::kBig, the mode its pool starts in


def physical_cores() -> int:
    """The physical cores this process may run on: the CPUs of its affinity mask, the hardware
    threads of one core (same package and core id in sysfs) counted once."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology: count the CPU itself
    return max(1, len(cores))


def configure(threads: int | None = None) -> dict[str, str | None]:
    """Set TVM's pool variables in this process's environment: ``threads`` (when given) as
    ``TVM_NUM_THREADS``, and ``DEFAULTS`` plus the default thread count for those the user left
    unset. Call before the first run: TVM reads them when its pool starts. With ``threads`` the
    calling thread's pool, if it is already running, is also told to use at most that many
    (``runtime.config_threadpool``; a running pool cannot grow). Returns ``tvm_env()``."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        os.environ[NUM_THREADS] = str(threads)
    elif NUM_THREADS not in os.environ and "OMP_NUM_THREADS" not in os.environ:
        os.environ[NUM_THREADS] = str(physical_cores())
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if threads is not None:
        import tvm

        tvm.get_global_func("runtime.config_threadpool")(_AFFINITY_BIG, threads)
    return tvm_env()


def tvm_env() -> dict[str, str | None]:
    """TVM's pool variables as this process's environment holds them (None: unset)."""
    return {key: os.environ.get(key) for key in TVM_ENV}
