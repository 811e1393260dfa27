"""Latency benchmark: onnxruntime, OpenVINO and shiftc, every variant in its own process.

    python benchmarks/run.py                                  # every model found, the full grid
    python benchmarks/run.py --model cnn=examples/models/cnn.onnx --batches 1 --threads 1 --load idle --rounds 2 --calls 5
    python benchmarks/run.py --render benchmarks/results/RUN.json [--readme]

Variants (one that cannot be built says why in its row, none is dropped silently):

- ``ort_fp32``  onnxruntime FP32 (the reference of every ratio and output difference)
- ``ort_int8``  onnxruntime ``quantize_static``: QDQ, per-channel s8 weights, s8 activations
- ``ov_fp32``   OpenVINO CPU plugin on the same ONNX (``pip install 'shiftc[bench]'``)
- ``ov_int8``   OpenVINO on NNCF's post-training int8 quantisation of it
- ``tvm_fp32``  shiftc FP32 (the shipped tuning database where one matches)
- ``int8``      shiftc ``--integer-only`` (calibrated int8, dyadic requantisers)
- ``shift_float`` / ``shift_int8`` (``--with-shift``): 4-bit shift weights, float / integer-only

The int8 variants calibrate on synthetic inputs: these rows measure speed, not accuracy.

Grid: batch 1 and 8, 1 and 2 threads (TVM_NUM_THREADS, onnxruntime intra-op threads, OpenVINO
inference threads), idle and with one core busy (a busy-loop process pinned to one core during
the timed calls). For each model and batch the variants are built once; for each threads / load
setting ``shiftc.bench.run_rounds`` runs every variant in a fresh child process per round, the
order rotated each round, so no two runtimes' thread pools ever share a process
(docs/BENCHMARKS.md). Writes ``results/<stamp>.json`` (``shiftc.bench.document``), ``latest.md``
and ``latest.png``; ``--render`` redraws those from a saved run, ``--readme`` also rewrites the
README's benchmark block (tables rendered by benchmarks/render.py; tests check the README's copy).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import render  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = ROOT / ".cache" / "benchmarks"
README = ROOT / "README.md"
VARIANTS = ("ort_fp32", "ort_int8", "ov_fp32", "ov_int8", "tvm_fp32", "int8")
SHIFT_VARIANTS = ("shift_float", "shift_int8")
# shiftc's pass options per variant; float_fallback: MiniLM's final L2-norm stays float (the report names it)
SHIFTC_OPTIONS = {
    "tvm_fp32": {},
    "int8": {"integer_only": True, "float_fallback": True},
    "shift_float": {"shift_bits": 4},
    "shift_int8": {"shift_bits": 4, "integer_only": True, "float_fallback": True},
}



def shift_variants() -> dict[str, dict]:
    """The lossy variants' pass options (benchmarks/tune_models.py tunes for them too)."""
    return {k: v for k, v in SHIFTC_OPTIONS.items() if v}


@dataclass
class ModelSpec:
    name: str
    paths: dict[int, Path]  # batch -> ONNX file (static batch), or {0: path} for a dynamic batch dim


# ---------------------------------------------------------------- models


def find_models(args) -> list[ModelSpec]:
    """--model NAME=PATH models, else (or with --all) MobileNetV2 and MiniLM exported per batch
    (examples/) and the Fashion-MNIST models in examples/models."""
    specs = [ModelSpec(n, {0: Path(p)}) for n, p in (m.split("=", 1) for m in args.model)]
    if args.model and not args.all:
        return specs
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

    path = spec.paths.get(batch) or spec.paths.get(0)
    if path is None:
        return None, f"no batch-{batch} export"
    shapes = {}
    for inp in frontend.graph_inputs(onnx.load(str(path), load_external_data=False)):
        dims = inp.type.tensor_type.shape.dim
        if not dims:
            continue
        if dims[0].HasField("dim_value") and dims[0].dim_value not in (batch,):
            return None, f"static batch {dims[0].dim_value}"
        rest = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if None in rest:
            return None, f"input {inp.name} has dynamic non-batch dims"
        shapes[inp.name] = (batch, *rest)
    return path, shapes


# ---------------------------------------------------------------- building the variants


def nncf_int8(fp32: Path, samples: list[dict], out: Path) -> tuple[Path, str]:
    """NNCF post-training int8 quantisation of the ONNX model read by OpenVINO, saved as IR."""
    import nncf
    import onnx
    import openvino as ov

    # NNCF's documented setting for transformers (attention): without it MiniLM fails in NNCF's graph matching
    graph = onnx.load(str(fp32), load_external_data=False).graph
    transformer = any(n.op_type == "Softmax" for n in graph.node)
    model = ov.Core().read_model(str(fp32))
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                              model_type=nncf.ModelType.TRANSFORMER if transformer else None)
    ov.save_model(quantized, str(out))
    kind = ", model_type=TRANSFORMER" if transformer else ""
    return out, f"NNCF post-training quantisation{kind}, {len(samples)} calibration samples"


