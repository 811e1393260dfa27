"""GOP/s of single GEMM kernels against the AVX2 peaks (``benchmarks/run.py --kernels N``).

TVM only, one kernel at a time through ``time_evaluator``: no other runtime shares the process.
"""

from __future__ import annotations

import os

import numpy as np


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
            sec = timed(lib, args)
            rows.append({"kernel": f"int8 GEMM {size}^3", "cpu": f"{label} ({t.attrs['mcpu']})",
                         "how": (x86_int8.intrinsic_for(t)[0] if intrinsic else "same loops, no intrinsic"),
                         "gops": 2 * m * n * k / sec / 1e9, "peak": "int8"})
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
