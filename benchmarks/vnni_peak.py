"""This CPU's int8 dot-product peak, measured: clock under load and instructions per cycle.

    ./py benchmarks/vnni_peak.py [--repeats 5] [--out benchmarks/results/vnni_peak.json]

``vnni_peak.c`` (built here with the system C compiler, features from /proc/cpuinfo's flags, never
assumed) times, per core, on this thread's CPU clock (time descheduled by other load excluded):

- the clock: a chain of dependent register ``add`` (1 cycle each), cross-checked by ``imul`` (3);
- ``vpdpbusd zmm`` / ``ymm`` into 12 independent accumulators (throughput-, not latency-bound),
  where the CPU has AVX-512 VNNI; the AVX2 ``vpmaddubsw + vpmaddwd + vpaddd`` step everywhere.

Each is run on one core, then as two processes pinned to two cores at once (they may share a
physical core's ports). ``peak GOP/s = cores x GHz x instructions/cycle x MACs/instruction x 2``
(zmm: 64 u8*s8 MACs, ymm and the AVX2 step: 32). Medians over repeats; load averages recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "vnni_peak.c"
ITERATIONS = {"add": 5_000_000, "imul": 2_000_000, "zmm": 4_000_000, "ymm": 4_000_000, "avx2": 4_000_000}
MACS = {"zmm": 64, "ymm": 32, "avx2": 32}  # u8*s8 products per counted instruction / step


def cpu_info() -> dict:
    """Model name and feature flags of the first CPU in /proc/cpuinfo."""
    info = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "flags") and key not in info:
            info[key] = value.strip()
    return {"model": info.get("model name", "?"), "flags": sorted(info.get("flags", "").split())}


def modes_for(flags: list[str]) -> list[str]:
    """Dot-product modes this CPU runs (AVX-512 VNNI zmm/ymm need avx512_vnni and avx512vl)."""
    modes = ["avx2"] if "avx2" in flags else []
    if {"avx512_vnni", "avx512f", "avx512vl"} <= set(flags):
        modes = ["zmm", "ymm", *modes]
    return modes


def build(flags: list[str], workdir: Path) -> Path:
    """Compile vnni_peak.c with the system compiler for the features the CPU reports."""
    exe = workdir / "vnni_peak"
    cmd = [os.environ.get("CC", "cc"), "-O2", "-o", str(exe), str(SOURCE)]
    if "avx2" in flags:
        cmd.append("-mavx2")
    if "zmm" in modes_for(flags):
        cmd += ["-DHAVE_AVX512VNNI", "-mavx512f", "-mavx512vl", "-mavx512vnni"]
    subprocess.run(cmd, check=True)
    return exe


def run_pinned(exe: Path, mode: str, cpus: list[int]) -> list[dict]:
    """Run one process per CPU in ``cpus`` at once, each pinned to its CPU; per-process rates/s."""
    procs = [subprocess.Popen([str(exe), mode, str(ITERATIONS[mode])], stdout=subprocess.PIPE, text=True,
                              preexec_fn=lambda c=c: os.sched_setaffinity(0, {c})) for c in cpus]
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"vnni_peak {mode} exited with {p.returncode}")
        _, cpu_s, wall_s, count = out.split()
        rows.append({"per_cpu_s": int(count) / float(cpu_s), "per_wall_s": int(count) / float(wall_s)})
    return rows


def measure(exe: Path, modes: list[str], cpus: list[int], repeats: int) -> dict:
    """Median clock (GHz per core) and, per mode, instructions per cycle per core and the peak."""
    samples = {m: [] for m in ("add", "imul", *modes)}
    wall = {m: [] for m in samples}  # the same per wall second: lower where other load shares a core
    for _ in range(repeats):
        for mode in samples:
            rows = run_pinned(exe, mode, cpus)
            samples[mode].append(statistics.mean(r["per_cpu_s"] for r in rows))
            wall[mode].append(statistics.mean(r["per_wall_s"] for r in rows))
    ghz = statistics.median(samples["add"]) / 1e9
    out = {"cores": len(cpus), "cpus": cpus, "ghz": ghz,
           "ghz_imul_check": 3 * statistics.median(samples["imul"]) / 1e9, "modes": {}}
    for mode in modes:
        ipc = statistics.median(samples[mode]) / 1e9 / ghz
        out["modes"][mode] = {"instructions_per_cycle": ipc, "macs_per_instruction": MACS[mode],
                              "peak_gops": len(cpus) * ghz * ipc * MACS[mode] * 2,
                              "samples_per_s": samples[mode], "wall_samples_per_s": wall[mode]}
    out["clock_samples_per_s"], out["clock_wall_samples_per_s"] = samples["add"], wall["add"]
    return out


def git_rev() -> str:
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return r.stdout.strip() or "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "vnni_peak.json")
    args = ap.parse_args(argv)
    cpu = cpu_info()
    modes = modes_for(cpu["flags"])
    if not modes:
        print("this CPU has neither AVX2 nor AVX-512 VNNI: no int8 dot-product peak to measure", file=sys.stderr)
        return 1
    cpus = sorted(os.sched_getaffinity(0))
    doc = {"git_rev": git_rev(), "cpu_model": cpu["model"], "flags": cpu["flags"], "repeats": args.repeats,
           "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(cpu["flags"], Path(tmp))
        doc["one_core"] = measure(exe, modes, cpus[:1], args.repeats)
        doc["two_cores"] = measure(exe, modes, cpus[:2], args.repeats) if len(cpus) > 1 else None
    doc["loadavg_after"] = os.getloadavg()
    best = modes[0]
    doc["peak_mode"] = best
    doc["peak_gops"] = {"1": doc["one_core"]["modes"][best]["peak_gops"],
                        "2": doc["two_cores"]["modes"][best]["peak_gops"] if doc["two_cores"] else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for n, core in (("1", doc["one_core"]), ("2", doc["two_cores"])):
        if core:
            print(f"{n} core(s): {core['ghz']:.2f} GHz (imul {core['ghz_imul_check']:.2f}); " + ", ".join(
                f"{m} {v['instructions_per_cycle']:.2f}/cycle -> {v['peak_gops']:.0f} GOP/s" for m, v in core["modes"].items()))
    print(f"load {doc['loadavg_before'][0]:.2f} -> {doc['loadavg_after'][0]:.2f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
