"""PaddleOCR's text-orientation classifier (MobileNetV3-style: hard-swish, squeeze-excite gates
``x * HardSigmoid(...)``, clips with non-ReLU6 bounds), as rapidocr-onnxruntime 1.4.4 ships it,
compiled ``--integer-only`` with no float op, against onnxruntime FP32 on real text crops.

Inputs: strips of skimage's ``text`` and ``page`` images (random 4:1 windows resized to 48 x 192,
half of them turned by 180 degrees, normalised as PaddleOCR does, ``(x - 0.5) / 0.5``); 8 for
calibration, 32 others for evaluation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import shiftc
from conftest import ort_run
from test_frontend_simplify import _rapidocr_model

pytestmark = pytest.mark.slow


def text_strips(n: int, seed: int) -> list[np.ndarray]:
    from skimage import data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    pages = [data.text(), data.page()]
    out = []
    for i in range(n):
        img = pages[i % 2].astype(np.float32) / 255.0
        H, W = img.shape
        h = int(rng.integers(24, min(H, W // 4) + 1))
        top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - 4 * h + 1))
        crop = resize(img[top:top + h, left:left + 4 * h], (48, 192), anti_aliasing=True).astype(np.float32)
        if rng.integers(2):
            crop = crop[::-1, ::-1]
        out.append(np.repeat(((crop - 0.5) / 0.5)[None, None], 3, axis=1).copy())
    return out


@pytest.mark.timeout(900)  # the integer build takes 2-5 min on a loaded 2-core machine
def test_paddle_cls_integer_only_agrees_with_onnxruntime():
    path = _rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    cal, xs = text_strips(8, 1), text_strips(32, 2)
    compiled = shiftc.compile(str(path), "x86", input_shapes={"x": (1, 3, 48, 192)}, calibration=[{"x": x} for x in cal],
                              integer_only=True)
    stage = next(s for s in compiled.report.stages if s.name == "integerize")
    assert stage.summary["float_ops"] == 0
    model = onnx.load(str(path))
    ref = np.concatenate([ort_run(model, {"x": x})[0] for x in xs])
    got = []
    for x in xs:
        out = compiled.run({"x": x})
        got.append(np.asarray(out[next(iter(out))] if isinstance(out, dict) else out[0]))
    got = np.concatenate(got)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    kl = float(np.mean(np.sum(ref * (np.log(ref + 1e-12) - np.log(got + 1e-12)), axis=1)))
    # measured 2026-12-07 (x86, minmax on the 8 crops): agreement 29/32, mean KL 0.027, mean
    # |p - p_fp32| 0.071; onnxruntime quantize_static (QDQ, per-channel, MinMax, u8 or s8
    # activations) on the same crops: 30/32, KL 0.023. FP32's own top-1 probabilities on these
    # crops are 0.52-0.98 (a two-class model, unsure on many strips), so a few flips are expected;
    # the bounds leave room for two more flips and about twice the measured KL.
    assert agree >= 27 / 32, f"top-1 agreement {agree:.3f}"
    assert kl <= 0.06, f"mean KL {kl:.4f}"