def compile_shiftc(path: Path, shapes: dict, options: dict, samples, out: Path, db) -> tuple[Path, str]:
    """shiftc.compile for this host; the note says where the schedules came from."""
    import shiftc

    t0 = time.perf_counter()
    cm = shiftc.compile(str(path), "x86", input_shapes=shapes, db=db, calibration=samples if options else None,
                        output=out, **options)
    sched = next(s for s in cm.report.stages if s.name == "schedule").summary
    default = sched.get("default", {})
    n_default = sum(default.get(k, 0) for k in ("tensorized", "reduction", "row_reduction", "injective"))
    note = (f"{sched.get('database') or 'no database'}: {len(sched.get('tuned', []))} tuned + {n_default} default-scheduled "
            f"kernels ({default.get('tensorized', 0)} on the dot-product intrinsic), compile {time.perf_counter() - t0:.0f}s")
    if default.get("naive"):
        note += f", {len(default['naive'])} naive"
    return out, note


def _builders(path: Path, shapes: dict, fp32: Path, samples, work: Path, args) -> dict:
    """variant name -> (runtime, () -> (file or folder, note))."""
    from shiftc.bench import variants as bv

    builders = {
        "ort_fp32": ("onnxruntime", lambda: (fp32, "")),
        "ort_int8": ("onnxruntime", lambda: bv.ort_int8(fp32, samples, work / "ort_int8.onnx")),
        "ov_fp32": ("openvino", lambda: (_needs_openvino(fp32), "")),
        "ov_int8": ("openvino", lambda: nncf_int8(fp32, samples, work / "ov_int8.xml")),
    }
    for name, options in SHIFTC_OPTIONS.items():
        builders[name] = ("shiftc", lambda o=options, n=name: compile_shiftc(path, shapes, o, samples, work / n, args.db))
    return builders


def _needs_openvino(path: Path) -> Path:
    import openvino  # noqa: F401 - only to fail here, with the install hint, when it is missing

    return path


def size_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    return sum(p.stat().st_size for p in files if p.exists()) / 1e6


def prepare(path: Path, shapes: dict, names: list[str], work: Path, args):
    """Build the variants of one model and batch: (shiftc.bench.Variant list, rows of the ones that
    could not be built, size in MB per variant)."""
    from shiftc import calibration_data, frontend
    from shiftc.bench import Variant
    from shiftc.bench import variants as bv

    loaded = frontend.load(str(path), shapes)
    batch = loaded.inputs[0].shape[0] if loaded.inputs[0].shape else 1
    fp32 = bv.pinned_onnx(path, loaded.inputs, work / "fp32.onnx")
    feeds = bv.inputs_file(loaded.inputs, work / "inputs.npz")
    samples = calibration_data.synthetic(loaded.inputs, n=args.calibration, seed=1)
    builders = _builders(Path(path), shapes, fp32, samples, work, args)
    built, failed, sizes = [], [], {}
    for name in names:
        runtime, build = builders[name]
        print(f"  building {name}")
        try:
            target, note = build()
        except ImportError as exc:
            failed.append({"name": name, "runtime": runtime, "batch": batch,
                           "error": f"not available: {exc.name or exc} (pip install 'shiftc[bench]')"})
            continue
        except Exception as exc:  # noqa: BLE001 - reported in its row, never dropped silently
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            failed.append({"name": name, "runtime": runtime, "batch": batch, "error": f"build failed: {type(exc).__name__}: {first}"})
            continue
        built.append(Variant(name, runtime, target, feeds, batch, note=note))
        sizes[name] = size_mb(target)
    return built, failed, sizes


# ---------------------------------------------------------------- the grid


def run_grid(spec: ModelSpec, batch: int, args, work: Path) -> list[dict]:
    """Every threads / load setting of one model and batch; one row per variant and setting."""
    from shiftc import bench

    path, shapes = model_for_batch(spec, batch)
    if path is None:
        print(f"{spec.name} batch {batch}: not available ({shapes})")
        return []
    print(f"{spec.name} batch {batch}: building variants")
    built, failed, sizes = prepare(path, shapes, args.variants, work, args)
    rows = []
    for threads in args.threads:
        for busy in args.load:
            ran = bench.run_rounds(built, threads=threads, rounds=args.rounds, calls=args.calls, warmup=args.warmup,
                                   busy=busy, progress=lambda s: print(f"  {spec.name}: {s}", flush=True))
            for row in ran + [dict(r, threads=threads, busy_core=busy, note="", max_abs_diff_vs_first=None) for r in failed]:
                rows.append({"model": spec.name, **row, "size_mb": sizes.get(row["name"])})
    order = {n: i for i, n in enumerate(args.variants)}
    return sorted(rows, key=lambda r: (r["threads"], r["busy_core"], order[r["name"]]))


