"""Timing one runtime variant in this process: warm-up, timed calls, statistics, peak RSS, and an
optional busy-loop process pinned to one core while the timed calls run."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from typing import Callable

import numpy as np

# A child that pins itself to one core, says so, and spins until killed.
_BUSY_LOOP = "import os,sys; os.sched_setaffinity(0, {int(sys.argv[1])}); print('ready', flush=True)\nwhile True: pass"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB: ``VmHWM`` of /proc/self/status, the
    high-water mark of this program's own memory. ``getrusage``'s ``ru_maxrss`` only where /proc
    is missing: it survives ``fork`` and ``exec``, so in a child process it starts at the parent's
    size (a benchmark child of a 700 MB parent reported 700 MB whatever it ran)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def summarise(times_ms: list[float], batch: int) -> dict:
    """Median, p90, min and mean latency (ms) of the calls, and throughput (samples/s at the median)."""
    t = np.asarray(times_ms, dtype=np.float64)
    median = float(np.median(t))
    return {
        "calls": int(t.size),
        "median_ms": median,
        "p90_ms": float(np.percentile(t, 90)),
        "min_ms": float(t.min()),
        "mean_ms": float(t.mean()),
        "throughput_per_s": batch * 1e3 / median if median > 0 else None,
    }


def busy_cpu() -> int:
    """The core a busy loop takes: the last one this process may run on."""
    return max(os.sched_getaffinity(0))


@contextlib.contextmanager
def busy_core(enabled: bool = True):
    """While the block runs, a child process spins on one core (``busy_cpu``): the machine with one
    core taken by someone else. Yields the core (None when not ``enabled``)."""
    if not enabled:
        yield None
        return
    cpu = busy_cpu()
    proc = subprocess.Popen([sys.executable, "-c", _BUSY_LOOP, str(cpu)], stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the busy-loop process on core {cpu} did not start")
        yield cpu
    finally:
        proc.kill()
        proc.wait()


def measure(call: Callable[[], object], batch: int, calls: int, warmup: int, busy: bool = False) -> dict:
    """Time ``call`` in this process: ``warmup`` untimed calls, then ``calls`` timed ones (with a
    busy core while they run when ``busy``). Statistics (``summarise``), every call's time and
    the process's peak RSS (which includes loading the model)."""
    if calls < 1:
        raise ValueError("calls must be at least 1")
    for _ in range(warmup):
        call()
    times = []
    with busy_core(busy) as cpu:
        for _ in range(calls):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
    return {**summarise(times, batch), "times_ms": times, "busy_cpu": cpu, "peak_rss_mb": peak_rss_mb()}
