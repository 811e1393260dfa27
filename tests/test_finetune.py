"""shiftc finetune: shift re-parameterisation on the reference grid, a short real fine-tune whose
export compiles losslessly, resume, and the error paths (docs/FINETUNE.md)."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

if importlib.util.find_spec("onnx2torch") is None:  # scripts/setup.sh installs it (setup.cfg's finetune extra)
    if os.environ.get("CI"):
        pytest.fail("onnx2torch is not installed: scripts/setup.sh must install it", pytrace=False)
    pytest.skip("onnx2torch is not installed", allow_module_level=True)

import shiftc  # noqa: E402
from shiftc.cli import main  # noqa: E402
from shiftc.finetune import convert, shift_param as P, train  # noqa: E402
from shiftc.reference import shift as ref, shift_record as R  # noqa: E402
from helpers import json_schema  # noqa: E402

CNN = Path(__file__).resolve().parents[1] / "examples" / "models" / "cnn.onnx"


def _fashion(n, seed=0):
    from examples import fashion_mnist as fm

    images, labels = fm.load("train")
    idx = np.random.default_rng(seed).choice(len(images), n, replace=False)
    return fm.preprocess(images[idx]), labels[idx]


@pytest.mark.parametrize("terms,zero_free,form", [(1, True, "dense"), (2, True, "dense"), (1, False, "dense"), (3, False, "dense"), (1, True, "ps"), (1, False, "ps")])
def test_shift_param_is_the_reference_grid(terms, zero_free, form):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    spec = P.ShiftSpec(4, terms, zero_free, form)
    assert P.shiftify(net, spec) == ["0", "3"]
    x = torch.randn(4, 3, 8, 8)
    y = net(x)
    y.square().sum().backward()
    for mod in P.shift_modules(net).values():
        par = mod.parametrizations.weight
        assert par[0].alpha.grad is not None and par[0].alpha.grad.abs().sum() > 0
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in par.named_parameters() if n.startswith("original"))
        codes, alpha, _ = P.codes_of(mod)
        if form == "dense":  # the torch codes are the reference's nearest codes for the same alpha
            w = par.original.detach().numpy().reshape(len(alpha), -1)
            want = ref._greedy_multi(w.astype(np.float64), alpha.astype(np.float64), terms, spec.pmax, zero_free)
            np.testing.assert_array_equal(codes.reshape(terms, len(alpha), -1), want)
        ref.pack_codes(codes, 4, zero_free)  # every code is a legal 4-bit code
    baked = P.bake(net)
    assert set(baked) == {"0", "3"}
    torch.testing.assert_close(net(x), y, rtol=0, atol=0)  # baking changes nothing
    for name, (codes, alpha, _) in baked.items():
        np.testing.assert_array_equal(dict(net.named_modules())[name].weight.detach().numpy(), P.decoded(codes, alpha))


def test_torch_nearest_codes_ties_and_zero_match_reference():
    a = np.array([[0.0, 0.75, -0.75, 0.375, 1e-6, 3.0, -0.0, 0.5 * 2.0**-7, 0.49 * 2.0**-6]], dtype=np.float32)
    for zero_free, pmax in ((True, 7), (False, 6)):
        got = P.nearest_codes(torch.from_numpy(a), pmax, zero_free).numpy().astype(np.int8)
        np.testing.assert_array_equal(got, ref.nearest_codes(a, np.ones(1), pmax, zero_free))


def test_record_round_trip():
    rng = np.random.default_rng(0)
    codes, alpha = ref.encode_multi(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), 2, 4, False)
    back = R.loads(R.dumps([R.CodedWeight("w", codes, alpha, 4, False)], note=1))
    np.testing.assert_array_equal(back[0].codes, codes)
    np.testing.assert_array_equal(back[0].weight(), ref.decode_multi(codes, alpha))
    with pytest.raises(ValueError, match="version"):
        R.loads(json.dumps({"version": 99, "layers": []}))


@pytest.mark.timeout(600)  # one shift compile of the CNN: ~30 s alone, minutes on a loaded machine
def test_finetune_cnn_loss_falls_and_compiles_losslessly(tmp_path):
    """A few real steps on the Fashion-MNIST CNN; the export compiles to the fine-tuned outputs."""
    x, y = _fashion(64)
    res = shiftc.finetune(CNN, x, y, tmp_path / "ft.onnx", bits=4, steps=16, batch_size=16, lr=1e-3,
                          keep_multiply=1, checkpoint=tmp_path / "ft.ckpt")
    loss = res.history.loss
    assert np.mean(loss[-4:]) < 0.8 * np.mean(loss[:4]), loss
    assert len(res.shifted) == 6 and len(res.multiply) == 1
    proto = onnx.load(tmp_path / "ft.onnx")
    coded = R.from_metadata({p.key: p.value for p in proto.metadata_props})
    assert len(coded) == 6
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for c in coded:  # the ONNX weights lie exactly on the recorded grid
        w = inits[c.name]
        np.testing.assert_array_equal(w if w.shape == c.weight().shape else w.T, c.weight())
    tuned = convert.to_torch(proto)
    xt = _fashion(8, seed=1)[0]
    want = tuned(torch.from_numpy(xt)).detach().numpy()
    cm = shiftc.compile(tmp_path / "ft.onnx", target="x86", shift_bits=4, output=tmp_path / "art")
    got = np.concatenate([next(iter(cm.run(xt[i:i + 1]).values())) for i in range(len(xt))])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    stage = next(s for s in cm.meta["report"]["stages"] if s["name"] == "shift")
    assert any("6 of 6 recorded layer(s) matched bit for bit" in n for n in stage["notes"]), stage["notes"]
    rows = [r for r in stage["rows"] if r["bits"] is not None]
    assert len(rows) == 6 and all(r["weight_rel_l2"] == 0.0 and not r["bias_corrected"] for r in rows)
    assert sum(r["bits"] is None for r in stage["rows"]) == 1  # the layer kept as multiply


def test_resume_continues_the_same_run(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    x = np.random.default_rng(0).normal(size=(32, 1, 4, 4)).astype(np.float32)
    cfg = train.TrainConfig(steps=6, batch_size=8, lr=1e-2, checkpoint_every=2)

    def run(stop_at=None, resume=False):
        student = __import__("copy").deepcopy(net)
        P.shiftify(student, P.ShiftSpec(4))

        def cb(e):
            if e["step"] == stop_at:
                raise KeyboardInterrupt

        try:
            return train.fit(student, net, x, None, cfg, cb, tmp_path / "c.ckpt", resume)
        except KeyboardInterrupt:
            return None

    full = run()
    (tmp_path / "c.ckpt").unlink()
    assert run(stop_at=3) is None  # checkpoint at step 2
    resumed = run(resume=True)
    assert resumed.resumed_at == 2
    np.testing.assert_allclose(resumed.loss, full.loss, rtol=1e-6)


def test_torch_module_with_batchnorm_exports_on_grid(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32)
    res = shiftc.finetune(net, x, steps=3, batch_size=8, lr=1e-3)
    coded = R.from_metadata({p.key: p.value for p in res.model.metadata_props})
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in res.model.graph.initializer}
    assert len(coded) == 2
    for c in coded:
        w = inits[c.name]
        np.testing.assert_array_equal(w if w.shape == c.weight().shape else w.T, c.weight())


def _cli(*args):
    return CliRunner().invoke(main, ["finetune", *map(str, args)])


def _one_line_error(res, code, text):
    assert res.exit_code == code, res.output
    assert text in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_cli_bad_data_file(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_text("not numpy")
    _one_line_error(_cli(CNN, "-o", tmp_path / "o.onnx", "--data", bad), 2, "not a readable .npy/.npz")
    assert not (tmp_path / "o.onnx").exists()


def test_cli_data_shape_and_labels_mismatch(tmp_path):
    x, y = _fashion(8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "wrong.npy", np.zeros((8, 1, 14, 14), np.float32))
    np.save(tmp_path / "y.npy", y[:5])
    _one_line_error(_cli(CNN, "-o", tmp_path / "o.onnx", "--data", tmp_path / "wrong.npy"), 2, "the model input needs (1, 28, 28)")
    _one_line_error(_cli(CNN, "-o", tmp_path / "o.onnx", "--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy"), 2,
                    "does not match the 8 inputs")


def test_cli_names_ops_onnx2torch_cannot_convert(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Mish", ["x"], ["m"]), helper.make_node("Cosh", ["m"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    _one_line_error(_cli(tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--data", tmp_path / "x.npy"), 3,
                    "onnx2torch cannot convert op(s): Cosh, Mish")


def test_cli_resume_without_checkpoint(tmp_path):
    np.save(tmp_path / "x.npy", _fashion(4)[0])
    _one_line_error(_cli(CNN, "-o", tmp_path / "o.onnx", "--data", tmp_path / "x.npy", "--steps", 1, "--resume"), 2,
                    "--resume: no checkpoint")


def test_cli_json_follows_its_schema(tmp_path):
    """Two real steps through the command line; its --json document validates (docs/schema)."""
    x, y = _fashion(8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    res = _cli(CNN, "-o", tmp_path / "o.onnx", "--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
               "--steps", 2, "--batch-size", 4, "--json")
    assert res.exit_code == 0, res.output
    doc = json_schema.validate("finetune", json.loads(res.stdout))
    assert doc["steps"] == 2 and len(doc["shifted"]) == 7 and (tmp_path / "o.onnx").exists()
