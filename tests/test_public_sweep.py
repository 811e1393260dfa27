"""The public-model sweep: real ONNX models exported by other people (tests/public_models.py), each
compiled as shipped -- no folding by hand, only ``--input-shape`` pins -- and checked against
onnxruntime FP32 on real inputs (photos, scanned text, sentences) with the task's own metric.

FP32: every float output within 1e-4 * max(1, |ref|) of onnxruntime, integer outputs equal, and the
task metric unchanged (same top-1 class, same CTC-decoded text, embedding cosine, heat-map Pearson r
>= 0.99999, text-mask IoU >= 0.999). Integer-only (``--integer-only``, real calibration samples
disjoint from the evaluation samples): the models in INTEGER_BOUNDS (tests/public_metrics.py),
each within its stated bound of onnxruntime FP32. benchmarks/public_sweep.py measures the same
builds (and ``--float-fallback``) for the README's table.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest

from public_metrics import FP32_RTOL, FP32_TASK_BOUND, INTEGER_BOUNDS, class_scores, ctc_greedy, meets, task_score
from public_models import BY_KEY, MODELS, PublicModel

pytestmark = pytest.mark.slow
N_EVAL, N_CAL = 4, 4


@pytest.fixture(scope="session")
def sweep_reference():
    """``get(model)``: (path, evaluation feeds, calibration feeds, output names, onnxruntime FP32
    outputs on the evaluation feeds), once a session per model; skips when the package is missing,
    except under CI, where setup.sh must have installed it."""
    cache: dict = {}

    def get(m: PublicModel):
        if m.key not in cache:
            path = m.path()
            if path is None:
                missing = f"{m.package}=={m.version} is not installed (scripts/setup.sh installs it)"
                if os.environ.get("CI"):  # CI installs every sweep package: a missing one is a failure
                    pytest.fail(missing)
                pytest.skip(missing)
            feeds = m.feeds(N_EVAL + N_CAL)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            names = [o.name for o in sess.get_outputs()]
            ref = [dict(zip(names, sess.run(None, f))) for f in feeds[:N_EVAL]]
            cache[m.key] = (path, feeds[:N_EVAL], feeds[N_EVAL:], names, ref)
        return cache[m.key]

    return get


def _run(model, feeds: list[dict]) -> list[dict]:
    return [model.run(f) for f in feeds]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("key", [m.key for m in MODELS])
def test_fp32_matches_onnxruntime_as_shipped(key, compiled, sweep_reference):
    m = BY_KEY[key]
    path, feeds, _, names, ref = sweep_reference(m)
    got = _run(compiled(path, input_shapes=m.pins), feeds)
    for g, r in zip(got, ref):
        assert sorted(g) == sorted(names)
        for name in names:
            assert g[name].shape == r[name].shape, name
            if r[name].dtype.kind in "iub":
                np.testing.assert_array_equal(g[name], r[name], err_msg=name)
                continue
            err = np.abs(g[name].astype(np.float64) - r[name]) / np.maximum(1.0, np.abs(r[name]))
            assert err.max() <= FP32_RTOL, f"{key} output {name}: relative error {err.max():.3g} > {FP32_RTOL}"
    if m.metric != "maxabs":  # a difference bound is the check above
        score, bound = task_score(m.metric, got, ref, names), FP32_TASK_BOUND[m.metric.split(":")[0]]
        assert meets(m.metric, score, bound), f"{key}: {m.metric} {score:.6g} vs bound {bound}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("key", sorted(INTEGER_BOUNDS))
def test_integer_only_within_bound_of_onnxruntime(key, compiled, sweep_reference):
    m = BY_KEY[key]
    path, feeds, calibration, names, ref = sweep_reference(m)
    model = compiled(path, input_shapes=m.pins, integer_only=True, calibration=calibration)
    score = task_score(m.metric, _run(model, feeds), ref, names)
    assert meets(m.metric, score, INTEGER_BOUNDS[key]), f"{key} --integer-only: {m.metric} {score:.4g}, bound {INTEGER_BOUNDS[key]}"



def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    steps = [0, 5, 5, 0, 5, 3, 3, 0]
    probs = np.eye(6, dtype=np.float32)[steps][None]
    assert ctc_greedy(probs) == [(5, 5, 3)]
    other = np.eye(6, dtype=np.float32)[[0, 5, 0, 0, 5, 3, 3, 0]][None]
    assert task_score("ctc", [{"p": other}], [{"p": probs}], ["p"]) == 1.0  # same text, other alignment
    assert task_score("ctc", [{"p": np.eye(6, dtype=np.float32)[[5, 3]][None]}], [{"p": probs}], ["p"]) == 0.0


def test_readme_sweep_table_is_rendered_from_the_json_it_cites():
    from pathlib import Path

    from benchmarks import public_sweep

    root = Path(__file__).resolve().parents[1]
    cited, body = public_sweep.readme_block((root / "README.md").read_text())
    assert cited == public_sweep.JSON_NAME
    doc = public_sweep.load(root / cited)
    assert body == public_sweep.markdown(doc)
    assert {(r["model"], r["variant"]) for r in doc["records"]} <= {(m.key, v) for m in MODELS for v in public_sweep.VARIANTS}


def test_readme_shift_table_is_rendered_from_the_json_it_cites():
    from pathlib import Path

    from benchmarks import public_sweep

    root = Path(__file__).resolve().parents[1]
    block = public_sweep.readme_block((root / "README.md").read_text(), shift=True)
    if block is None:
        pytest.skip("the README has no public shift block yet (benchmarks/public_sweep.py --render prints it)")
    assert block[0] == public_sweep.JSON_NAME
    assert block[1] == public_sweep.shift_markdown(public_sweep.load(root / block[0]))


def test_class_scores_kl_and_confident_agreement():
    ref = [{"p": np.array([[0.5, 0.5]])}, {"p": np.array([[0.9, 0.1]])}, {"p": np.array([[0.2, 0.8]])}]
    got = [{"p": np.array([[0.25, 0.75]])}, {"p": np.array([[0.9, 0.1]])}, {"p": np.array([[0.6, 0.4]])}]
    s = class_scores(got, ref, ["p"])
    kl = [0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75), 0.0, 0.2 * np.log(0.2 / 0.6) + 0.8 * np.log(0.8 / 0.4)]
    assert s["mean_kl"] == pytest.approx(np.mean(kl))
    assert (s["confident_inputs"], s["confident_top1_agreement"]) == (2, 0.5)  # 0.9 kept, 0.8 flipped; 0.5 is not confident
    logits = [{"p": np.array([[2.0, 0.0, -1.0]])}]  # not a distribution: both sides through a softmax
    assert class_scores([{"p": logits[0]["p"] + 3.0}], logits, ["p"])["mean_kl"] == pytest.approx(0.0, abs=1e-12)
    assert class_scores([{"p": np.array([[0.0, 2.0, -1.0]])}], logits, ["p"])["mean_kl"] > 0.5


def test_shift_table_rows_from_records():
    from benchmarks import public_sweep

    ok = {"model": "ppocr-cls", "variant": "bits5", "metric": "top1", "ok": True, "internal": False, "score": 0.75,
          "mean_kl": 0.0123, "confident_inputs": 4, "confident_top1_agreement": 0.75, "bits_per_weight": 4.996,
          "artifact_bytes": 200_000, "onnx_bytes": 600_000, "compile_seconds": 41.2, "load_1m_before_after": [1.2, 2.0]}
    slow = {"model": "vit-focus", "variant": "shift4", "metric": "pearson", "ok": False, "internal": False,
            "timed_out": True, "error": "not finished in 600 s (stopped)"}
    broke = {"model": "ppocr-rec", "variant": "shift4", "metric": "ctc", "ok": False, "internal": True, "error": "TVMError: x|y"}
    rows = public_sweep.shift_markdown({"records": [ok, slow, broke]}).splitlines()
    assert len(rows) == 2 + len(MODELS) * len(public_sweep.SHIFT_TEXT)
    cells = {(r.split(" | ")[0][2:], r.split(" | ")[2]): r.split(" | ")[3:] for r in rows[2:]}
    assert cells[("ppocr-cls", public_sweep.SHIFT_TEXT["bits5"])] == ["0.75", "0.0123", "3/4", "5.00", "0.20 MB, 3.00x smaller", "41 (load 1.2/2.0) |"]
    assert cells[("vit-focus", public_sweep.SHIFT_TEXT["shift4"])][0] == "not finished in 600 s (stopped)"
    assert cells[("ppocr-rec", public_sweep.SHIFT_TEXT["shift4"])][0] == "**internal error**: `TVMError: x\\|y`"
    assert cells[("ppocr-cls", public_sweep.SHIFT_TEXT["shift4"])][0] == "not measured yet"


def test_heat_map_pearson_and_text_mask_iou():
    ref = [{"m": np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 1, 3, 4)}]
    assert task_score("pearson", [{"m": 2 * ref[0]["m"] + 1}], ref, ["m"]) == pytest.approx(1.0)
    assert task_score("pearson", [{"m": -ref[0]["m"]}], ref, ["m"]) == pytest.approx(-1.0)
    # text pixels are p > 0.3: the reference has 8 of them (4/11 .. 1); lowering 4 of those below
    # the threshold leaves an intersection of 4 in a union of 8
    got = ref[0]["m"].copy().reshape(-1)
    got[4:8] = 0.1
    assert task_score("iou", [{"m": got.reshape(1, 1, 3, 4)}], ref, ["m"]) == pytest.approx(0.5)
    empty = [{"m": np.zeros((1, 1, 3, 4), np.float32)}]
    assert task_score("iou", empty, empty, ["m"]) == 1.0  # no text in either: the same answer
