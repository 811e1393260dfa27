"""Ablation of all-MiniLM-L6-v2 ``--integer-only``: which option helps or hurts the mean cosine
against onnxruntime FP32.

Same model export, sentence set and calibration split as benchmarks/fidelity.py (first 16
sentences calibrate; the evaluation takes the next ``--n``), same base options
(``gelu='lambda'``, ``l2norm='remove'``); each variant changes one option from the defaults.

    python benchmarks/minilm_ablation.py [--n 30] [--only default,mse,...]
                                         [--json benchmarks/results/minilm_ablation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

import fidelity as F  # noqa: E402  (same scores, runners and provenance)

N_CAL = 16
BASE = {"gelu": "lambda", "l2norm": "remove"}  # fidelity.py's MiniLM setting
FFN2 = r"layer\.\d+/output/dense"  # ONNX node names of FFN2 (not attention/output/dense)
LN_READERS = r"self/(query|key|value)/|intermediate/dense"  # the matmuls that read a LayerNorm output
VARIANTS = {
    "default": {},
    "no-unsigned": {"unsigned_activations": False},  # Shiftmax back to int8 at 2^-7
    "mse": {"calibration_method": "mse"},
    "int16-ffn2": {"int16_layers": FFN2},
    "smooth-quant-0.3": {"smooth_quant": 0.3},
    "mse+int16-ffn2": {"calibration_method": "mse", "int16_layers": FFN2},  # the two that helped, together
    "ibert": {"gelu": "ibert"},
    "int16-all": {"int16_layers": ".*"},
    "ibert+int16-all": {"gelu": "ibert", "int16_layers": ".*"},
    "ibert+int16-ln-ffn2": {"gelu": "ibert", "int16_layers": f"{LN_READERS},{FFN2}"},  # the two int8 operands that cost most
}


def load() -> str:
    la = os.getloadavg()
    return f"{la[0]:.1f} {la[1]:.1f} {la[2]:.1f}"


def measure(path, calib, feeds, ref, opts: dict) -> dict:
    t0, load0 = time.perf_counter(), load()
    import shiftc

    cm = shiftc.compile(str(path), "x86", calibration=calib, integer_only=True, **{**BASE, **opts})
    name = cm.outputs[0].name
    got = F.np.concatenate([cm.run(f)[name] for f in feeds])
    stages = [s for s in cm.report.stages if s.name.startswith("integer")]
    notes = [n for s in stages for n in s.notes if "mixed precision" in n or "SmoothQuant" in n.lower()]
    outs = sorted({str(r.get("out")) for s in stages for r in s.rows if r.get("op") == "shiftmax"})
    return {"options": {**BASE, **opts}, **F.embedding_scores(ref, got), "notes": notes,
            "shiftmax_out": outs, "seconds": round(time.perf_counter() - t0, 1),
            "load_average_start": load0, "load_average_end": load()}


class _Captured(Exception):
    """Raised by the capture hook once the integeriser's inputs are recorded (no build needed)."""


def integerizer_inputs(path, calib, opts: dict):
    """(mod, calibration, IntOptions) exactly as the integerize stage passes them to ``integerize``
    for this compile (the build stops there)."""
    import shiftc
    from shiftc.passes import integerize_stage as stage

    seen, real = {}, stage.integerize

    def hook(mod, cal, o, probe=()):
        seen.update(mod=mod, calib=cal, opts=o)
        raise _Captured

    stage.integerize = hook
    try:
        shiftc.compile(str(path), "x86", calibration=calib, integer_only=True, **{**BASE, **opts})
    except _Captured:
        pass
    finally:
        stage.integerize = real
    return seen["mod"], seen["calib"], seen["opts"]


