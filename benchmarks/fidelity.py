"""Fidelity of post-training int8: shiftc ``--integer-only`` against onnxruntime and NNCF (issue 13).

Every quantiser sees the same evaluation inputs and the same calibration samples; the reference is
onnxruntime FP32 on the original model.

* MobileNetV2 (ImageNet weights, examples/mobilenetv2.py): 100 skimage photo crops, 8 calibration
  crops drawn with another seed. Top-1 agreement with FP32, agreement on the photos whose FP32 top-1
  probability is >= 0.5 ("confident"), mean KL(FP32 || quantised) of the softmax.
* all-MiniLM-L6-v2 (examples/minilm.py export): GPL-3 sentences, 16 other ones for calibration;
  mean / min cosine of the embeddings.
* PaddleOCR text-orientation classifier (tests/public_models.py ``ppocr-cls``): scanned text lines,
  half of them upside down; the model outputs probabilities, so KL is taken on them directly.

Quantisers: onnxruntime ``quantize_static`` (QDQ, per-channel int8 weights, MinMax; u8 asymmetric,
s8 asymmetric and s8 symmetric activations), NNCF ``nncf.quantize`` (ONNX backend, default preset,
transformer model type for MiniLM; run in onnxruntime), shiftc ``--integer-only`` with each
``--calibration-method`` (minmax, percentile, mse).

    python benchmarks/fidelity.py [--quick] [--models mobilenetv2,minilm,ppocr-cls]
                                  [--json benchmarks/results/fidelity.json] [--md PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # examples/ and the public-model registry

CONFIDENT = 0.5  # FP32 top-1 probability at or above which an input counts as confident
SHIFTC_METHODS = ("minmax", "percentile", "mse")  # PassOptions.calibration_method's choices


# ----------------------------------------------------------------------------- metrics
def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def mean_kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over rows of KL(p || q) for probability rows p (reference) and q (quantised)."""
    p, q = p.astype(np.float64), q.astype(np.float64)
    return float(np.mean(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30)), axis=-1)))


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Fraction of rows whose argmax is the same."""
    return float(np.mean(ref.argmax(-1) == got.argmax(-1)))


def confident_agreement(p_ref: np.ndarray, got: np.ndarray, threshold: float = CONFIDENT) -> tuple[float | None, int]:
    """Top-1 agreement on the rows whose reference top-1 probability is >= threshold, and their
    count (None when no row is confident)."""
    keep = p_ref.max(-1) >= threshold
    if not keep.any():
        return None, 0
    return top1_agreement(p_ref[keep], got[keep]), int(keep.sum())


def cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (rows flattened)."""
    a, b = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def classifier_scores(ref: np.ndarray, got: np.ndarray, probabilities: bool) -> dict:
    """Top-1 agreement, confident agreement and mean KL of classifier outputs (logits unless
    ``probabilities``)."""
    p, q = (ref, got) if probabilities else (softmax(ref), softmax(got))
    conf, n_conf = confident_agreement(p, q)
    return {"top1_agreement": top1_agreement(p, q), "confident_agreement": conf, "confident_n": n_conf,
            "mean_kl": mean_kl(p, np.clip(q, 0.0, None))}


def embedding_scores(ref: np.ndarray, got: np.ndarray) -> dict:
    cos = cosines(ref, got)
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}


# ----------------------------------------------------------------------------- quantisers
def _ort_session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def ort_runner(model):
    """feeds -> first outputs stacked, run in onnxruntime."""
    sess = _ort_session(model)
    return lambda feeds: np.concatenate([sess.run(None, f)[0] for f in feeds])


def ort_static(path: Path, calib: list[dict], activation: str, tmp: Path):
    """onnxruntime quantize_static: QDQ, per-channel s8 weights, MinMax; activations u8, s8 or s8sym."""
    from shiftc.bench.variants import ort_quantize

    return ort_runner(ort_quantize(path, tmp / f"ort_{activation}.onnx", calib, activation))


def nncf_ptq(path: Path, calib: list[dict], transformer: bool):
    """NNCF post-training quantisation, ONNX backend (default preset), run in onnxruntime."""
    import nncf
    import onnx

    kw = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    q = nncf.quantize(onnx.load(str(path)), nncf.Dataset(calib), subset_size=len(calib), **kw)
    return ort_runner(q)


def shiftc_int(path: Path, calib: list[dict], pins: dict | None, **opts):
    """shiftc.compile(..., integer_only=True) for x86; feeds -> first outputs stacked."""
    import shiftc

    cm = shiftc.compile(str(path), "x86", input_shapes=pins, calibration=calib, integer_only=True, **opts)
    name = cm.outputs[0].name

    def run(feeds):
        return np.concatenate([cm.run(f)[name] for f in feeds])

    summary = next(s.summary for s in cm.report.stages if s.name == "integerize")
    run.extra = {k: summary[k] for k in ("int16_operands", "budget") if k in summary}  # what mixed precision chose
    return run


