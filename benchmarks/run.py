"""Latency benchmark: onnxruntime vs TVM/shiftc, in one process, interleaved, medians and ratios.

    python benchmarks/run.py                       # every model it can find, batch 1 and 8
    python benchmarks/run.py --model mnv2=path.onnx --batches 1 --repeats 30

Variants (each one says when it is not available instead of being skipped silently):

- ``ort_fp32``   onnxruntime FP32
- ``ort_int8``   onnxruntime int8 QDQ, per-channel weights (``quantize_static`` + calibration reader)
- ``tvm_fp32``   shiftc FP32 build: the shipped tuning database where one matches, otherwise the
                 default CPU schedules (the row says which, and how many kernels were tuned)
- ``tvm_naive``  (``--with-naive``) plain ``tvm.compile`` without schedules: the starting point
- ``int8``       shiftc ``--integer-only`` (calibrated int8, dyadic requantisers), no shift weights
- ``shift_float`` / ``shift_int8``: shiftc's 4-bit shift-add rewrite, float / integer-only

Every run is timed round-robin over the variants (one call each, repeated), so machine noise hits
all of them alike; compare the ratios, not absolute numbers, on this shared machine.
Writes ``results/<stamp>.json``, ``results/latest.md`` (README tables: all rows, then shiftc
against onnxruntime int8) and ``results/latest.png``; ``--render RUN.json`` redraws the last two
from a saved run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = ROOT / ".cache" / "benchmarks"


@dataclass
class ModelSpec:
    name: str
    paths: dict[int, Path]  # batch -> ONNX file (static batch), or {0: path} for a dynamic batch dim


@dataclass
class Variant:
    name: str
    run: object = None  # callable() -> outputs
    note: str = ""
    size_bytes: int | None = None
    rss_mb: float | None = None
    times: list[float] = field(default_factory=list)
    max_abs_diff: float | None = None


# ---------------------------------------------------------------- models


def find_models(args) -> list[ModelSpec]:
    specs = [ModelSpec(n, {0: Path(p)}) for n, p in (m.split("=", 1) for m in args.model)]
    if args.model and not args.all:
        return specs
    sys.path.insert(0, str(ROOT))
    CACHE.mkdir(parents=True, exist_ok=True)
    exporters = (("mobilenetv2", "mobilenetv2", "export_mobilenetv2"), ("minilm-seq128", "minilm", "export_minilm"))
    for name, module, export in exporters:
        try:
            exporter = getattr(importlib.import_module(f"examples.{module}"), export)
        except ImportError as exc:
            print(f"{name}: not available ({exc}); pass --model {name}=PATH")
            continue
        paths = {}
        for b in args.batches:
            paths[b] = CACHE / f"{module}_b{b}.onnx"
            if not paths[b].exists():
                exporter(str(paths[b]), batch=b)
        specs.append(ModelSpec(name, paths))
    for p in sorted((ROOT / "examples" / "models").glob("*.onnx")):
        specs.append(ModelSpec(f"fashion-{p.stem}", {0: p}))
    return specs


def model_for_batch(spec: ModelSpec, batch: int):
    """(path, input shapes) for a batch, or (None, reason)."""
    import onnx

    from shiftc import frontend

    if batch in spec.paths:
        path = spec.paths[batch]
    elif 0 in spec.paths:
        path = spec.paths[0]
    else:
        return None, f"no batch-{batch} export"
    proto = onnx.load(str(path), load_external_data=False)
    shapes = {}
    for inp in frontend.graph_inputs(proto):
        dims = inp.type.tensor_type.shape.dim
        if not dims:
            continue
        d0 = dims[0]
        if d0.HasField("dim_value") and d0.dim_value not in (batch,):
            return None, f"static batch {d0.dim_value}"
        rest = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if None in rest:
            return None, f"input {inp.name} has dynamic non-batch dims"
        shapes[inp.name] = (batch, *rest)
    return path, shapes


def make_inputs(loaded, rng):
    feeds = {}
    for spec in loaded.inputs:
        if spec.dtype.startswith("int"):
            feeds[spec.name] = rng.integers(0, 2 if "mask" in spec.name or "type" in spec.name else 1000, spec.shape).astype(spec.dtype)
            if "mask" in spec.name:
                feeds[spec.name][:] = 1
        else:
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return feeds


# ---------------------------------------------------------------- variants


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle ORT workers spin-wait by default; interleaved with TVM on 2 cores that spinning steals
    # the cores TVM's threads need (TVM measured 5x slower). Off for a fair interleaved comparison.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def pinned_onnx(loaded, workdir: Path, tag: str) -> Path:
    import onnx

    p = workdir / f"{tag}.onnx"
    onnx.save(loaded.proto, str(p))
    return p


def ort_int8(fp32_path: Path, feeds_list, workdir: Path, tag: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds_list)

        def get_next(self):
            return next(self.it, None)

    pre = workdir / f"{tag}.pre.onnx"
    out = workdir / f"{tag}.int8.onnx"
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the original
        shutil.copy(fp32_path, pre)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def tvm_naive(loaded, threads):
    import tvm
    from tvm import relax

    from shiftc import frontend
    from shiftc.targets import get

    target = get("x86").tvm_target()
    with target, tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(frontend.to_relax(loaded), target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm


def shift_variants() -> dict[str, dict]:
    """Pass options of shiftc's lossy variants: calibrated int8 alone, 4-bit PoT weights on float
    activations, and both together. ``float_fallback``: MiniLM's final L2-norm stays float (the
    compile report names it). Calibrated on the benchmark's random inputs: these rows measure
    speed; accuracy is measured by benchmarks/shift_accuracy.py and benchmarks/integer_accuracy.py."""
    return {
        "int8": {"integer_only": True, "float_fallback": True},
        "shift_float": {"shift_bits": 4},
        "shift_int8": {"shift_bits": 4, "integer_only": True, "float_fallback": True},
    }


def build_variants(path: Path, shapes: dict, args, workdir: Path, tag: str) -> tuple[list[Variant], dict]:
    import shiftc
    from shiftc import frontend

    rng = np.random.default_rng(0)
    loaded = frontend.load(str(path), shapes)
    feeds = make_inputs(loaded, rng)
    fp32 = pinned_onnx(loaded, workdir, tag)
    variants: list[Variant] = []

    def add(name, factory, size=None, note=""):
        before = rss_mb()
        try:
            fn, size2, note2 = factory()
        except Exception as exc:  # noqa: BLE001 - reported in the table, never dropped silently
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            variants.append(Variant(name, note=f"failed: {type(exc).__name__}: {msg}"))
            print(f"  {name}: failed ({msg})")
            return
        fn()
        variants.append(Variant(name, fn, note or note2, size if size is not None else size2, rss_mb() - before))

    names = [i.name for i in loaded.inputs]

    def f_ort(p):
        def make():
            sess = ort_session(p, args.threads)
            return (lambda: sess.run(None, feeds)), p.stat().st_size, ""
        return make

    add("ort_fp32", f_ort(fp32))
    if not args.skip_int8:
        calib = [make_inputs(loaded, rng) for _ in range(args.calibration)]

        def make_int8():
            q = ort_int8(fp32, calib, workdir, tag)
            sess = ort_session(q, args.threads)
            return (lambda: sess.run(None, feeds)), q.stat().st_size, "QDQ per-channel, s8s8"

        add("ort_int8", make_int8)

    def f_shiftc(options, label):
        def make():
            import tvm

            t0 = time.perf_counter()
            calib = [make_inputs(loaded, np.random.default_rng(i)) for i in range(4)] if options else None
            cm = shiftc.compile(str(path), "x86", input_shapes=shapes, db=args.db, calibration=calib,
                                output=workdir / f"{tag}.{label}", **options)
            compile_s = time.perf_counter() - t0
            sched = next(s for s in cm.report.stages if s.name == "schedule").summary
            tuned = len(sched.get("tuned", []))
            default = sched.get("default", {})
            n_default = sum(default.get(k, 0) for k in ("tensorized", "reduction", "row_reduction", "injective"))
            src = sched.get("database") or "no database"
            note = f"{src}: {tuned} tuned + {n_default} default-scheduled kernels ({default.get('tensorized', 0)} on the dot-product intrinsic), compile {compile_s:.0f}s"
            if default.get("naive"):
                note += f", {len(default['naive'])} naive"
            args_ = [feeds[n] for n in names]
            return (lambda: cm.run(*args_)), folder_size(cm.path), note
        return make

    add("tvm_fp32", f_shiftc({}, "fp32"))
    for name, opts in shift_variants().items():
        add(name, f_shiftc(opts, name))
    if args.with_naive:
        def make_naive():
            import tvm

            vm = tvm_naive(loaded, args.threads)
            tv = [tvm.runtime.tensor(feeds[n]) for n in names]
            return (lambda: vm["main"](*tv)), None, "tvm.compile, no schedules"
        add("tvm_naive", make_naive)
    return variants, {"inputs": {k: list(v) for k, v in shapes.items()}, "macs": _macs(loaded)}


def _macs(loaded) -> int:
    from shiftc import model_stats

    return int(model_stats.analyse(loaded.proto).total_macs)


def outputs_of(v: Variant):
    out = v.run()
    if isinstance(out, dict):
        out = list(out.values())
    if hasattr(out, "numpy"):
        out = [out.numpy()]
    return [np.asarray(o.numpy() if hasattr(o, "numpy") else o) for o in out]


def time_interleaved(variants: list[Variant], repeats: int, warmup: int) -> None:
    live = [v for v in variants if v.run is not None]
    for _ in range(warmup):
        for v in live:
            v.run()
    for _ in range(repeats):
        for v in live:
            t0 = time.perf_counter()
            v.run()
            v.times.append(time.perf_counter() - t0)


# ---------------------------------------------------------------- machine


def cpu_info() -> dict:
    from shiftc.targets.x86 import host_cpu

    mhz = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    ghz = (mhz or 0) / 1e3
    cores = int(os.environ.get("SHIFTC_BENCH_CORES", "2"))
    return {
        "llvm_cpu": host_cpu(),
        "ghz": ghz,
        "cores": cores,
        # 2 FMA ports x 8 fp32 lanes x 2 flops; int8: 2 ports x 32 u8*s8 pairs x 2 ops (pmaddubsw)
        "avx2_fp32_peak_gflops": cores * ghz * 32,
        "avx2_int8_peak_gops": cores * ghz * 128,
    }


# ---------------------------------------------------------------- kernels


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


# ---------------------------------------------------------------- report


def summarise(model: str, batch: int, variants: list[Variant], meta: dict, cpu: dict) -> dict:
    base = next((v for v in variants if v.name == "ort_fp32" and v.times), None)
    base_ms = statistics.median(base.times) * 1e3 if base else None
    rows = []
    for v in variants:
        ms = statistics.median(v.times) * 1e3 if v.times else None
        gops = 2 * meta["macs"] / (ms * 1e-3) / 1e9 if ms else None
        rows.append({
            "variant": v.name,
            "median_ms": ms,
            "vs_ort_fp32": (ms / base_ms) if ms and base_ms else None,
            "gops": gops,
            "pct_avx2_fp32_peak": 100 * gops / cpu["avx2_fp32_peak_gflops"] if gops and cpu["ghz"] else None,
            "size_mb": v.size_bytes / 1e6 if v.size_bytes else None,
            "rss_delta_mb": v.rss_mb,
            "max_abs_diff_vs_ort_fp32": v.max_abs_diff,
            "note": v.note,
        })
    return {"model": model, "batch": batch, **meta, "rows": rows}


def kernel_markdown(rows: list[dict], cpu: dict) -> str:
    lines = ["", "| kernel | CPU | how | GOP/s | % of AVX2 peak |", "|---|---|---|---|---|"]
    for r in rows:
        peak = cpu["avx2_int8_peak_gops"] if r["peak"] == "int8" else cpu["avx2_fp32_peak_gflops"]
        r["pct_avx2_peak"] = 100 * r["gops"] / peak if peak else None
        pct = "-" if r["pct_avx2_peak"] is None else f"{r['pct_avx2_peak']:.1f}"
        lines.append(f"| {r['kernel']} | {r['cpu']} | {r['how']} | {r['gops']:.1f} | {pct} |")
    lines.append(f"\nAVX2 peaks for {cpu['cores']} cores at {cpu['ghz']:.2f} GHz: int8 {cpu['avx2_int8_peak_gops']:.0f} GOP/s "
                 f"(2 x vpmaddubsw per cycle, 32 MACs each), fp32 {cpu['avx2_fp32_peak_gflops']:.0f} GFLOP/s (2 FMA x 8 lanes). "
                 "The clock is the nominal one of /proc/cpuinfo: a row above 100 % means the cores ran faster "
                 "(boost), so every percentage here is an upper bound.")
    return "\n".join(lines) + "\n"


def markdown(results: list[dict], cpu: dict, args) -> str:
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = [
        f"Threads: {args.threads}; {args.repeats} interleaved runs per variant, medians; CPU {cpu['llvm_cpu']} "
        f"@ {cpu['ghz']:.2f} GHz (AVX2 fp32 peak {cpu['avx2_fp32_peak_gflops']:.0f} GFLOP/s for {cpu['cores']} cores). "
        "Ratios < 1 are faster than onnxruntime FP32. The machine is shared: compare ratios within a run.",
        "",
        "| model | batch | variant | median ms | × ORT FP32 | GOP/s | size MB | RSS Δ MB | max abs diff | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            lines.append(
                f"| {r['model']} | {r['batch']} | {row['variant']} | {fmt(row['median_ms'], '.2f')} | {fmt(row['vs_ort_fp32'], '.2f')} "
                f"| {fmt(row['gops'], '.1f')} | {fmt(row['size_mb'], '.2f')} | {fmt(row['rss_delta_mb'], '.0f')} "
                f"| {fmt(row['max_abs_diff_vs_ort_fp32'], '.1e')} | {row['note']} |"
            )
    return "\n".join(lines) + "\n"


GOAL_VS_ORT_INT8 = 0.8  # issue 7: shiftc latency <= 0.8x onnxruntime int8
SHIFTC_VARIANTS = ("tvm_fp32", "int8", "shift_float", "shift_int8")


def goal_markdown(results: list[dict]) -> str:
    """shiftc's variants against onnxruntime int8 in the same run (the issue's goal: <= 0.8)."""
    lines = ["", f"Latency / onnxruntime int8 QDQ, same run (goal: <= {GOAL_VS_ORT_INT8}):", "",
             "| model | batch | " + " | ".join(SHIFTC_VARIANTS) + " |", "|---|---|" + "---|" * len(SHIFTC_VARIANTS)]
    for r in results:
        ms = {row["variant"]: row["median_ms"] for row in r["rows"]}
        base = ms.get("ort_int8")
        cells = ["-" if not (base and ms.get(v)) else f"{ms[v] / base:.2f}" for v in SHIFTC_VARIANTS]
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    labels = [f"{r['model']}\nb{r['batch']}" for r in results]
    variants = sorted({row["variant"] for r in results for row in r["rows"] if row["vs_ort_fp32"] is not None})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        ys = [next((row["vs_ort_fp32"] for row in r["rows"] if row["variant"] == v and row["vs_ort_fp32"]), 0) for r in results]
        ax.bar([x + i * width for x in range(len(labels))], ys, width, label=v)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([x + width * (len(variants) - 1) / 2 for x in range(len(labels))], labels, fontsize=8)
    ax.set_ylabel("latency / onnxruntime FP32 (lower is better)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH.onnx", help="benchmark this ONNX model (repeatable)")
    ap.add_argument("--all", action="store_true", help="with --model: also the models found in examples/")
    ap.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8])
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads and TVM_NUM_THREADS")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--calibration", type=int, default=8, help="calibration samples for ORT int8")
    ap.add_argument("--db", default=None, help="tuning database folder (default: the shipped one for this CPU)")
    ap.add_argument("--with-naive", action="store_true", help="also time TVM without any schedule (slow)")
    ap.add_argument("--skip-int8", action="store_true")
    ap.add_argument("--kernels", type=int, default=512, metavar="N", help="also time N^3 GEMM kernels (0: skip)")
    ap.add_argument("--kernels-only", action="store_true", help="only the GEMM kernels")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, metavar="RUN.json", help="only re-render latest.md/png from a saved run")
    args = ap.parse_args(argv)
    if args.render:
        doc = json.loads(args.render.read_text())
        args.threads, args.repeats = doc["threads"], doc["repeats"]
        return write_report(doc, args, None)

    # before TVM's thread pool starts (it would otherwise pick its own count: 1 on this machine)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    cpu = cpu_info()
    results = []
    with tempfile.TemporaryDirectory(prefix="shiftc-bench-") as tmp:
        for spec in ([] if args.kernels_only else find_models(args)):
            for batch in args.batches:
                path, shapes = model_for_batch(spec, batch)
                if path is None:
                    print(f"{spec.name} batch {batch}: not available ({shapes})")
                    continue
                print(f"{spec.name} batch {batch}: building variants")
                variants, meta = build_variants(path, shapes, args, Path(tmp), f"{spec.name}_b{batch}")
                ref = next((v for v in variants if v.name == "ort_fp32" and v.run), None)
                if ref is not None:
                    want = outputs_of(ref)
                    for v in variants:
                        if v.run is not None and v is not ref:
                            got = outputs_of(v)
                            v.max_abs_diff = float(max(np.abs(a.astype("float64") - b.astype("float64")).max() for a, b in zip(got, want)))
                time_interleaved(variants, args.repeats, args.warmup)
                results.append(summarise(spec.name, batch, variants, meta, cpu))
                for row in results[-1]["rows"]:
                    ms = "-" if row["median_ms"] is None else f"{row['median_ms']:.2f} ms"
                    ratio = "" if row["vs_ort_fp32"] is None else f" ({row['vs_ort_fp32']:.2f}x ORT FP32)"
                    print(f"  {row['variant']:12s} {ms}{ratio}  {row['note']}")
    kernels = kernel_gops(args.kernels, args.threads) if args.kernels else []
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    doc = {"cpu": cpu, "threads": args.threads, "repeats": args.repeats, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "results": results, "kernels": kernels}
    (args.out / f"{stamp}.json").write_text(json.dumps(doc, indent=2))
    return write_report(doc, args, args.out / f"{stamp}.json")


def write_report(doc: dict, args, saved: Path | None) -> int:
    """latest.md (tables) and latest.png (plot) in ``args.out`` from one run's record."""
    results, kernels, cpu = doc["results"], doc["kernels"], doc["cpu"]
    table = (markdown(results, cpu, args) + goal_markdown(results) if results else "") + (kernel_markdown(kernels, cpu) if kernels else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(table)
    png = plot(results, args.out / "latest.png") if results else "no model results: no plot"
    print()
    print(table)
    print(f"peak RSS of the measuring process: {doc['peak_rss_mb']:.0f} MB; wrote {saved or ''} latest.md, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
