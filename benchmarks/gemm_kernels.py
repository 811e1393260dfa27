"""GOP/s of single GEMM kernels against the AVX2 peaks (``benchmarks/run.py --kernels N``), and
shiftc's int8 GEMM kernel against this CPU's *measured* dot-product peak:

    ./py benchmarks/vnni_peak.py                      # writes results/vnni_peak.json
    ./py benchmarks/gemm_kernels.py [--threads 1 2]   # writes results/vnni_gemm.json

The second times the kernel the compiler emits for integer pointwise convs / matmuls
(``int8_gemm.gemm_te`` scheduled by ``int8_gemm.schedule_in_place``) on square GEMMs and
MobileNetV2's largest pointwise shapes, checks each result against NumPy, and divides by the
peak of as many cores as threads. Each thread count runs in its own child process
(``TVM_NUM_THREADS`` is read when TVM's pool starts).

TVM only, one kernel at a time through ``time_evaluator``: no other runtime shares the process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 80  # timed single calls per shape
# (label, leading dims of the activation, K, N): square GEMMs, then MobileNetV2 (224, batch 1)
# pointwise convs as NHWC GEMMs: the head 320->1280, the 7x7 block's project / expand, and
# the largest-map expand of each other stage
GEMM_SHAPES = (
    ("square 512", (512,), 512, 512),
    ("square 1024", (1024,), 1024, 1024),
    ("mbv2 7x7 320->1280", (1, 7, 7), 320, 1280),
    ("mbv2 7x7 960->160", (1, 7, 7), 960, 160),
    ("mbv2 7x7 160->960", (1, 7, 7), 160, 960),
    ("mbv2 14x14 96->576", (1, 14, 14), 96, 576),
    ("mbv2 28x28 32->192", (1, 28, 28), 32, 192),
    ("mbv2 56x56 24->144", (1, 56, 56), 24, 144),
)


def peaks() -> dict:
    """Cores, nominal GHz (/proc/cpuinfo) and the AVX2 fp32 / int8 peaks they give."""
    from shiftc.targets.x86 import host_cpu

    mhz = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    ghz = (mhz or 0) / 1e3
    cores = int(os.environ.get("SHIFTC_BENCH_CORES", len(os.sched_getaffinity(0))))
    return {
        "llvm_cpu": host_cpu(),
        "ghz": ghz,
        "cores": cores,
        # 2 FMA ports x 8 fp32 lanes x 2 flops; int8: 2 ports x 32 u8*s8 pairs x 2 ops (pmaddubsw)
        "avx2_fp32_peak_gflops": cores * ghz * 32,
        "avx2_int8_peak_gops": cores * ghz * 128,
    }


def measured_pct(gops: float, threads: int) -> float | None:
    """% of the dot-product peak ``vnni_peak.py`` measured for ``threads`` cores (None: not measured)."""
    path = RESULTS / "vnni_peak.json"
    peak = json.loads(path.read_text())["peak_gops"].get(str(threads)) if path.exists() else None
    return 100 * gops / peak if peak else None


def kernel_gops(size: int, threads: int) -> list[dict]:
    """GOP/s of single GEMM kernels (size^3) against the AVX2 peaks: the tensorized int8 GEMM on
    AVX2 (x86-64-v3) and with this host's best int8 instruction, the same loop nest without the
    intrinsic, and fp32 with the default CPU schedule."""
    import tvm
    from tvm import te

    from shiftc.schedules import cpu, x86_int8
    from shiftc.targets import get

    rows = []
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    m = n = k = size

    def timed(lib, args):
        ev = lib.mod.time_evaluator("main", dev, number=5, repeat=7, min_repeat_ms=50)
        return float(np.median(ev(*args).results))

    for label, t in (("x86-64-v3", get("x86", cpu="x86-64-v3").tvm_target()), ("host", get("x86").tvm_target())):
        for intrinsic in (True, False):
            func, lanes = x86_int8.int8_matmul(m, n, k, t, use_intrinsic=intrinsic)
            lib = tvm.compile(tvm.IRModule({"main": func}), target=t)
            args = [tvm.runtime.tensor(rng.integers(0, 255, (m, k)).astype("uint8")),
                    tvm.runtime.tensor(rng.integers(-64, 65, (n // lanes, k // 4, lanes, 4)).astype("int8")),
                    tvm.runtime.tensor(np.zeros((m, n), "int32"))]
            gops = 2 * m * n * k / timed(lib, args) / 1e9
            rows.append({"kernel": f"int8 GEMM {size}^3", "cpu": f"{label} ({t.attrs['mcpu']})",
                         "how": (x86_int8.intrinsic_for(t)[0] if intrinsic else "same loops, no intrinsic"),
                         "gops": gops, "peak": "int8",
                         "pct_of_measured_peak": measured_pct(gops, threads) if label == "host" and intrinsic else None})
        x = te.placeholder((m, k), "float32", name="X")
        w = te.placeholder((k, n), "float32", name="W")
        r = te.reduce_axis((0, k), name="r")
        c = te.compute((m, n), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), name="C")
        func, _ = cpu.schedule_func(te.create_prim_func([x, w, c]), cpu.vector_lanes(t))
        lib = tvm.compile(tvm.IRModule({"main": func}), target=t)
        args = [tvm.runtime.tensor(rng.standard_normal((m, k)).astype("float32")),
                tvm.runtime.tensor(rng.standard_normal((k, n)).astype("float32")),
                tvm.runtime.tensor(np.zeros((m, n), "float32"))]
        rows.append({"kernel": f"fp32 GEMM {size}^3", "cpu": f"{label} ({t.attrs['mcpu']})", "how": "default CPU schedule",
                     "gops": 2 * m * n * k / timed(lib, args) / 1e9, "peak": "fp32"})
    return rows


def _gemm_kernel(lead: tuple, k: int, n: int, target, fused: bool):
    """The compiler's int8 GEMM kernel (u8 activations x packed s8 weights) for one shape; with
    ``fused``, an epilogue as a requantiser has (clamp to int8, cast) runs on each int32 tile."""
    import tvm
    from tvm import s_tir, te

    from shiftc.schedules import int8_gemm, x86_int8

    lanes = x86_int8.intrinsic_for(target)[1]
    x = te.placeholder((*lead, k), "uint8", name="X")
    wp = te.placeholder((n // lanes, k // 4, lanes, 4), "int8", name="Wp")
    y = int8_gemm.gemm_te(x, wp, lanes, 4, "int8_dot_gemm")
    if fused:
        y = te.compute(y.shape, lambda *i: te.min(te.max(y(*i), -128), 127).astype("int8"), name="clamp")
    sch = s_tir.Schedule(te.create_prim_func([x, wp, y]))
    if not int8_gemm.schedule_in_place(sch, target):
        raise RuntimeError("the int8 GEMM schedule did not apply")
    return tvm.compile(sch.mod, target=target), lanes


def _timed_row(label: str, lead: tuple, k: int, n: int, fused: bool, target, rng) -> dict:
    """One shape's median and best GOP/s, after checking the result against NumPy."""
    import tvm

    from shiftc.schedules import cpu_features, x86_int8

    limit = 127 if cpu_features.int8_dot_instruction(target) == "avx512vnni" else x86_int8.WEIGHT_LIMIT
    lib, lanes = _gemm_kernel(lead, k, n, target, fused)
    x = rng.integers(0, 256, (*lead, k)).astype("uint8")
    w = rng.integers(-limit, limit + 1, (n, k)).astype("int8")
    args = [tvm.runtime.tensor(x), tvm.runtime.tensor(x86_int8.pack_weights(w, lanes)),
            tvm.runtime.tensor(np.zeros((*lead, n), "int8" if fused else "int32"))]
    lib["main"](*args)
    want = x.astype(np.int32) @ w.astype(np.int32).T
    if not np.array_equal(args[2].numpy(), want.clip(-128, 127).astype(np.int8) if fused else want):
        raise AssertionError(f"int8 GEMM {label}: result differs from NumPy")
    # single calls (0.1-3 ms): the best of them fits between the slices other load takes of a core
    secs = lib.mod.time_evaluator("main", tvm.cpu(), number=1, repeat=REPEATS)(*args).results
    ops = 2 * int(np.prod(lead)) * k * n
    return {"shape": label, "m": int(np.prod(lead)), "k": k, "n": n, "epilogue": "clamp, int8" if fused else "none",
            "gops_median": ops / float(np.median(secs)) / 1e9, "gops_best": ops / float(np.min(secs)) / 1e9}


