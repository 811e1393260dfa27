"""Real-model accuracy of the shift pass (issue 3): MobileNetV2, Fashion-MNIST CNN, MiniLM.

* MobileNetV2 (ImageNet weights): top-1 agreement with FP32 onnxruntime and mean KL(FP32 || shift)
  over >= 100 real photos (skimage ``data`` photos, crops and flips), at 4-bit PoT and with the
  automatic allocation; artifact size against the FP32 ONNX file.
* Fashion-MNIST CNN: true accuracy on the 10k test set for FP32 (shiftc build, no shift), 4-bit,
  5-bit, 4-bit x 2 terms and the automatic allocation.
* every one also with ``--shift-reconstruct`` (layer-wise reconstruction of the codes); MobileNetV2
  also gives top-1 agreement on the photos FP32 is confident about (top probability > 0.5).
* all-MiniLM-L6-v2: mean/min cosine similarity of the embeddings with FP32 on >= 100 sentences.
* size budget (``bits5*``): ``--max-bits-per-weight 5`` (mixed shift codes and int8 layers), built
  with ``float_shift_form="shift"`` so the artifact holds the packed codes; its allocation's Pareto
  table (bits per weight vs measured error per greedy step) is kept in the results.

``--json`` merges into an existing results file: earlier configs stay, each run is logged under
``runs`` with its git revision and the machine's load average.

Calibration samples are distinct from the evaluation inputs (other crops / training images / other
sentences).  Needs the ``examples`` package (data loaders) importable.

Usage: python benchmarks/shift_accuracy.py [--mbv2 M.onnx] [--cnn C.onnx] [--minilm L.onnx]
       [--photos 100] [--fmnist-n 10000] [--sentences 100] [--minilm-calibration 4] [--budget-mbv2 0.1] [--budget-cnn 0.05]
       [--budget-minilm 0.05] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import shiftc
from shiftc import evaluate, frontend


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


ONLY: set[str] = set()  # --only: run just these config labels
TAG = [""]  # --tag: appended to the labels written (e.g. a run with another calibration set)


def _wanted(label: str) -> bool:
    return not ONLY or label in ONLY


def _compile(model, calib, tmp, name, **opts):
    t0 = time.perf_counter()
    cm = shiftc.compile(str(model), "x86", calibration=calib, output=Path(tmp) / name, **opts)
    stage = next((s for s in cm.report.stages if s.name == "shift"), None)
    info = {"compile_s": round(time.perf_counter() - t0, 1), "artifact_bytes": _dir_bytes(Path(tmp) / name)}
    if stage is not None:
        info.update({k: stage.summary.get(k) for k in ("bits_per_weight", "rewritten", "packed_weight_bytes", "fp32_weight_bytes")})
        info["calibration_error"] = stage.error
        info["bits_terms"] = sorted({f"{r['bits']}b x{r['terms']}" if r["terms"] else "int8" for r in stage.rows if r["bits"]})
        info["notes"] = [n for n in stage.notes if n.startswith(("auto", "accuracy", "--accuracy", "bias", "reconstruction", "gptq"))]
        info["code_bits_per_weight"] = stage.summary.get("code_bits_per_weight")
        info["budget_check"] = stage.summary.get("budget")
        alloc = stage.summary.get("bit_allocation")
        if alloc:
            info["bit_allocation"] = {k: alloc[k] for k in ("max_bits_per_weight", "bits_per_weight", "stored_bits", "budget_bits", "primitives", "pareto")}
            info["layers"] = [{k: row[k] for k in ("layer", "weights", "gain", "rung", "local_rel_l2")} for row in alloc["layers"]]
        if "reconstruction" in stage.summary:
            info["reconstruction_model_runs"] = stage.summary["reconstruction"]["model_runs"]
    return cm, info


# the size-budget configs: at most 5 stored bits per weight, the artifact holding the packed codes
SMALL = {"float_shift_form": "shift"}
BITS5 = (("bits5", {"max_bits_per_weight": 5.0, **SMALL}),
         ("bits5_reconstruct", {"max_bits_per_weight": 5.0, "shift_reconstruct": True, **SMALL}),
         ("pot4_reconstruct_small", {"shift_bits": 4, "shift_reconstruct": True, **SMALL}),
         ("bits5_gptq", {"max_bits_per_weight": 5.0, "shift_rounding": "gptq", **SMALL}),
         ("pot4_gptq", {"shift_bits": 4, "shift_rounding": "gptq", **SMALL}),
         ("bits5_gptq_no_bias_corr", {"max_bits_per_weight": 5.0, "shift_rounding": "gptq", "shift_bias_correction": False}))


def _run_all(cm, name, inputs):
    return np.concatenate([cm.run({name: x[None] if x.ndim == len(cm.inputs[0].shape) - 1 else x})[cm.outputs[0].name] for x in inputs])


def _sweep(model: str, out: dict, configs, path, calib, tmp, budget, score) -> dict:
    """Compile each wanted (label, options), let ``score(cm, info)`` add its metrics, print a line."""
    for label, opts in configs:
        if not _wanted(label):
            continue
        cm, info = _compile(path, calib, tmp, label, **opts)
        score(cm, info)
        if label == "auto":
            info["budget"] = budget
        out[label + TAG[0]] = info
        print(model, label + TAG[0], json.dumps(info), flush=True)
    return out


def mobilenetv2(path, n_photos, budget, tmp):
    from examples.mobilenetv2 import real_photos

    photos = real_photos(n_photos, seed=0)
    calib = [{"input": x[None]} for x in real_photos(8 + n_photos, seed=1)[-8:]]  # other crops/flips
    loaded = frontend.load(str(path))
    ref = np.concatenate([r[0] for r in evaluate.onnxruntime_outputs(loaded.proto, [{"input": x[None]} for x in photos])])
    out = {"photos": n_photos, "onnx_bytes": Path(path).stat().st_size}

    def score(cm, info):
        logits = _run_all(cm, "input", photos)
        p, q = _softmax(ref.astype(np.float64)), _softmax(logits.astype(np.float64))
        info["top1_agreement"] = float(np.mean(ref.argmax(1) == logits.argmax(1)))
        info["mean_kl"] = float(np.mean(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30)), axis=1)))
        confident = p.max(1) > 0.5  # photos FP32 is sure about: agreement there is what a user sees
        info["confident_photos"] = int(confident.sum())
        info["confident_top1_agreement"] = float(np.mean((ref.argmax(1) == logits.argmax(1))[confident])) if confident.any() else None
        info["size_ratio_vs_onnx"] = round(out["onnx_bytes"] / info["artifact_bytes"], 2)

    configs = (("pot4", {"shift_bits": 4}), ("pot4_no_bias_corr", {"shift_bits": 4, "shift_bias_correction": False}),
               ("pot4_2terms", {"shift_bits": 4, "shift_terms": 2}),
               ("pot4_2terms_no_bias_corr", {"shift_bits": 4, "shift_terms": 2, "shift_bias_correction": False}),
               ("pot4_reconstruct", {"shift_bits": 4, "shift_reconstruct": True}),
               ("pot4_2terms_reconstruct", {"shift_bits": 4, "shift_terms": 2, "shift_reconstruct": True}),
               ("auto", {"accuracy_budget": budget, "budget_best_effort": True}), *BITS5)
    return _sweep("mobilenetv2", out, configs, path, calib, tmp, budget, score)


def fashion_cnn(path, n_test, budget, tmp):
    from examples import fashion_mnist as fm

    images, labels = fm.load("test")
    x = fm.preprocess(images[:n_test])
    y = labels[:n_test]
    train, _ = fm.load("train")
    spec = frontend.load(str(path)).inputs[0]
    calib = [{spec.name: v[None]} for v in fm.preprocess(train[:16])]
    out = {"test_items": int(len(y))}
    configs = (("fp32", {}), ("pot4", {"shift_bits": 4}), ("pot4_no_bias_corr", {"shift_bits": 4, "shift_bias_correction": False}),
               ("pot5", {"shift_bits": 5}), ("pot4_2terms", {"shift_bits": 4, "shift_terms": 2}),
               ("pot4_reconstruct", {"shift_bits": 4, "shift_reconstruct": True}),
               ("auto", {"accuracy_budget": budget, "budget_best_effort": True}), ("pot4_gptq", {"shift_bits": 4, "shift_rounding": "gptq"}))

    def score(cm, info):
        info["accuracy"] = float(np.mean(_run_all(cm, spec.name, x).argmax(1) == y))

    return _sweep("fashion_cnn", out, configs, path, calib, tmp, budget, score)


def _packed_texts(sents, n, tokens=128):
    """``n`` calibration texts of consecutive sentences joined until each fills ``tokens`` word
    pieces (roughly 4 words for 5 pieces): full sequences, no padding rows."""
    out, i = [], 0
    while len(out) < n and i < len(sents):
        words = []
        while i < len(sents) and len(words) * 5 < tokens * 4 + 40:
            words += sents[i].split()
            i += 1
        out.append(" ".join(words))
    return out


def minilm(path, n_sentences, budget, tmp, n_calibration=4, packed=False, extra_texts=()):
    """``packed``: calibrate on full 128-token chunks of the following sentences instead of one
    padded sentence each (padded rows then carry no weight in the per-layer fits).
    ``extra_texts``: more text files whose sentences follow (the GPL-3 text after the evaluation
    sentences fills about 15 chunks)."""
    from examples import minilm as ml

    sents = ml.sentences()
    rest = sents[n_sentences:] + [x for t in extra_texts for x in ml.sentences(str(t))]
    evals, cal = sents[:n_sentences], (_packed_texts(rest, n_calibration) if packed else rest[:n_calibration])
    feeds = ml.tokenize(evals)
    samples = [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(len(evals))]
    cfeeds = ml.tokenize(cal)
    calib = [{k: v[i : i + 1] for k, v in cfeeds.items()} for i in range(len(cal))]
    loaded = frontend.load(str(path))
    ref = np.concatenate([r[0] for r in evaluate.onnxruntime_outputs(loaded.proto, samples)])
    out = {"sentences": len(samples)}

    def score(cm, info):
        emb = np.concatenate([cm.run(s)[cm.outputs[0].name] for s in samples])
        cos = np.sum(emb * ref, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1))
        info.update({"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())})

    configs = (("pot4", {"shift_bits": 4}), ("pot5", {"shift_bits": 5}), ("pot4_reconstruct", {"shift_bits": 4, "shift_reconstruct": True}),
               ("pot5_reconstruct", {"shift_bits": 5, "shift_reconstruct": True}), ("auto", {"accuracy_budget": budget}), *BITS5)
    return _sweep("minilm", out, configs, path, calib, tmp, budget, score)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbv2", type=Path)
    ap.add_argument("--cnn", type=Path)
    ap.add_argument("--minilm", type=Path)
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--fmnist-n", type=int, default=10000)
    ap.add_argument("--sentences", type=int, default=100)
    ap.add_argument("--minilm-calibration", type=int, default=4, help="calibration sentences (after the evaluation ones)")
    ap.add_argument("--minilm-packed", action="store_true", help="calibration texts fill the 128-token sequence (no padding)")
    ap.add_argument("--minilm-text", type=Path, action="append", default=[], help="more calibration text after the GPL-3's (repeatable)")
    ap.add_argument("--budget-mbv2", type=float, default=0.1)
    ap.add_argument("--budget-cnn", type=float, default=0.05)
    ap.add_argument("--budget-minilm", type=float, default=0.05)
    ap.add_argument("--only", default="", help="comma list of config labels to run (e.g. pot4,auto)")
    ap.add_argument("--tag", default="", help="suffix for the labels written, e.g. _cal16")
    ap.add_argument("--json", type=Path, help="write all results here")
    args = ap.parse_args(argv)
    ONLY.update(x for x in args.only.split(",") if x)
    TAG[0] = args.tag
    results = {}
    with tempfile.TemporaryDirectory(prefix="shift-acc-") as tmp:
        if args.cnn:
            results["fashion_cnn"] = fashion_cnn(args.cnn, args.fmnist_n, args.budget_cnn, tmp)
        if args.mbv2:
            results["mobilenetv2"] = mobilenetv2(args.mbv2, args.photos, args.budget_mbv2, tmp)
        if args.minilm:
            results["minilm"] = minilm(args.minilm, args.sentences, args.budget_minilm, tmp, args.minilm_calibration, args.minilm_packed,
                                       args.minilm_text)
    print(json.dumps(results, indent=1))
    if args.json:
        _merge_into(args.json, results, argv)


def _run_record(argv) -> dict:
    """When and where a run was made: UTC time, git revision, load average."""
    import os
    import subprocess
    import sys

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    return {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": rev, "loadavg_1_5_15": list(os.getloadavg()),
            "cpus": os.cpu_count(), "command": " ".join(["benchmarks/shift_accuracy.py", *(argv if argv is not None else sys.argv[1:])])}


def _merge_into(path: Path, results: dict, argv) -> None:
    """Write ``results`` into the JSON at ``path``, keeping the configs it already holds."""
    old = json.loads(path.read_text()) if path.exists() else {}
    for model, configs in results.items():
        old.setdefault(model, {}).update(configs)
    old.setdefault("runs", []).append(_run_record(argv))
    path.write_text(json.dumps(old, indent=1) + "\n")


if __name__ == "__main__":
    main()
