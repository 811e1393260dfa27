"""The Fashion-MNIST CNN on the VTA target (functional simulator) against the x86 paths.

    python benchmarks/vta_fmnist.py [--model examples/models/cnn.onnx] [--n 2000] [--calib 64] [--json out.json]

Variants (calibrated on the first ``--calib`` training images, evaluated on the first ``--n`` test
images, batch 1):

* x86-FP32         plain compile (no integer rewrite)
* x86-int(pow2)    ``integer_only=True, requant='pow2'``
* vta              ``--target vta`` (the same quantisation: VTA requires pow2)
* x86-int-shift4   as x86-int(pow2) with 4-bit shift weights
* vta-shift4       ``--target vta --shift-bits 4`` (GEMM core in shift-code mode)

Prints accuracy, whether each VTA variant is bit-exact against its x86 integer twin (every output
of every image), the partition, and the simulated cycles per image (cycle model of the simulator,
targets/vta/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import shiftc  # noqa: E402
from examples import fashion_mnist as fm  # noqa: E402


def run_all(cm, xs: np.ndarray) -> np.ndarray:
    name = cm.outputs[0].name
    return np.concatenate([cm.run(xs[i:i + 1])[name] for i in range(len(xs))])


def vta_stage(cm) -> dict:
    return next(s for s in cm.meta["report"]["stages"] if s["name"] == "vta")


def partition_lines(stage: dict) -> list[str]:
    lines = []
    for row in stage["summary"]["layers"]:
        lines.append(f"  VTA layer {row['layer']}: {row['kind']} {row['weights']} ({row['values']}), out int{row['out_bits']}, "
                     f"{row['wgt_mode']}, {row['cycles']} cycles")
    for r in stage["rows"]:
        if r["placement"] == "host" and ("conv" in r["op"] or "matmul" in r["op"]):
            lines.append(f"  host: {r['op']} ({r['value']}): {r['reason']}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "examples" / "models" / "cnn.onnx"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)

    train, _ = fm.load("train")
    test, labels = fm.load("test")
    cal = [{"input": fm.preprocess(train[i:i + 1])} for i in range(a.calib)]
    xs, ys = fm.preprocess(test[:a.n]), labels[:a.n]
    variants = {
        "x86-FP32": ("x86", {}),
        "x86-int(pow2)": ("x86", {"integer_only": True, "requant": "pow2"}),
        "vta": ("vta", {}),
        "x86-int-shift4": ("x86", {"integer_only": True, "requant": "pow2", "shift_bits": 4}),
        "vta-shift4": ("vta", {"shift_bits": 4}),
    }
    results, outs = {}, {}
    for name, (target, opts) in variants.items():
        t0 = time.perf_counter()
        cm = shiftc.compile(a.model, target, calibration=cal, **opts)
        t1 = time.perf_counter()
        outs[name] = run_all(cm, xs)
        t2 = time.perf_counter()
        r = {"accuracy": float(np.mean(outs[name].argmax(1) == ys)), "compile_s": round(t1 - t0, 1),
             "run_s_per_image": round((t2 - t1) / len(xs), 4)}
        if target == "vta":
            st = vta_stage(cm)
            r.update(cycles_per_image=st["summary"]["total_cycles"], partition=partition_lines(st),
                     layer_cycles=[row["cycles"] for row in st["summary"]["layers"]],
                     ops_on_vta=st["summary"]["ops_on_vta"], ops_on_host=st["summary"]["ops_on_host"])
            counted = sum(cm._session.counters.cycles.values())
            assert counted == r["cycles_per_image"] * len(xs), "runtime cycle counters disagree with the report"
        results[name] = r
        print(f"{name:16s} accuracy {r['accuracy']:.4f}  compile {r['compile_s']:5.1f}s  run {r['run_s_per_image'] * 1e3:7.1f} ms/image"
              + (f"  simulated cycles/image {r['cycles_per_image']}" if target == "vta" else ""), flush=True)
    for vta, x86 in (("vta", "x86-int(pow2)"), ("vta-shift4", "x86-int-shift4")):
        same = bool(np.array_equal(outs[vta], outs[x86]))
        results[vta]["bit_exact_vs"] = {x86: same, "max_abs_diff": float(np.abs(outs[vta] - outs[x86]).max())}
        print(f"{vta} bit-exact against {x86} on {len(xs)} images: {same}")
    for vta in ("vta", "vta-shift4"):
        print(f"{vta} partition:")
        print("\n".join(results[vta]["partition"]))
    if a.json:
        a.json.write_text(json.dumps({"n": len(xs), "calib": a.calib, "results": results}, indent=1))
    ok = all(results[v]["bit_exact_vs"][x] for v, x in (("vta", "x86-int(pow2)"), ("vta-shift4", "x86-int-shift4")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
