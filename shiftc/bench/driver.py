"""The per-process driver: every variant runs in its own child process (``python -m
shiftc.bench_worker SPEC OUT``), one child per variant per round, the order of the variants
rotated each round (round 1: A B C, round 2: B C A, ...), so slow drifts of the machine spread over
all of them. The rounds' timed calls are pooled into one median / p90 / min per variant."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .measure import summarise

WORKER = "shiftc.bench_worker"
RUNTIMES = ("shiftc", "onnxruntime", "openvino")


@dataclass
class Variant:
    """One row of a benchmark: a runtime (``RUNTIMES``) and what it runs (an artifact folder, an
    .onnx file, or an OpenVINO .xml / .onnx), on the inputs in the .npz ``inputs`` (keyed by input
    name) whose first dimension is ``batch``."""

    name: str
    runtime: str
    path: str
    inputs: str
    batch: int
    note: str = ""

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r}; one of {RUNTIMES}")
        self.path, self.inputs = str(self.path), str(self.inputs)


def child_env(threads: int) -> dict:
    """The child's environment: TVM's thread pool size (read once, when the pool starts)."""
    return dict(os.environ, TVM_NUM_THREADS=str(threads))


def _run_child(spec: dict, workdir: Path, timeout_s: float) -> dict:
    """One child process timing one variant; its JSON result, or ``{"error": ...}``."""
    spec_file = Path(tempfile.mkstemp(suffix=".json", dir=workdir)[1])
    out_file = spec_file.with_suffix(".out.json")
    spec_file.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([sys.executable, "-m", WORKER, str(spec_file), str(out_file)], env=child_env(spec["threads"]),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if out_file.is_file():
        return json.loads(out_file.read_text())
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": f"worker exited {proc.returncode}: {lines[-1] if lines else 'no output'}"}


def _order(n: int, round_index: int) -> list[int]:
    return [(round_index + i) % n for i in range(n)]


def run_rounds(variants: list[Variant], *, threads: int, rounds: int, calls: int, warmup: int, busy: bool = False,
               progress: Callable[[str], None] | None = None, timeout_s: float = 900) -> list[dict]:
    """Time every variant ``rounds`` times, each time in a fresh child process with ``threads``
    threads (``calls`` timed calls after ``warmup``; with ``busy``, one core kept busy by another
    process during the timed calls). One result per variant, in the given order: the pooled
    statistics, each round's median, PID and peak RSS, and the largest output difference from the
    first variant. A variant that fails is reported with its error and not run again."""
    step = progress or (lambda s: None)
    per_round: list[list[dict]] = [[] for _ in variants]
    errors: list[str | None] = [None] * len(variants)
    load_before = os.getloadavg()[0]  # other jobs on the machine: recorded with every row
    with tempfile.TemporaryDirectory(prefix="shiftc-bench-") as tmp:
        work = Path(tmp)
        for r in range(rounds):
            for i in _order(len(variants), r):
                if errors[i]:
                    continue
                v = variants[i]
                step(f"round {r + 1}/{rounds}: {v.name} (batch {v.batch}, {threads} thread{'s' * (threads > 1)}{', busy core' if busy else ''})")
                spec = {**dataclasses.asdict(v), "threads": threads, "calls": calls, "warmup": warmup, "busy": busy,
                        "save_outputs": str(work / f"outputs{i}.npz") if r == 0 else None}
                result = _run_child(spec, work, timeout_s)
                if "error" in result:
                    errors[i] = result["error"]
                else:
                    per_round[i].append(result)
        diffs = _output_diffs(work, len(variants))
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return [{**_aggregate(v, per_round[i], errors[i], diffs[i], threads, busy), "load_1min_before_after": load}
            for i, v in enumerate(variants)]


def _output_diffs(work: Path, n: int) -> list[float | None]:
    """max |output - first variant's output| over all outputs (by position), per variant."""
    def load(i):
        path = work / f"outputs{i}.npz"
        if not path.is_file():
            return None
        with np.load(path) as data:
            return [data[f"arr_{k}"] for k in range(len(data.files))]

    ref = load(0)
    out: list[float | None] = []
    for i in range(n):
        got = load(i)
        if ref is None or got is None or len(got) != len(ref) or any(a.shape != b.shape for a, b in zip(got, ref)):
            out.append(None)
            continue
        out.append(max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) for a, b in zip(got, ref)))
    return out


def _aggregate(v: Variant, rounds: list[dict], error: str | None, diff: float | None, threads: int, busy: bool) -> dict:
    row = {**{k: val for k, val in dataclasses.asdict(v).items() if k != "inputs"}, "threads": threads, "busy_core": busy, "error": error, "max_abs_diff_vs_first": diff}
    if not rounds:
        return {**row, "rounds": []}
    pooled = [t for r in rounds for t in r["times_ms"]]
    row.update(summarise(pooled, v.batch))
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    row["rss_before_load_mb"] = max(r["rss_before_load_mb"] for r in rounds)  # the runtime's imports alone
    row["load_s"] = float(np.median([r["load_s"] for r in rounds]))
    row["settings"] = rounds[0]["settings"]
    row["rounds"] = [{"pid": r["pid"], "median_ms": r["median_ms"], "p90_ms": r["p90_ms"], "min_ms": r["min_ms"],
                      "peak_rss_mb": r["peak_rss_mb"], "busy_cpu": r["busy_cpu"]} for r in rounds]
    return row
