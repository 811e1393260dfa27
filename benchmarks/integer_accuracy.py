"""Real-model checks of ``--integer-only`` (issue 5). Prints a table; ``--json PATH`` saves it.

    python benchmarks/integer_accuracy.py cnn       [--model M] [--n 10000] [--calib 64]
    python benchmarks/integer_accuracy.py vit       [--model M] [--n 10000] [--calib 64]   # + 4-bit shift weights
    python benchmarks/integer_accuracy.py segmenter [--model M] [--n 300]   [--calib 64]   # mIoU, lambda-GELU, nearest, no L2
    python benchmarks/integer_accuracy.py minilm    [--sentences 64] [--calib 16]           # embedding cosine vs FP32 (examples/minilm.py)
    python benchmarks/integer_accuracy.py unvit     [--model M] [--n 10000] [--calib 64]   # + 4-bit shift weights
    python benchmarks/integer_accuracy.py mobilenetv2 --n 64 --calib 8                     # top-1 agreement vs FP32 on photos

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

import shiftc  # noqa: E402
import shiftc.core.errors  # noqa: E402
from examples import evaluate as ev  # noqa: E402
from examples import fashion_mnist as fm  # noqa: E402


def float_scan(model_path, cal, **opts) -> list[str]:
    """Float ops left in the integerized Relax module (pipeline up to integerize, then the scan)."""
    from shiftc import frontend, pipeline
    from shiftc.passes import float_scan as fs
    from shiftc.core.report import Report

    loaded = frontend.load(model_path)
    mod = frontend.to_relax(loaded)
    mod = pipeline.run(mod, loaded, pipeline.PassOptions.from_kwargs(dict(integer_only=True, **opts)), cal, Report(), lambda s: None, {})
    return fs.float_ops(mod)


METHOD = "minmax"  # --method: the calibration observer of every integer variant


def compile_variant(model_path, cal, **opts):
    if opts.get("integer_only"):
        opts.setdefault("calibration_method", METHOD)
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
    return classify(args, [("integer-only", dict(integer_only=True)),
                           ("integer-only, pow2 requant (shift-only, VTA-style)", dict(integer_only=True, requant="pow2"))])


def cmd_vit(args):
    return classify(args, [
        ("integer-only (ShiftGELU)", dict(integer_only=True)),
        ("integer-only (lambda-ShiftGELU)", dict(integer_only=True, gelu="lambda")),
        ("integer-only + 4-bit shift weights", dict(integer_only=True, shift_bits=4)),
    ])


def cmd_unvit(args):
    return classify(args, [("integer-only", dict(integer_only=True)),
                           ("integer-only + 4-bit shift weights", dict(integer_only=True, shift_bits=4))])


def cmd_mobilenetv2(args):
    """Top-1 agreement with onnxruntime FP32 on real photos (no labels offline)."""
    import tempfile

    from examples import mobilenetv2 as mbv2
    from shiftc import evaluate, frontend

    path = args.model or mbv2.export_mobilenetv2(Path(tempfile.mkdtemp()) / "mobilenetv2.onnx")
    photos = mbv2.real_photos(args.n, seed=0)
    cal = [{"input": x[None]} for x in mbv2.real_photos(args.calib + args.n, seed=1)[-args.calib:]]  # other crops/flips
    ref = np.concatenate([r[0] for r in evaluate.onnxruntime_outputs(frontend.load(str(path)).proto, [{"input": x[None]} for x in photos])])
    rows = []
    for method in ("minmax", "percentile"):
        cm, secs, stage = compile_variant(str(path), cal, integer_only=True, calibration_method=method)
        out = predict(cm, photos)
        rows.append({"variant": f"integer-only ({method})", "top1_agreement": float(np.mean(out.argmax(1) == ref.argmax(1))),
                     "photos": len(photos), "compile_s": round(secs, 1), "error_on_calibration": stage.error})
    return rows


def cmd_segmenter(args):
    from examples.train import seg_test_set  # the fixed 2000-mosaic test set examples/ reports

    xtr, ytr = fm.load("train")
    ctr, _ = fm.mosaics(xtr, ytr, args.calib, seed=1)
    cte, mte = seg_test_set()
    cte, mte = cte[: args.n], mte[: args.n]
    cal = [{"input": v[None]} for v in fm.preprocess(ctr)]
    x = fm.preprocess(cte)
    k = 11
    rows = [{"variant": "fp32 (onnxruntime)", "miou": ev.mean_iou(ev.onnx_predict(args.model, x).argmax(1), mte, k)}]
    rows += segmenter_model_changes(x, mte, k)
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


def segmenter_model_changes(x, masks, k):
    """FP32 mIoU of the trained torch Segmenter with I-Segmenter's model changes applied in float
    (nearest upsampling, no L2 norm): separates their cost from the integer arithmetic's."""
    import torch
    import torch.nn.functional as F

    from examples.models import Segmenter

    model = Segmenter()
    state = torch.load(ROOT / "examples" / "weights" / "segmenter.pt", map_location="cpu")
    model.load_state_dict(state)
    model.eval()

    def forward(inp, l2, mode):
        b, _, h, w = inp.shape
        t = model.decoder(torch.cat([model.encoder(inp), model.cls_emb.expand(b, -1, -1)], dim=1))
        patches, cls = t[:, : -model.num_classes], t[:, -model.num_classes :]
        if l2:
            patches = patches / patches.norm(dim=-1, keepdim=True)
            cls = cls / cls.norm(dim=-1, keepdim=True)
        masks_ = model.logit_scale * (patches @ cls.transpose(1, 2))
        masks_ = masks_.transpose(1, 2).reshape(b, model.num_classes, model.grid, model.grid)
        return F.interpolate(masks_, size=(h, w), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))

    rows = []
    with torch.no_grad():
        for label, l2, mode in [("fp32 torch, as trained (check)", True, "bilinear"), ("fp32 torch, nearest upsampling", True, "nearest"),
                                ("fp32 torch, no L2 norm", False, "bilinear"), ("fp32 torch, nearest + no L2 norm", False, "nearest")]:
            pred = np.concatenate([forward(torch.from_numpy(x[i : i + 100]), l2, mode).argmax(1).numpy() for i in range(0, len(x), 100)])
            rows.append({"variant": label, "miou": ev.mean_iou(pred, masks, k)})
    return rows