def variants(model: dict, quick: bool):
    """(label, make runner) of every quantiser for one model spec."""
    path, calib, tmp = model["path"], model["calib"], model["tmp"]
    out = [(f"onnxruntime QDQ per-channel, {a} activations", lambda a=a: ort_static(path, calib, a, tmp))
           for a in ("u8", "s8", "s8sym")]
    out.append(("NNCF PTQ (ONNX backend)", lambda: nncf_ptq(path, calib, model["kind"] == "embedding")))
    for method in SHIFTC_METHODS[:2] if quick else SHIFTC_METHODS:
        out.append((f"shiftc --integer-only ({method})",
                    lambda m=method: shiftc_int(path, calib, model.get("pins"), calibration_method=m, **model.get("shiftc", {}))))
    for label, opts in model.get("shiftc_extra", {}).items():  # fidelity methods beyond the observer
        out.append((f"shiftc --integer-only ({label})",
                    lambda o=opts: shiftc_int(path, calib, model.get("pins"), **model.get("shiftc", {}), **o)))
    return out


# ----------------------------------------------------------------------------- models
def mobilenetv2(n: int, n_cal: int, tmp: Path) -> dict:
    from examples import mobilenetv2 as mbv2

    path = mbv2.export_mobilenetv2(tmp / "mobilenetv2.onnx")
    feeds = [{"input": x[None]} for x in mbv2.real_photos(n, seed=0)]
    calib = [{"input": x[None]} for x in mbv2.real_photos(n_cal + n, seed=1)[-n_cal:]]  # other crops/flips
    return {"path": path, "feeds": feeds, "calib": calib, "kind": "logits",
            # bias correction of the int8 weight rounding; then the most sensitive operands at int16
            # until the held-back calibration error is within the budget (docs/INTEGER.md)
            "shiftc_extra": {"percentile, --int-bias-correction weights": {"int_bias_correction": "weights"},
                             **{f"percentile, --int-bias-correction weights --accuracy-budget {b}": {
                                 "int_bias_correction": "weights", "accuracy_budget": b, "budget_best_effort": True}
                                for b in (0.1, 0.095, 0.09)}},
            "inputs": f"{n} skimage photo crops; {n_cal} other crops for calibration"}


def minilm(n: int, n_cal: int, tmp: Path) -> dict:
    from examples import minilm as ml

    path = ml.export_minilm(tmp / "minilm.onnx")
    sents = ml.sentences()
    return {"path": path, "feeds": ml.feeds(sents[n_cal:n_cal + n]), "calib": ml.feeds(sents[:n_cal]), "kind": "embedding",
            "shiftc": {"gelu": "lambda", "l2norm": "remove"},  # cosine is scale-free; the README's MiniLM setting
            # SmoothQuant into Q/K/V and FFN1; int16 operands of the attention output and FFN2 matmuls
            "shiftc_extra": {"mse, SmoothQuant 0.5, int16 attention-output/FFN2 inputs": {
                "calibration_method": "mse", "smooth_quant": 0.5, "int16_layers": r"output/dense|output_dense"}},
            "inputs": f"{n} GPL-3 sentences (seq 128); {n_cal} other sentences for calibration"}


def ppocr_cls(n: int, n_cal: int, tmp: Path) -> dict:
    from public_models import BY_KEY

    m = BY_KEY["ppocr-cls"]
    path = m.path()
    if path is None:
        raise FileNotFoundError(f"pip install {m.package}=={m.version}")
    every = m.feeds(n + n_cal)
    return {"path": path, "feeds": every[:n], "calib": every[n:], "kind": "probabilities", "pins": m.pins,
            "inputs": f"{n} scanned text lines (half upside down); {n_cal} other crops for calibration"}


MODELS = {"mobilenetv2": (mobilenetv2, 100, 8, 20), "minilm": (minilm, 100, 16, 20), "ppocr-cls": (ppocr_cls, 100, 8, 20)}


def score(model: dict, ref: np.ndarray, got: np.ndarray) -> dict:
    if model["kind"] == "embedding":
        return embedding_scores(ref, got)
    return classifier_scores(ref, got, probabilities=model["kind"] == "probabilities")


