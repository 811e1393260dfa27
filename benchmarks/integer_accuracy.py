"""Real-model checks of ``--integer-only`` (issue 5). Prints a table; ``--json PATH`` saves it.

    python benchmarks/integer_accuracy.py cnn       [--model M] [--n 10000] [--calib 64]
    python benchmarks/integer_accuracy.py vit       [--model M] [--n 10000] [--calib 64]   # + 4-bit shift weights
    python benchmarks/integer_accuracy.py segmenter [--model M] [--n 300]   [--calib 64]   # mIoU, lambda-GELU, nearest, no L2
    python benchmarks/integer_accuracy.py minilm    [--sentences 64] [--calib 16]           # embedding cosine vs FP32

References: onnxruntime FP32 on the same inputs, and the Fashion-MNIST test labels / masks.
Calibration samples come from the *training* split; evaluation uses the test split. Every integer
variant is compiled with ``shiftc.compile(..., integer_only=True)`` for x86 and checked with the
float-op scan (``float_ops`` must be 0 for the claim "integer-only").
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
sys.path.insert(0, str(ROOT / "benchmarks"))

import shiftc  # noqa: E402
import shiftc.errors  # noqa: E402
from examples import evaluate as ev  # noqa: E402
from examples import fashion_mnist as fm  # noqa: E402


def float_scan(model_path, cal, **opts) -> list[str]:
    """Float ops left in the integerized Relax module (pipeline up to integerize, then the scan)."""
    from shiftc import frontend, pipeline
    from shiftc.passes import float_scan as fs
    from shiftc.report import Report

    loaded = frontend.load(model_path)
    mod = frontend.to_relax(loaded)
    mod = pipeline.run(mod, loaded, pipeline.PassOptions.from_kwargs(dict(integer_only=True, **opts)), cal, Report(), lambda s: None, {})
    return fs.float_ops(mod)


def compile_variant(model_path, cal, **opts):
    t0 = time.perf_counter()
    cm = shiftc.compile(str(model_path), "x86", calibration=cal, **opts)
    stage = next((s for s in cm.report.stages if s.name == "integerize"), None)
    return cm, time.perf_counter() - t0, stage


def predict(cm, x):
    name = cm.inputs[0].name
    return np.concatenate([next(iter(cm.run({name: x[i : i + 1]}).values())) for i in range(len(x))])


def classify(args, variants):
    xtr, _ = fm.load("train")
    xte, yte = fm.load("test")
    cal = [{"input": v} for v in fm.preprocess(xtr[: args.calib])[:, None]]
    cal = [{"input": c["input"]} for c in cal]
    x = fm.preprocess(xte[: args.n])
    y = yte[: args.n]
    rows = [{"variant": "fp32 (onnxruntime)", "accuracy": ev.accuracy(ev.onnx_predict(args.model, x), y)}]
    for label, opts in variants:
        cm, secs, stage = compile_variant(args.model, cal, **opts)
        t0 = time.perf_counter()
        acc = ev.accuracy(predict(cm, x), y)
        row = {"variant": label, "accuracy": acc, "compile_s": round(secs, 1), "eval_s": round(time.perf_counter() - t0, 1)}
        if stage is not None:
            row["float_ops_in_report"] = stage.summary.get("float_ops")
            row["calibration"] = stage.summary.get("calibration")
            row["error_on_calibration"] = stage.error
        if opts.get("integer_only"):
            row["float_ops_scan"] = len(float_scan(args.model, cal[: opts.get("calibration_samples") or len(cal)], **{k: v for k, v in opts.items() if k != "integer_only"}))
        rows.append(row)
    return rows


def cmd_cnn(args):
    return classify(args, [("integer-only", dict(integer_only=True))])


def cmd_vit(args):
    return classify(args, [
        ("integer-only (ShiftGELU)", dict(integer_only=True)),
        ("integer-only (lambda-ShiftGELU)", dict(integer_only=True, gelu="lambda")),
        ("integer-only + 4-bit shift weights", dict(integer_only=True, shift_bits=4)),
    ])


def cmd_segmenter(args):
    xtr, ytr = fm.load("train")
    xte, yte = fm.load("test")
    ctr, _ = fm.mosaics(xtr, ytr, args.calib, seed=1)
    cte, mte = fm.mosaics(xte, yte, args.n, seed=2)
    cal = [{"input": v[None]} for v in fm.preprocess(ctr)]
    x = fm.preprocess(cte)
    k = 11
    rows = [{"variant": "fp32 (onnxruntime)", "miou": ev.mean_iou(ev.onnx_predict(args.model, x).argmax(1), mte, k)}]
    base = dict(integer_only=True, gelu="lambda", upsample="nearest", l2norm="remove")
    for label, opts in [("integer-only, lambda-GELU, nearest, no L2", base),
                        ("same, calibrated on 1 image", dict(base, calibration_samples=1))]:
        cm, secs, stage = compile_variant(args.model, cal, **opts)
        t0 = time.perf_counter()
        miou = ev.mean_iou(predict(cm, x).argmax(1), mte, k)
        rows.append({"variant": label, "miou": miou, "compile_s": round(secs, 1), "eval_s": round(time.perf_counter() - t0, 1),
                     "calibration": stage.summary.get("calibration"), "float_ops_in_report": stage.summary.get("float_ops"),
                     "float_ops_scan": len(float_scan(args.model, cal[: opts.get("calibration_samples") or len(cal)], **{k2: v for k2, v in opts.items() if k2 != "integer_only"})),
                     "notes": stage.notes})
    return rows


def cmd_minilm(args):
    """all-MiniLM-L6-v2 (exported by benchmarks/minilm_export.py: its in-graph additive mask imports
    into Relax, unlike examples/minilm.py's export), seq len 128, embedding cosine vs onnxruntime."""
    import tempfile

    import minilm_export

    sents = minilm_export.sentences()[: args.sentences + args.calib]
    path = Path(args.model) if args.model else minilm_export.export(Path(tempfile.mkdtemp()) / "minilm.onnx", 17, 128)
    samples = minilm_export.tokenize(sents, 128)
    cal, test = samples[: args.calib], samples[args.calib :]
    ref_sess = ev.session(path)
    ref = np.concatenate([ref_sess.run(None, s)[0] for s in test])
    rows = []
    for label, opts in [("integer-only (L2 norm kept)", dict(integer_only=True)),
                        ("integer-only, ShiftGELU, L2 norm removed (cosine is scale-free)", dict(integer_only=True, l2norm="remove")),
                        ("integer-only, lambda-ShiftGELU, L2 norm removed", dict(integer_only=True, l2norm="remove", gelu="lambda"))]:
        try:
            cm, secs, stage = compile_variant(path, cal, **opts)
        except shiftc.errors.ShiftcError as exc:
            rows.append({"variant": label, "error": str(exc)})
            continue
        got = np.concatenate([next(iter(cm.run(s).values())) for s in test])
        cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        rows.append({"variant": label, "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "sentences": len(test),
                     "compile_s": round(secs, 1), "float_ops_in_report": stage.summary.get("float_ops"), "notes": stage.notes})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=["cnn", "vit", "segmenter", "minilm"])
    p.add_argument("--model")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--sentences", type=int, default=64)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.model is None and args.which != "minilm":
        args.model = str(ROOT / "examples" / "models" / f"{args.which}.onnx")
    rows = globals()[f"cmd_{args.which}"](args)
    for r in rows:
        print(json.dumps(r))
    if args.json:
        Path(args.json).write_text(json.dumps({"which": args.which, "n": args.n, "calib": args.calib, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