def gemm_vs_numpy_gops(target) -> list[dict]:
    """Median and best GOP/s of the int8 GEMM kernel per shape of ``GEMM_SHAPES``, without and
    with a fused epilogue (bit-exact against NumPy first, else it raises). Threads:
    ``TVM_NUM_THREADS`` of this process."""
    rng = np.random.default_rng(0)
    return [_timed_row(label, lead, k, n, fused, target, rng) for fused in (False, True) for label, lead, k, n in GEMM_SHAPES]


def _child_rows(threads: int) -> list[dict]:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def against_peak(peak_doc: dict, thread_counts: list[int]) -> dict:
    """Rows of every thread count with % of the measured peak of as many cores."""
    from shiftc.targets import get

    doc = {"peak_source": "benchmarks/results/vnni_peak.json", "peak_mode": peak_doc["peak_mode"],
           "llvm_cpu": get("x86").tvm_target().attrs["mcpu"], "loadavg_before": os.getloadavg(), "rows": []}
    for threads in thread_counts:
        peak = peak_doc["peak_gops"].get(str(threads))
        for row in _child_rows(threads):
            row.update(threads=threads, peak_gops=peak,
                       **{f"pct_{kind}": 100 * row[f"gops_{kind}"] / peak if peak else None for kind in ("median", "best")})
            doc["rows"].append(row)
    doc["loadavg_after"] = os.getloadavg()
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="shiftc's int8 GEMM kernel against the measured dot-product peak")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--peak", type=Path, default=RESULTS / "vnni_peak.json")
    ap.add_argument("--out", type=Path, default=RESULTS / "vnni_gemm.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        from shiftc.targets import get

        print(json.dumps(gemm_vs_numpy_gops(get("x86").tvm_target())))
        return 0
    if not args.peak.exists():
        print(f"{args.peak} not found: run benchmarks/vnni_peak.py first", file=sys.stderr)
        return 1
    peak_doc = json.loads(args.peak.read_text())
    doc = {"git_rev": git_rev(), **against_peak(peak_doc, args.threads)}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for r in doc["rows"]:
        print(f"{r['threads']}t {r['shape']:20s} {r['epilogue'][:5]:5s} {r['gops_median']:4.0f} GOP/s median ({r['pct_median'] or 0:4.1f} %), "
              f"{r['gops_best']:4.0f} best ({r['pct_best'] or 0:4.1f} %) of {r['peak_gops'] or 0:.0f}")
    print(f"load {doc['loadavg_before'][0]:.2f} -> {doc['loadavg_after'][0]:.2f}; wrote {args.out}")
    return 0


def git_rev() -> str:
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=RESULTS, capture_output=True, text=True)
    return r.stdout.strip() or "?"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
