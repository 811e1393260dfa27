"""The public-model sweep as one table: every model of tests/public_models.py compiled as shipped
(only its ``--input-shape`` pins) in FP32, ``--integer-only`` and ``--integer-only
--float-fallback``, run on the same real inputs as tests/test_public_sweep.py (4 evaluation
samples, 4 others for calibration) and scored against onnxruntime FP32 with the sweep's task
metrics (tests/public_metrics.py). Writes benchmarks/results/public_sweep.json after every build
(a stopped run keeps what it measured; runs of other models or variants merge into the same file)
and renders the README's sweep table from it.

Usage: python benchmarks/public_sweep.py [--models a,b] [--variants fp32,integer,fallback] [--readme]
       python benchmarks/public_sweep.py --render [--readme]     (the table of the JSON as it is)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # examples/ and the public-model registry

JSON = ROOT / "benchmarks" / "results" / "public_sweep.json"
JSON_NAME = "benchmarks/results/public_sweep.json"
VARIANTS = {"fp32": {}, "integer": {"integer_only": True}, "fallback": {"integer_only": True, "float_fallback": True}}
N_EVAL, N_CAL = 4, 4  # as tests/test_public_sweep.py
README_BEGIN = "<!-- public sweep table: python benchmarks/public_sweep.py --render --readme, from {json} (generated; do not edit) -->"
README_END = "<!-- end of public sweep table -->"
_BLOCK = re.compile(re.escape(README_BEGIN).replace(r"\{json\}", r"(?P<json>\S+)") + r"\n(?P<body>.*?)" + re.escape(README_END), re.S)


def measure(key: str, variant: str) -> dict:
    """Compile ``key`` as ``variant``, run it on the evaluation samples, score it; the record."""
    import onnxruntime as ort

    import shiftc
    from public_metrics import fp32_max_error, task_score
    from public_models import BY_KEY

    m = BY_KEY[key]
    feeds = m.feeds(N_EVAL + N_CAL)
    sess = ort.InferenceSession(str(m.path()), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = [dict(zip(names, sess.run(None, f))) for f in feeds[:N_EVAL]]
    opts = dict(VARIANTS[variant], **({"calibration": feeds[N_EVAL:]} if variant != "fp32" else {}))
    rec = {"model": key, "variant": variant, "metric": m.metric}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        cm = shiftc.compile(m.path(), "x86", input_shapes=m.pins, **opts)
        got = [cm.run(f) for f in feeds[:N_EVAL]]
    except Exception as exc:  # recorded: a refusal (ShiftcError) or an internal error
        rec.update(ok=False, internal=not isinstance(exc, shiftc.ShiftcError), error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}")
        return rec
    finally:
        rec.update(seconds=round(time.perf_counter() - wall, 1), cpu_seconds=round(time.process_time() - cpu, 1))
    max_abs, max_rel = fp32_max_error(got, ref, names)
    stage = next((s for s in cm.report.stages if s.name == "integerize"), None)
    rec.update(ok=True, internal=False, error=None, score=task_score(m.metric, got, ref, names), max_abs=max_abs, max_rel=max_rel,
               float_ops=None if stage is None else stage.summary.get("float_ops"))
    return rec


def load(path: Path = JSON) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"records": []}


def save(doc: dict, rec: dict, path: Path = JSON) -> None:
    """``rec`` replaces the record of the same model and variant."""
    doc["records"] = [r for r in doc["records"] if (r["model"], r["variant"]) != (rec["model"], rec["variant"])] + [rec]
    doc["records"].sort(key=lambda r: (r["model"], list(VARIANTS).index(r["variant"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _cell(rec: dict | None, fp32: bool = False) -> str:
    if rec is None:
        return "not measured yet"
    if not rec["ok"]:
        return ("**internal error**: " if rec["internal"] else "refused: ") + "`" + rec["error"].replace("|", "\\|")[:160] + "`"
    score = f"{rec['score']:.4g}" if rec["metric"] != "maxabs" else f"max \\|diff\\| {rec['score']:.3g}"
    if fp32:
        rel = f"relative {rec['max_rel']:.1e}"
        return f"max \\|diff\\| {rec['max_abs']:.2g} ({rel})" if rec["metric"] == "maxabs" else f"{score}; max \\|diff\\| {rec['max_abs']:.2g} ({rel})"
    islands = rec.get("float_ops")
    return score + ("" if not islands else f" ({islands} float island(s))")


def markdown(doc: dict) -> str:
    """The sweep table: one row per model, the task metric of each variant against onnxruntime FP32."""
    from public_metrics import INTEGER_BOUNDS, INTEGER_CHECKED_ELSEWHERE
    from public_models import MODELS

    by = {(r["model"], r["variant"]): r for r in doc["records"]}
    rows = ["| model | task metric vs onnxruntime FP32 | FP32 | `--integer-only` | bound in tests/test_public_sweep.py | `--integer-only --float-fallback` |",
            "|---|---|---|---|---|---|"]
    for m in MODELS:
        bound = INTEGER_BOUNDS.get(m.key)
        bound_text = INTEGER_CHECKED_ELSEWHERE.get(m.key, "—") if bound is None else (f"≤ {bound}" if m.metric == "maxabs" else f"≥ {bound}")
        rows.append(f"| {m.key} | {METRIC_TEXT.get(m.metric.split(':')[0], m.metric)} | {_cell(by.get((m.key, 'fp32')), True)} | "
                    f"{_cell(by.get((m.key, 'integer')))} | {bound_text} | {_cell(by.get((m.key, 'fallback')))} |")
    return "\n".join(rows) + "\n"


METRIC_TEXT = {"top1": "top-1 agreement", "ctc": "CTC text identical (fraction)", "cosine": "mean cosine of the embedding",
               "pearson": "mean Pearson r of the heat map", "iou": "mean IoU of the text masks (p > 0.3)",
               "maxabs": "max \\|diff\\| of the raw head"}


def readme_block(readme: str) -> tuple[str, str] | None:
    """(cited JSON, table) of the README's sweep block; None when it has none."""
    m = _BLOCK.search(readme)
    return (m.group("json"), m.group("body")) if m else None


def update_readme(readme: str, doc: dict) -> str:
    if _BLOCK.search(readme) is None:
        raise ValueError("the README has no sweep block (" + README_END + ")")
    return _BLOCK.sub(lambda _: README_BEGIN.format(json=JSON_NAME) + "\n" + markdown(doc) + README_END, readme, count=1)


def main(argv=None) -> int:
    from public_models import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(m.key for m in MODELS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--render", action="store_true", help="only render the JSON")
    ap.add_argument("--readme", action="store_true", help="rewrite the README's sweep table from the JSON")
    args = ap.parse_args(argv)
    doc = load()
    if not args.render:
        for key in args.models.split(","):
            for variant in args.variants.split(","):
                rec = measure(key, variant)
                save(doc, rec)
                print(json.dumps(rec), flush=True)
    if args.readme:
        readme = ROOT / "README.md"
        readme.write_text(update_readme(readme.read_text(), doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
