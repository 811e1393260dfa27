"""The public sweep's task metrics and bounds, shared by tests/test_public_sweep.py and
benchmarks/public_sweep.py (which writes the README's sweep table): each model's metric compares
shiftc's outputs with onnxruntime FP32's on the same real inputs."""

from __future__ import annotations

import numpy as np

from benchmarks.fidelity import mean_kl, softmax

FP32_RTOL = 1e-4  # every float output within FP32_RTOL * max(1, |ref|) of onnxruntime
FP32_TASK_BOUND = {"top1": 1.0, "ctc": 1.0, "cosine": 0.99999, "pearson": 0.99999, "iou": 0.999}
DB_THRESHOLD = 0.3  # PaddleOCR DBNet's text-pixel threshold on the probability map (det_db_thresh)
# --integer-only (no --float-fallback) task-metric bounds vs onnxruntime FP32, 4 calibration
# samples, x86; the measured values and onnxruntime's own static int8 are in the README table.
INTEGER_BOUNDS: dict[str, float] = {
    "doc-orientation": 1.0,  # top-1 agreement
    # ppocr-cls: tests/test_paddle_integer.py checks its integer build on 32 crops (>= 27/32 top-1)
    "minilm-l3": 0.92,  # mean cosine of the embedding
    "ppocr-rec": 1.0,  # CTC texts identical
    "yolox-det": 0.85,  # max |diff| of the raw head (|ref| <= 2.46)
    "vit-focus": 0.95,  # mean Pearson r of the heat map (bilinear Resize on the integers)
    "ppocr-det": 0.9,  # mean IoU of DBNet's text masks (probability > 0.3)
}
INTEGER_CHECKED_ELSEWHERE = {"ppocr-cls": "≥ 27/32 top-1 on 32 crops (tests/test_paddle_integer.py)"}
CONFIDENT = 0.5  # an input FP32 is confident about: its top class probability is above this


def ctc_greedy(probs: np.ndarray) -> list[tuple[int, ...]]:
    """PaddleOCR's CTC decode: argmax per time step, repeats merged, blank (class 0) dropped."""
    out = []
    for seq in probs.argmax(-1):
        keep = np.ones(len(seq), bool)
        keep[1:] = seq[1:] != seq[:-1]
        out.append(tuple(int(c) for c in seq[keep] if c != 0))
    return out


def _flat(outputs: list[dict], name: str) -> np.ndarray:
    return np.concatenate([o[name].reshape(1, -1) for o in outputs]).astype(np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def task_score(metric: str, got: list[dict], ref: list[dict], names: list[str]) -> float:
    """The task metric over the evaluation samples: top-1 / CTC-text agreement (fraction), mean
    cosine of one output, mean Pearson correlation of the first output (a saliency map), mean IoU
    of DBNet's text masks (first output > DB_THRESHOLD), or the largest absolute difference."""
    first = names[0]
    if metric.startswith("cosine:"):
        a, b = _flat(got, metric.split(":", 1)[1]), _flat(ref, metric.split(":", 1)[1])
        return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    if metric == "pearson":
        return float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(_flat(got, first), _flat(ref, first))]))
    if metric == "iou":
        return float(np.mean([_iou(a > DB_THRESHOLD, b > DB_THRESHOLD) for a, b in zip(_flat(got, first), _flat(ref, first))]))
    if metric == "maxabs":
        return max(float(np.abs(g[first].astype(np.float64) - r[first]).max()) for g, r in zip(got, ref))
    if metric == "top1":
        same = [np.array_equal(g[first].argmax(-1), r[first].argmax(-1)) for g, r in zip(got, ref)]
    elif metric == "ctc":
        same = [ctc_greedy(g[first]) == ctc_greedy(r[first]) for g, r in zip(got, ref)]
    else:
        raise ValueError(f"unknown metric {metric!r}")
    return float(np.mean(same))


def meets(metric: str, score: float, bound: float) -> bool:
    """Whether ``score`` is within ``bound``: at most it for a difference, at least it otherwise."""
    return score <= bound if metric == "maxabs" else score >= bound


def fp32_max_error(got: list[dict], ref: list[dict], names: list[str]) -> tuple[float, float]:
    """(largest |got - ref|, largest relative error |got - ref| / max(1, |ref|)) over the float
    outputs; integer outputs must be equal (inf otherwise)."""
    worst, rel = 0.0, 0.0
    for g, r in zip(got, ref):
        for n in names:
            if r[n].dtype.kind in "iub":
                if not np.array_equal(g[n], r[n]):
                    return float("inf"), float("inf")
                continue
            d = np.abs(g[n].astype(np.float64) - r[n])
            worst, rel = max(worst, float(d.max())), max(rel, float((d / np.maximum(1.0, np.abs(r[n]))).max()))
    return worst, rel


def _is_distribution(x: np.ndarray) -> bool:
    return bool((x >= 0).all() and np.allclose(x.sum(-1), 1.0, atol=1e-3))


def class_scores(got: list[dict], ref: list[dict], names: list[str]) -> dict:
    """A classifier's first output as class distributions: mean KL(onnxruntime FP32 || shiftc)
    over the evaluation samples, and top-1 agreement on the samples FP32 is confident about (top
    probability > CONFIDENT) with their count (agreement None when there is none). The output is
    taken as it is when every onnxruntime row already is a distribution (the sweep's softmax heads),
    through a softmax otherwise; shiftc's rows go the same way as onnxruntime's."""
    a, b = np.concatenate([r[names[0]] for r in ref]), np.concatenate([g[names[0]] for g in got])
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    if not _is_distribution(a):
        a, b = softmax(a), softmax(b)
    sure = a.max(-1) > CONFIDENT
    same = a.argmax(-1) == b.argmax(-1)
    return {"mean_kl": mean_kl(a, np.clip(b, 0.0, None)), "confident_inputs": int(sure.sum()),
            "confident_top1_agreement": float(same[sure].mean()) if sure.any() else None}
