"""Layer-wise reconstruction of shift codes (passes/shift_reconstruct.py, ``--shift-reconstruct``)
on the real Fashion-MNIST CNN with real training images: it lowers every layer's output error
against nearest codes on held-back images, and the compiled model runs exactly the reconstructed
codes, alpha and bias."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples import fashion_mnist
from shiftc import frontend
from shiftc.core.options import PassOptions
from shiftc.core.report import Report
from shiftc.core.stage import StageContext
from shiftc.passes import canonicalize, fold_norm
from shiftc.passes import shift as S
from shiftc.passes import shift_bias as SB
from shiftc.passes import shift_measure as M
from shiftc.passes import shift_reconstruct as R
from shiftc.reference import shift as ref

CNN = Path(__file__).resolve().parents[1] / "examples" / "models" / "cnn.onnx"
FAST_ITERS = 80  # Adam steps a layer in these tests (the default is more)


@pytest.mark.parametrize("bits,terms,zero_free", [(4, 1, True), (3, 1, False), (3, 2, True), (4, 2, False)])
def test_unit_table_is_every_value_of_the_format(bits, terms, zero_free):
    values, codes = R.unit_table(bits, terms, zero_free)
    assert np.all(np.diff(values) > 0)
    decoded = ref.decode_multi(codes.T[:, :, None].copy(), np.ones(len(values), np.float32))[:, 0]
    assert np.array_equal(decoded, values.astype(np.float32))
    single = np.unique(ref.decode_pot(np.arange(-127, 128, dtype=np.int8)[np.abs(np.arange(-127, 128)) <= ref.p_limit(bits, zero_free) + 1], np.ones(1, np.float32), axis=-1))
    if zero_free:
        single = single[single != 0]
    if terms == 1:
        assert np.array_equal(values.astype(np.float32), single)
    u = np.random.default_rng(0).normal(0, 0.6, 1000)
    lo, hi, frac = R.brackets(u, values)
    inside = (u >= values[0]) & (u <= values[-1])
    assert np.all(values[lo][inside] <= u[inside]) and np.all(u[inside] <= values[hi][inside]) and np.all(hi - lo <= 1)
    assert np.allclose((values[lo] + frac * (values[hi] - values[lo]))[inside], u[inside])


def _cnn():
    loaded = frontend.load(str(CNN))
    mod = frontend.to_relax(loaded)
    report = Report()
    for stage in (canonicalize.STAGE, fold_norm.STAGE):
        mod = stage.apply(mod, StageContext(PassOptions(), [], loaded, report.stage(stage.name)))
    import tvm

    return tvm.relax.transform.FoldConstant()(mod)


def _images(start, n):
    train, _ = fashion_mnist.load("train")
    return [{"input": v[None]} for v in fashion_mnist.preprocess(train[start : start + n])]


@pytest.mark.timeout(900)
def test_reconstruction_lowers_every_layer_error_on_held_back_images(monkeypatch):
    """4-bit single-term PoT: fitted on 8 training images, each layer's output error (epilogue
    included, inputs from the reconstructed model) is measured on 16 other images against nearest
    codes with the empirical bias correction, each layer given the same (reconstructed) inputs."""
    monkeypatch.setattr(R, "ITERS", FAST_ITERS)
    mod = _cnn()
    layers = S.find_layers(mod)
    plan = {layer.name: S.ShiftConfig(4) for layer in layers}
    rec = R.reconstruct(mod, layers, plan, ["input"], _images(0, 8))
    assert rec.info["model_runs"] >= 2 and len(rec.info["layers"]) == len(layers)
    held = _images(1000, 16)
    corr = [np.zeros(SB._correction_shape(layer), np.float32) for layer in layers]
    recw = ([S.decoded_weight(l, *rec.encoded[l.name]) for l in layers], [rec.bias[l.name].reshape(c.shape) for l, c in zip(layers, corr)])
    fit_in, held_in = (R.LayerInputs(mod, layers, ["input"], s) for s in (_images(0, 8), held))
    fit_f, fit_q = fit_in.capture([layer.weight for layer in layers], corr), fit_in.capture(*recw)
    xf, xq = held_in.capture([layer.weight for layer in layers], corr), held_in.capture(*recw)
    import torch

    from shiftc.passes import shift_adaround as A

    better = 0
    for i, layer in enumerate(layers):
        codes0, alpha0 = S.encode(layer, plan[layer.name])
        w0 = torch.from_numpy(A._oi(layer, codes0, alpha0))
        d0 = A.LayerData(torch, layer, [s[i] for s in fit_q], [s[i] for s in fit_f]).mean_shift(w0)  # bias correction fitted on the same 8 images
        data = A.LayerData(torch, layer, [s[i] for s in xq], [s[i] for s in xf])
        nearest = data.error(w0, d0)
        got = data.error(torch.from_numpy(A._oi(layer, *rec.encoded[layer.name])), torch.from_numpy(rec.bias[layer.name]))
        better += got < nearest
        assert got < 1.1 * nearest, (layer.name, got, nearest)
    assert better >= len(layers) - 1, better
    # the whole model on the held-back images: against nearest codes with the sequential bias correction
    model = SB.ShiftedModel(mod, layers, ["input"], held)
    ref_out = model.outputs([layer.weight for layer in layers], model.zero_corrections(), range(len(held)))
    near = {l.name: S.decoded_weight(l, *S.encode(l, plan[l.name])) for l in layers}
    bias0, _ = SB.corrections(SB.ShiftedModel(mod, layers, ["input"], _images(0, 8)), near, range(8))
    err_near = M.rel_l2(ref_out, model.outputs([near[l.name] for l in layers], SB.as_corrections(model, bias0), range(len(held))))
    err_rec = M.rel_l2(ref_out, model.outputs(recw[0], SB.as_corrections(model, rec.bias), range(len(held))))
    assert err_rec < 0.8 * err_near, (err_rec, err_near)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compiled_model_runs_the_reconstructed_codes(tmp_path, monkeypatch):
    """``--shift-reconstruct``: the built shift kernels compute the model with the reported codes,
    alpha and bias (the FP32 model with those decoded weights and biases, to float rounding), and
    agree with FP32 on more test images than nearest codes do."""
    import shiftc

    monkeypatch.setattr(R, "ITERS", FAST_ITERS)
    calib = _images(0, 8)
    cm = shiftc.compile(str(CNN), "x86", calibration=calib, shift_bits=4, shift_reconstruct=True, output=tmp_path / "r")
    stage = next(s for s in cm.report.stages if s.name == "shift")
    info = stage.summary["reconstruction"]
    assert info["mean_output_rel_l2"] < info["mean_output_rel_l2_nearest"]
    assert any(n.startswith("reconstruction:") for n in stage.notes)
    mod = _cnn()
    layers = S.find_layers(mod)
    rec = R.reconstruct(mod, layers, {l.name: S.ShiftConfig(4) for l in layers}, ["input"], calib)  # deterministic: the same fit
    test, labels = fashion_mnist.load("test")
    x = fashion_mnist.preprocess(test[:200])
    model = SB.ShiftedModel(mod, layers, ["input"], [{"input": v[None]} for v in x])
    want = model.outputs([S.decoded_weight(l, *rec.encoded[l.name]) for l in layers], SB.as_corrections(model, rec.bias), range(len(x)))
    fp32 = model.outputs([l.weight for l in layers], model.zero_corrections(), range(len(x)))
    got = [cm.run(v[None])["logits"] for v in x]
    for g, w in zip(got, want):
        assert np.allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())
    assert np.mean([g.argmax() == f.argmax() for g, f in zip(got, fp32)]) > 0.9