def _list(kind):
    return lambda s: [kind(v) for v in s.split(",") if v.strip()]


def _loads(text: str) -> list[bool]:
    choices = {"idle": False, "busy": True}
    try:
        return [choices[v.strip()] for v in text.split(",") if v.strip()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"--load takes idle and/or busy, got {text!r}") from None


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH.onnx", help="benchmark this ONNX model (repeatable)")
    ap.add_argument("--all", action="store_true", help="with --model: also the models found in examples/")
    ap.add_argument("--batches", type=_list(int), default=[1, 8])
    ap.add_argument("--threads", type=_list(int), default=[1, 2], help="thread counts to time (comma-separated)")
    ap.add_argument("--load", type=_loads, default=[False, True], help="idle,busy: without / with one core kept busy")
    ap.add_argument("--rounds", type=int, default=5, help="child processes per variant and setting")
    ap.add_argument("--calls", type=int, default=30, help="timed calls per round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variants", type=_list(str), default=list(VARIANTS), help=f"of {', '.join(VARIANTS + SHIFT_VARIANTS)}")
    ap.add_argument("--with-shift", action="store_true", help="also the 4-bit shift variants")
    ap.add_argument("--calibration", type=int, default=8, help="synthetic calibration samples of the int8 variants")
    ap.add_argument("--db", default=None, help="tuning database folder (default: the shipped one for this CPU)")
    ap.add_argument("--kernels", type=int, default=512, metavar="N", help="also time N^3 GEMM kernels (0: skip)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, metavar="RUN.json", help="only re-render latest.md/png from a saved run")
    ap.add_argument("--readme", action="store_true", help="also rewrite README.md's benchmark block from the run")
    args = ap.parse_args(argv)
    args.variants += list(SHIFT_VARIANTS) * args.with_shift
    unknown = set(args.variants) - set(VARIANTS + SHIFT_VARIANTS)
    if unknown:
        ap.error(f"unknown variant(s) {sorted(unknown)}")
    if "ort_fp32" in args.variants:  # the first variant is every output difference's reference
        args.variants.remove("ort_fp32")
        args.variants.insert(0, "ort_fp32")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        return write_report(json.loads(args.render.read_text()), args, args.render)
    from shiftc import bench

    # the kernels below run in this process: TVM's pool reads this when it starts
    os.environ["TVM_NUM_THREADS"] = str(max(args.threads))
    results = []
    with tempfile.TemporaryDirectory(prefix="shiftc-bench-") as tmp:
        for spec in find_models(args):
            for batch in args.batches:
                work = Path(tmp) / f"{spec.name}_b{batch}"
                work.mkdir()
                results += run_grid(spec, batch, args, work)
    settings = {"threads": args.threads, "busy_core": args.load, "rounds": args.rounds, "calls": args.calls,
                "warmup": args.warmup, "calibration_samples": args.calibration, "variants": args.variants}
    doc = bench.document(results, settings, [])
    if args.kernels:
        from benchmarks import gemm_kernels

        doc["kernel_cpu"], doc["kernels"] = gemm_kernels.peaks(), gemm_kernels.kernel_gops(args.kernels, max(args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    saved = args.out / f"{stamp}.json"
    saved.write_text(json.dumps(doc, indent=2) + "\n")
    return write_report(doc, args, saved)


def write_report(doc: dict, args, saved: Path) -> int:
    """latest.md (tables) and latest.png (plot) in ``args.out``; with ``--readme`` the README's block."""
    args.out.mkdir(parents=True, exist_ok=True)
    text = render.full_markdown(doc)
    (args.out / "latest.md").write_text(text)
    png = render.plot(doc, args.out / "latest.png")
    print("\n" + text)
    if args.readme:
        rel = os.path.relpath(Path(saved).resolve(), ROOT)
        if rel.startswith(".."):
            sys.exit(f"--readme: {saved} is outside the repository; the README cites a committed run (benchmarks/results/)")
        README.write_text(render.update_readme(README.read_text(), rel, doc))
        print(f"README.md: benchmark block rewritten from {rel}")
    print(f"wrote {saved}, {args.out / 'latest.md'}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
