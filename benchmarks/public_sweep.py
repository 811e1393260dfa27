"""The public-model sweep as two tables: every model of tests/public_models.py compiled as shipped
(only its ``--input-shape`` pins) in FP32, ``--integer-only`` and ``--integer-only
--float-fallback`` (the sweep table), and with shift weights (the shift table: ``--shift-bits 4``
as a user would try first, ``--max-bits-per-weight 5`` with the packed codes in the artifact, the
same with ``--shift-reconstruct``), run on the same real inputs as tests/test_public_sweep.py (4
evaluation samples, 4 others for calibration) and scored against onnxruntime FP32 with the sweep's
task metrics (tests/public_metrics.py); classifiers also get mean KL and agreement on the inputs
FP32 is confident about, shift builds their stored bits per weight and artifact size. Each build
runs in a child process stopped after ``--timeout`` seconds (recorded as not finished). Writes
benchmarks/results/public_sweep.json after every build (a stopped run keeps what it measured;
runs of other models or variants merge into the same file) and renders the README's tables.

Usage: python benchmarks/public_sweep.py [--models a,b] [--variants fp32,integer,fallback,shift4,bits5] [--timeout 600] [--readme]
       python benchmarks/public_sweep.py --render [--readme]     (the tables of the JSON as they are)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # examples/ and the public-model registry

JSON = ROOT / "benchmarks" / "results" / "public_sweep.json"
JSON_NAME = "benchmarks/results/public_sweep.json"
SMALL = {"float_shift_form": "shift"}  # the artifact holds the packed codes (as benchmarks/shift_accuracy.py's bits5)
VARIANTS = {"fp32": {}, "integer": {"integer_only": True}, "fallback": {"integer_only": True, "float_fallback": True},
            "shift4": {"shift_bits": 4}, "bits5": {"max_bits_per_weight": 5.0, **SMALL},
            "bits5_reconstruct": {"max_bits_per_weight": 5.0, "shift_reconstruct": True, **SMALL},
            "bits5_gptq": {"max_bits_per_weight": 5.0, "shift_rounding": "gptq", **SMALL}}
SHIFT_TEXT = {"shift4": "`--shift-bits 4`", "bits5": "`--max-bits-per-weight 5 --float-shift-form shift`",
              "bits5_reconstruct": "`--max-bits-per-weight 5 --float-shift-form shift --shift-reconstruct`",
              "bits5_gptq": "`--max-bits-per-weight 5 --float-shift-form shift --shift-rounding gptq`"}
N_EVAL, N_CAL = 4, 4  # as tests/test_public_sweep.py
README_BEGIN = "<!-- public sweep table: python benchmarks/public_sweep.py --render --readme, from {json} (generated; do not edit) -->"
README_END = "<!-- end of public sweep table -->"
SHIFT_BEGIN = "<!-- public shift table: python benchmarks/public_sweep.py --render --readme, from {json} (generated; do not edit) -->"
SHIFT_END = "<!-- end of public shift table -->"


def _block_re(begin: str, end: str) -> re.Pattern:
    return re.compile(re.escape(begin).replace(r"\{json\}", r"(?P<json>\S+)") + r"\n(?P<body>.*?)" + re.escape(end), re.S)


_BLOCK, _SHIFT_BLOCK = _block_re(README_BEGIN, README_END), _block_re(SHIFT_BEGIN, SHIFT_END)


def measure(key: str, variant: str) -> dict:
    """Compile ``key`` as ``variant``, run it on the evaluation samples, score it; the record."""
    import onnxruntime as ort

    import shiftc
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
        rec["compile_seconds"] = round(time.perf_counter() - wall, 1)
        got = [cm.run(f) for f in feeds[:N_EVAL]]
    except Exception as exc:  # recorded: a refusal (ShiftcError) or an internal error
        rec.update(ok=False, internal=not isinstance(exc, shiftc.ShiftcError), error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}")
        return rec
    finally:
        rec.update(seconds=round(time.perf_counter() - wall, 1), cpu_seconds=round(time.process_time() - cpu, 1))
    rec.update(ok=True, internal=False, error=None, **scores(m.metric, cm, got, ref, names))
    return rec


def scores(metric: str, cm, got: list[dict], ref: list[dict], names: list[str]) -> dict:
    """The record's measurements of a build that ran: task metric, FP32 error, float islands left by
    the integeriser, the shift stage's stored bits per weight, artifact and ONNX sizes, and for a
    classifier mean KL and agreement on the inputs FP32 is confident about (tests/public_metrics.py)."""
    from public_metrics import class_scores, fp32_max_error, task_score

    max_abs, max_rel = fp32_max_error(got, ref, names)
    stages = {s.name: s for s in cm.report.stages}
    out = {"score": task_score(metric, got, ref, names), "max_abs": max_abs, "max_rel": max_rel,
           "float_ops": stages["integerize"].summary.get("float_ops") if "integerize" in stages else None,
           "artifact_bytes": cm.report.sizes.get("artifact_files_bytes"), "onnx_bytes": cm.report.sizes.get("onnx_model_bytes")}
    if "shift" in stages:
        summary = stages["shift"].summary
        out.update({k: summary.get(k) for k in ("bits_per_weight", "code_bits_per_weight", "rewritten")})
    if metric == "top1":
        out.update(class_scores(got, ref, names))
    return out


def _child(key: str, variant: str, conn) -> None:
    conn.send(measure(key, variant))
    conn.close()


def measure_within(key: str, variant: str, timeout_s: float) -> dict:
    """``measure`` in a child process, stopped after ``timeout_s`` seconds: a build that does not
    finish (or a child that dies) is recorded as such; the 1-minute load average before and after."""
    import multiprocessing as mp

    from public_models import BY_KEY

    load0, ctx = os.getloadavg()[0], mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(key, variant, send), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    send.close()
    rec = {"model": key, "variant": variant, "metric": BY_KEY[key].metric, "ok": False, "internal": False}
    try:
        rec = recv.recv() if recv.poll(timeout_s) else dict(rec, timed_out=True, error=f"not finished in {timeout_s:.0f} s (stopped)")
    except EOFError:
        proc.join(10)
        rec.update(internal=True, error=f"the build's process died (exit code {proc.exitcode})")
    if proc.is_alive():
        proc.terminate()
        proc.join(10)
    rec.setdefault("seconds", round(time.perf_counter() - t0, 1))
    rec["load_1m_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
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
    if rec.get("timed_out"):
        return rec["error"]
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


def _shift_cells(rec: dict | None) -> list[str]:
    """Task metric, mean KL, confident-input agreement, bits per weight, artifact vs ONNX, compile s."""
    if rec is None or not rec["ok"]:
        return [_cell(rec)] + ["—"] * 5
    kl = "—" if rec.get("mean_kl") is None else f"{rec['mean_kl']:.3g}"
    sure = rec.get("confident_inputs")
    agree = "—" if sure is None else "no confident input" if not sure else f"{round(rec['confident_top1_agreement'] * sure)}/{sure}"
    bits = "—" if rec.get("bits_per_weight") is None else f"{rec['bits_per_weight']:.2f}"
    ratio = rec["onnx_bytes"] / rec["artifact_bytes"]
    size = f"{rec['artifact_bytes'] / 1e6:.2f} MB, " + (f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger")
    load = rec.get("load_1m_before_after")
    secs = f"{rec['compile_seconds']:.0f}" + ("" if load is None else f" (load {load[0]:.1f}/{load[1]:.1f})")
    return [_cell(rec), kl, agree, bits, size, secs]


def shift_markdown(doc: dict) -> str:
    """The shift table: one row per model and shift build, its task metric against onnxruntime FP32
    (classifiers: mean KL and top-1 agreement on the inputs FP32 is confident about), stored bits
    per weight of the shifted layers, artifact size against the .onnx file, compile seconds."""
    from public_metrics import CONFIDENT
    from public_models import MODELS

    by = {(r["model"], r["variant"]): r for r in doc["records"]}
    rows = [f"| model | task metric vs onnxruntime FP32 | build | task metric | mean KL (classifiers) | top-1 agreement where FP32's top probability > {CONFIDENT} "
            "| stored bits per weight (shifted layers) | artifact vs .onnx | compile s (1-min load before/after) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in MODELS:
        metric = METRIC_TEXT.get(m.metric.split(":")[0], m.metric)
        for variant, text in SHIFT_TEXT.items():
            rows.append(f"| {m.key} | {metric} | {text} | " + " | ".join(_shift_cells(by.get((m.key, variant)))) + " |")
    return "\n".join(rows) + "\n"


BLOCKS = ((README_BEGIN, README_END, markdown), (SHIFT_BEGIN, SHIFT_END, shift_markdown))


def readme_block(readme: str, shift: bool = False) -> tuple[str, str] | None:
    """(cited JSON, table) of the README's sweep block (``shift``: its shift block); None when it has none."""
    m = (_SHIFT_BLOCK if shift else _BLOCK).search(readme)
    return (m.group("json"), m.group("body")) if m else None


