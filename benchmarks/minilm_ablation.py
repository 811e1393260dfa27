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

import fidelity as F  # noqa: E402  (same scores, runners and provenance)

N_CAL = 16
BASE = {"gelu": "lambda", "l2norm": "remove"}  # fidelity.py's MiniLM setting
FFN2 = r"layer\.\d+/output/dense"  # ONNX node names of FFN2 (not attention/output/dense)
VARIANTS = {
    "default": {},
    "no-unsigned": {"unsigned_activations": False},  # Shiftmax back to int8 at 2^-7
    "mse": {"calibration_method": "mse"},
    "int16-ffn2": {"int16_layers": FFN2},
    "smooth-quant-0.3": {"smooth_quant": 0.3},
}


def load() -> str:
    la = os.getloadavg()
    return f"{la[0]:.1f} {la[1]:.1f} {la[2]:.1f}"


def measure(path, calib, feeds, ref, opts: dict) -> dict:
    t0, load0 = time.perf_counter(), load()
    import shiftc

    cm = shiftc.compile(str(path), "x86", calibration=calib, integer_only=True, **BASE, **opts)
    name = cm.outputs[0].name
    got = F.np.concatenate([cm.run(f)[name] for f in feeds])
    stages = [s for s in cm.report.stages if s.name.startswith("integer")]
    notes = [n for s in stages for n in s.notes if "mixed precision" in n or "SmoothQuant" in n.lower()]
    outs = sorted({str(r.get("out")) for s in stages for r in s.rows if r.get("op") == "shiftmax"})
    return {"options": {**BASE, **opts}, **F.embedding_scores(ref, got), "notes": notes,
            "shiftmax_out": outs, "seconds": round(time.perf_counter() - t0, 1),
            "load_average_start": load0, "load_average_end": load()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="evaluation sentences")
    ap.add_argument("--only", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "minilm_ablation.json")
    args = ap.parse_args(argv)
    from examples import minilm as ml

    result = json.loads(args.json.read_text()) if args.json.exists() else {"variants": {}}
    result.update(reference="onnxruntime FP32 on the original model", model="all-MiniLM-L6-v2 (examples/minilm.py export)",
                  inputs=f"sentences()[{N_CAL}:{N_CAL + args.n}] for evaluation, sentences()[:{N_CAL}] for calibration")
    with tempfile.TemporaryDirectory() as tmp:
        path = ml.export_minilm(Path(tmp) / "minilm.onnx")
        sents = ml.sentences()
        feeds, calib = ml.feeds(sents[N_CAL:N_CAL + args.n]), ml.feeds(sents[:N_CAL])
        ref = F.ort_runner(path)(feeds)
        for key in args.only.split(","):
            row = {**measure(path, calib, feeds, ref, VARIANTS[key]), "samples": args.n, **F.provenance()}
            print(key, json.dumps(row), flush=True)
            result["variants"][key] = row
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