def cmd_minilm(args):
    """all-MiniLM-L6-v2 (examples/minilm.py export: BERT, masked mean pooling, L2 norm), seq len 128,
    embedding cosine vs onnxruntime FP32 on GPL-3 sentences not used for calibration."""
    import tempfile

    from examples import minilm

    sents = minilm.sentences()[: args.sentences + args.calib]
    path = Path(args.model) if args.model else minilm.export_minilm(Path(tempfile.mkdtemp()) / "minilm.onnx")
    samples = minilm.feeds(sents)
    cal, test = samples[: args.calib], samples[args.calib :]
    ref_sess = ev.session(path)
    ref = np.concatenate([ref_sess.run(None, s)[0] for s in test])
    rows = []
    for label, opts in [("integer-only (L2 norm kept)", dict(integer_only=True)),
                        ("integer-only, ShiftGELU, L2 norm removed (cosine is scale-free)", dict(integer_only=True, l2norm="remove")),
                        ("integer-only, lambda-ShiftGELU, L2 norm removed", dict(integer_only=True, l2norm="remove", gelu="lambda"))]:
        try:
            cm, secs, stage = compile_variant(path, cal, **opts)
        except shiftc.core.errors.ShiftcError as exc:
            rows.append({"variant": label, "error": str(exc)})
            continue
        got = np.concatenate([next(iter(cm.run(s).values())) for s in test])
        cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        rows.append({"variant": label, "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "sentences": len(test),
                     "compile_s": round(secs, 1), "float_ops_in_report": stage.summary.get("float_ops"), "notes": stage.notes})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=["cnn", "vit", "unvit", "segmenter", "minilm", "mobilenetv2"])
    p.add_argument("--model")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--sentences", type=int, default=64)
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile", "mse"], help="calibration observer")
    p.add_argument("--json")
    args = p.parse_args(argv)
    global METHOD
    METHOD = args.method
    if args.model is None and args.which not in ("minilm", "mobilenetv2"):
        args.model = str(ROOT / "examples" / "models" / f"{args.which}.onnx")
    rows = globals()[f"cmd_{args.which}"](args)
    for r in rows:
        print(json.dumps(r))
    if args.json:
        Path(args.json).write_text(json.dumps({"which": args.which, "n": args.n, "calib": args.calib, "method": args.method, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