def run_model(key: str, quick: bool, tmp: Path, models: list, emit, only: str = "") -> None:
    """Append the model's entry to ``models`` and fill its rows, calling ``emit()`` after each one
    (so that a run stopped part way keeps what it measured)."""
    make, n, n_cal, n_quick = MODELS[key]
    model = {**make(n_quick if quick else n, n_cal, tmp), "tmp": tmp}
    ref = ort_runner(model["path"])(model["feeds"])
    entry = {"model": key, "inputs": model["inputs"], "samples": len(model["feeds"]), "calibration_samples": len(model["calib"]), "rows": []}
    if model["kind"] != "embedding":
        p = ref if model["kind"] == "probabilities" else softmax(ref)
        entry.update(confident_threshold=CONFIDENT, confident_inputs=int((p.max(-1) >= CONFIDENT).sum()))
    models.append(entry)
    for label, build in variants(model, quick):
        if only and not re.search(only, label):
            continue
        t0 = time.perf_counter()
        try:
            run = build()
            row = {"variant": label, **score(model, ref, run(model["feeds"])), **getattr(run, "extra", {})}
        except Exception as exc:  # a quantiser that fails on this model is a result, reported as such
            traceback.print_exc()
            row = {"variant": label, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(key, json.dumps(row), flush=True)
        entry["rows"].append(row)
        emit()


# ----------------------------------------------------------------------------- report
def provenance() -> dict:
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    pkgs = ("shiftc", "onnx", "onnxruntime", "nncf", "openvino", "apache-tvm", "torch", "numpy")
    versions = {}
    for p in pkgs:
        try:
            versions[p] = version(p)
        except Exception:
            versions[p] = None
    return {"git_revision": rev, "git_dirty": dirty, "python": platform.python_version(), "machine": platform.machine(),
            "versions": versions, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _fmt(v, pct=False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.0f} %" if pct else f"{v:.3f}" if abs(v) >= 0.001 else f"{v:.1e}"


def markdown(result: dict) -> str:
    lines = []
    for m in result["models"]:
        lines.append(f"**{m['model']}** ({m['inputs']})\n")
        emb = any("mean_cosine" in r for r in m["rows"])
        head = "| variant | mean cosine | min cosine |" if emb else (
            f"| variant | top-1 agreement | agreement, FP32 p ≥ {CONFIDENT} ({m.get('confident_inputs')} inputs) | mean KL |")
        lines += [head, "|---|---|---|" + ("" if emb else "---|")]
        for r in m["rows"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | fails: {r['error'][:120]} |" + (" |" if emb else " | |"))
            elif emb:
                lines.append(f"| {r['variant']} | {_fmt(r['mean_cosine'])} | {_fmt(r['min_cosine'])} |")
            else:
                lines.append(f"| {r['variant']} | {_fmt(r['top1_agreement'], True)} | {_fmt(r['confident_agreement'], True)} | {_fmt(r['mean_kl'])} |")
        lines.append("")
    return "\n".join(lines)


def _write(result: dict, json_path: Path, md_path: Path | None) -> str:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    if md_path:
        md_path.write_text(table)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 evaluation samples, shiftc minmax/percentile only")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {sorted(MODELS)}")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity.json")
    ap.add_argument("--md", type=Path, help="also write the markdown table here")
    ap.add_argument("--variants", default="", help="only the variants whose label matches this regex")
    ap.add_argument("--into", type=Path, help="add the rows measured here to this JSON's entries of the same models "
                    "(replacing rows of the same label; each added row records its own run)")
    ap.add_argument("--merge", type=Path, nargs="+", help="combine these JSON files (runs of other --models) into --json")
    args = ap.parse_args(argv)
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        result = {**parts[0], "models": [m for p in parts for m in p["models"]], "runs": [{k: v for k, v in p.items() if k != "models"} for p in parts]}
        print(_write(result, args.json, args.md))
        return
    result = {**provenance(), "quick": args.quick, "reference": "onnxruntime FP32 on the original model", "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            def emit():
                _write(result, args.json, args.md)
                if args.into:  # after every row, as --json
                    _into(args.into, result)

            run_model(key, args.quick, Path(tmp), result["models"], emit, args.variants)
    print(markdown(result))


def _into(path: Path, result: dict) -> None:
    """Put the rows of ``result`` into the same models' entries of the JSON at ``path``, each
    with this run's revision and date (the other rows keep their own run's)."""
    old = json.loads(path.read_text())
    run = {k: result[k] for k in ("git_revision", "git_dirty", "date_utc", "quick")}
    for m in result["models"]:
        entry = next(e for e in old["models"] if e["model"] == m["model"])
        for row in m["rows"]:
            entry["rows"] = [r for r in entry["rows"] if r["variant"] != row["variant"]] + [{**row, "run": run}]
    _write(old, path, None)


if __name__ == "__main__":
    main()