def rendered(doc: dict) -> str:
    """Both tables as README blocks, markers included (what ``--readme`` writes)."""
    return "\n".join(begin.format(json=JSON_NAME) + "\n" + render(doc) + end + "\n" for begin, end, render in BLOCKS)


def update_readme(readme: str, doc: dict) -> str:
    """The README with its sweep block, and its shift block when it has one, rendered from ``doc``."""
    if _BLOCK.search(readme) is None:
        raise ValueError("the README has no sweep block (" + README_END + ")")
    for (begin, end, render), pattern in zip(BLOCKS, (_BLOCK, _SHIFT_BLOCK)):
        readme = pattern.sub(lambda _, b=begin, e=end, r=render: b.format(json=JSON_NAME) + "\n" + r(doc) + e, readme, count=1)
    return readme


def main(argv=None) -> int:
    from public_models import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(m.key for m in MODELS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds one build (compile and runs) may take")
    ap.add_argument("--render", action="store_true", help="only render the JSON")
    ap.add_argument("--readme", action="store_true", help="rewrite the README's tables from the JSON")
    args = ap.parse_args(argv)
    doc = load()
    if not args.render:
        for key in args.models.split(","):
            for variant in args.variants.split(","):
                rec = measure_within(key, variant, args.timeout)
                save(doc, rec)
                print(json.dumps(rec), flush=True)
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        readme.write_text(update_readme(text, doc))
        if _SHIFT_BLOCK.search(text) is None:
            print("note: the README has no shift block; only the sweep table was rewritten (paste the shift block below)", file=sys.stderr)
    print(rendered(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
