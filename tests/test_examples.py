"""Real-model checks for examples/: data, committed Fashion-MNIST ONNX models, MBV2, MiniLM."""
import json
import os

import numpy as np
import onnx
import pytest
import torch

from examples import evaluate, fashion_mnist as fm

MODELS = os.path.join(os.path.dirname(__file__), "..", "examples", "models")
# Floors for FP32 onnxruntime quality on the full real test sets (recorded values: RESULTS.md).
THRESHOLDS = {"cnn": 0.90, "vit": 0.85, "unvit": 0.85, "segmenter": 0.55}


def model_path(name):
    return os.path.join(MODELS, f"{name}.onnx")


def test_fashion_mnist_shapes_and_labels():
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = fm.load(split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and labels.min() == 0 and labels.max() == 9
        assert np.bincount(labels).tolist() == [n // 10] * 10
    x = fm.preprocess(images[:100])
    assert x.shape == (100, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x, (images[:100, None] / 255.0 - fm.MEAN) / fm.STD, atol=1e-6)


def test_mosaics_masks_follow_items():
    images, labels = fm.load("test")
    m, masks = fm.mosaics(images, labels, 16, seed=3)
    assert m.shape == masks.shape == (16, 56, 56)
    assert masks.min() >= 0 and masks.max() <= 10
    assert np.array_equal(masks == 0, m < fm.MASK_THRESHOLD)
    again = fm.mosaics(images, labels, 16, seed=3)
    assert np.array_equal(again[0], m) and np.array_equal(again[1], masks)
    # each quadrant holds exactly one item class
    for q in (masks[:, :28, :28], masks[:, :28, 28:], masks[:, 28:, :28], masks[:, 28:, 28:]):
        for mask in q:
            assert len(set(np.unique(mask)) - {0}) == 1


@pytest.mark.parametrize("name", ["cnn", "vit", "unvit", "segmenter"])
def test_sample_npz_matches_model(name):
    sample = np.load(os.path.join(MODELS, f"{name}_sample.npz"))
    np.testing.assert_array_equal(sample["input"], fm.preprocess(sample["images"]))
    out = evaluate.onnx_predict(model_path(name), sample["input"])
    agree = (out.argmax(1) == sample["y"]).mean()
    assert agree >= 0.6, f"{name}: only {agree:.2f} of the sample predicted right"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "vit", "unvit"])
def test_classifier_accuracy_on_full_test_set(name):
    images, labels = fm.load("test")
    acc = evaluate.onnx_accuracy(model_path(name), fm.preprocess(images), labels)
    recorded = json.load(open(os.path.join(MODELS, f"{name}_metrics.json")))["value"]
    assert acc >= THRESHOLDS[name]
    assert abs(acc - recorded) < 1e-3, f"{name}: measured {acc:.4f}, recorded {recorded}"


@pytest.mark.slow
def test_segmenter_miou_on_mosaic_test_set():
    from examples.train import seg_test_set
    images, masks = seg_test_set()
    miou = evaluate.onnx_miou(model_path("segmenter"), fm.preprocess(images), masks,
                              fm.NUM_SEG_CLASSES)
    assert miou >= THRESHOLDS["segmenter"]


def test_unvit_norms_are_constant_mul_add_before_matmul():
    graph = onnx.load(model_path("unvit")).graph
    consts = {i.name for i in graph.initializer}
    consts |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    producer = {o: n for n in graph.node for o in n.output}
    assert not any(n.op_type == "LayerNormalization" for n in graph.node)
    norms = 0
    for n in graph.node:
        if n.op_type != "MatMul" or n.input[0] not in producer:
            continue
        add = producer[n.input[0]]
        mul = producer.get(add.input[0]) if add.op_type == "Add" else None
        if mul is not None and mul.op_type == "Mul" and add.input[1] in consts \
                and mul.input[1] in consts:
            norms += 1
    assert norms == 8  # norm1 (-> qkv) and norm2 (-> MLP) in each of the 4 blocks


def test_segmenter_graph_has_l2_normalised_masks_and_bilinear_resize():
    ops = [n for n in onnx.load(model_path("segmenter")).graph.node]
    assert sum(n.op_type == "ReduceL2" for n in ops) == 2
    resize = [n for n in ops if n.op_type == "Resize"]
    assert len(resize) == 1
    assert any(a.name == "mode" and a.s == b"linear" for a in resize[0].attribute)


def test_mobilenetv2_export_matches_torch_on_real_photo(mbv2_onnx):  # mbv2_onnx: conftest.py
    from examples.mobilenetv2 import CAT_CLASSES, pretrained, real_photos
    x = real_photos(1, seed=0)  # centre crop of skimage's chelsea (a tabby cat)
    got = evaluate.onnx_predict(mbv2_onnx, x)
    with torch.no_grad():
        want = pretrained()(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert int(got.argmax()) in CAT_CLASSES


def test_real_photos_are_varied_and_normalised():
    from examples.mobilenetv2 import PHOTOS, real_photos
    x = real_photos(104, seed=0)
    assert x.shape == (104, 3, 224, 224) and x.dtype == np.float32
    assert len({v.tobytes() for v in x}) == 104
    assert -3 < x.mean() < 3 and x.min() >= -2.2 and x.max() <= 2.7
    assert len(PHOTOS) >= 10


@pytest.mark.slow
def test_minilm_export_matches_torch(tmp_path, minilm_model):
    from examples.minilm import INPUT_NAMES, export_minilm, sentences, tokenize
    model = minilm_model()  # load_model(), shared with test_norm_real
    path = export_minilm(tmp_path / "minilm.onnx", model)
    texts = sentences()
    assert len(texts) >= 100
    feeds = tokenize(texts[1:2])
    assert all(feeds[k].shape == (1, 128) and feeds[k].dtype == np.int64 for k in INPUT_NAMES)
    got = evaluate.session(path).run(None, feeds)[0]
    with torch.no_grad():
        want = model(*[torch.from_numpy(feeds[k]) for k in INPUT_NAMES]).numpy()
    assert got.shape == (1, 384)
    assert np.abs(got - want).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