def probe_layers(path, calib, feeds, opts: dict) -> list[dict]:
    """Relative RMS error of every integer-rewritten value against the same float value, in graph
    order, with its jump over the worst value it reads (through layout ops)."""
    from tvm import relax

    from shiftc import calibrate, evaluate
    from shiftc.passes.integerize import integerize

    mod, cal, o = integerizer_inputs(path, calib, opts)
    _, rep = integerize(mod, cal, o)
    names = list(dict.fromkeys(r["value"] for r in rep.rows if "value" in r))
    new, _ = integerize(mod, cal, o, probe=names)
    specs = [type("Spec", (), {"name": p.name}) for p in mod["main"].params]
    ref = evaluate.relax_outputs(calibrate.probe_module(mod, names), specs, feeds)
    got = [g[1:] for g in evaluate.relax_outputs(new, specs, feeds)]
    err = {n: float(np.sqrt(sum(np.sum((g[i].astype(np.float64) - r[i]) ** 2) for g, r in zip(got, ref))
                            / sum(np.sum(r[i].astype(np.float64) ** 2) for r in ref))) for i, n in enumerate(names)}
    op = {r["value"]: r for r in rep.rows if "value" in r}
    rows, anc = [], {}
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            reads = set()
            for v in relax.analysis.free_vars(b.value):
                reads |= {v.name} if v.name in err else anc.get(v.name, set())
            anc[b.var.name] = reads
            if b.var.name in err:
                before = max((err[a] for a in reads), default=0.0)
                rows.append({"value": b.var.name, "op": op[b.var.name]["op"], "node": op[b.var.name].get("node", ""),
                             "rel_rms_error": err[b.var.name], "jump": err[b.var.name] - before})
    return rows


def largest_jump(rows: list[dict]) -> dict:
    """The row whose error grows most over its inputs', leaving out what is not a like-for-like
    comparison: the removed L2 norm (model changed) and the additive attention-mask adds (the float
    value holds the mask's huge negative constant, the integer one a few-step sentinel)."""
    real = [r for r in rows if "removed" not in r["op"] and not r["node"].endswith("attention/self/Add")]
    return max(real, key=lambda r: r["jump"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="evaluation sentences")
    ap.add_argument("--only", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    ap.add_argument("--probe", default="", help="instead: per-value errors of this variant's integer graph (integerize probe)")
    ap.add_argument("--probe-n", type=int, default=4, help="sentences for --probe")
    ap.add_argument("--merge", type=Path, nargs="+", help="combine these results files (runs made in parallel) into --json")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "minilm_ablation.json")
    args = ap.parse_args(argv)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        merged = {**parts[0], "variants": {k: v for p in parts for k, v in p.get("variants", {}).items()}}
        merged.update({"probe": {**p["probe"], "largest_jump": largest_jump(p["probe"]["rows"])} for p in parts if "probe" in p})
        args.json.write_text(json.dumps(merged, indent=1) + "\n")
        return
    from examples import minilm as ml

    result = json.loads(args.json.read_text()) if args.json.exists() else {"variants": {}}
    result.update(reference="onnxruntime FP32 on the original model", model="all-MiniLM-L6-v2 (examples/minilm.py export)",
                  inputs=f"sentences()[{N_CAL}:{N_CAL + args.n}] for evaluation, sentences()[:{N_CAL}] for calibration")
    with tempfile.TemporaryDirectory() as tmp:
        path = ml.export_minilm(Path(tmp) / "minilm.onnx")
        sents = ml.sentences()
        feeds, calib = ml.feeds(sents[N_CAL:N_CAL + args.n]), ml.feeds(sents[:N_CAL])
        if args.probe:
            rows = probe_layers(path, calib, feeds[:args.probe_n], VARIANTS[args.probe])
            worst = largest_jump(rows)
            print(json.dumps(worst), flush=True)
            result["probe"] = {"variant": args.probe, "samples": args.probe_n, "largest_jump": worst, "rows": rows,
                               "load_average": load(), **F.provenance()}
            args.json.write_text(json.dumps(result, indent=1) + "\n")
            return
        ref = F.ort_runner(path)(feeds)
        for key in args.only.split(","):
            row = {**measure(path, calib, feeds, ref, VARIANTS[key]), "samples": args.n, **F.provenance()}
            print(key, json.dumps(row), flush=True)
            result["variants"][key] = row
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
