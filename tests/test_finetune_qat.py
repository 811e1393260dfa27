"""Integer-only QAT (``shiftc finetune --integer-only``, docs/FINETUNE.md): a few QAT steps on the
Fashion-MNIST CNN; ``shiftc compile --integer-only`` of the export reproduces the fine-tuned model's
fake-quant (integer) forward bit for bit on held-out images, with thresholds read from the model;
the integer ops of the simulation equal the reference's; bad models and records fail in one line."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

if importlib.util.find_spec("onnx2torch") is None:  # scripts/setup.sh installs it (setup.cfg's finetune extra)
    if os.environ.get("CI"):
        pytest.fail("onnx2torch is not installed: scripts/setup.sh must install it", pytrace=False)
    pytest.skip("onnx2torch is not installed", allow_module_level=True)

import shiftc  # noqa: E402
from shiftc import calibrate  # noqa: E402
from shiftc.cli import main  # noqa: E402
from shiftc.core.errors import InputError  # noqa: E402
from shiftc.finetune import qat_ops as Q  # noqa: E402
from shiftc.reference import shift as ref  # noqa: E402
from shiftc.passes.integerize.scales import weight_codes  # noqa: E402
from shiftc.reference.constant_add import add_constant_int  # noqa: E402
from shiftc.reference.linear import conv2d_int  # noqa: E402

CNN = Path(__file__).resolve().parents[1] / "examples" / "models" / "cnn.onnx"


def _fashion(split, n, seed=0):
    from examples import fashion_mnist as fm

    images, labels = fm.load(split)
    idx = np.random.default_rng(seed).choice(len(images), n, replace=False)
    return fm.preprocess(images[idx]), labels[idx]


@pytest.fixture(scope="module")
def qat_model(tmp_path_factory):
    """A 4-bit shift CNN (one layer, the most sensitive, kept as an int8 multiplication) after 6
    integer-only QAT steps on 48 training images."""
    out = tmp_path_factory.mktemp("qat") / "qat.onnx"
    x, y = _fashion("train", 48)
    res = shiftc.finetune(CNN, x, y, out, bits=4, steps=6, batch_size=16, lr=1e-3, keep_multiply=1,
                         integer_only=True)
    return res, out


@pytest.mark.timeout(900)  # one integer-only shift compile of the CNN: ~30 s alone, minutes on a loaded machine
def test_compile_reproduces_the_integer_fake_quant_bit_for_bit(qat_model, tmp_path):
    res, path = qat_model
    assert len(res.history.loss) == 6 and np.all(np.isfinite(res.history.loss))
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    rec = json.loads(props[calibrate.RECORD_KEY])
    assert rec["method"] == "percentile" and rec["samples"] == 48 and "input" in rec["thresholds"]
    xt = _fashion("test", 6, seed=1)[0]  # held out: the test split, never seen by calibration or training
    with torch.no_grad():
        want = res.program(torch.from_numpy(xt)).numpy()
    # no calibration data: the compile's own (synthetic) samples must not change the thresholds
    cm = shiftc.compile(path, target="x86", shift_bits=4, integer_only=True, output=tmp_path / "art")
    got = np.concatenate([next(iter(cm.run(xt[i:i + 1]).values())) for i in range(len(xt))])
    assert got.dtype == want.dtype == np.float32
    assert np.array_equal(got, want), np.abs(got - want).max()
    stage = next(s for s in cm.meta["report"]["stages"] if s["name"] == "integerize")
    assert stage["summary"]["calibration"].startswith("recorded in the model: percentile on 48 sample(s)")
    assert stage["summary"]["float_ops"] == 0
    shift = next(s for s in cm.meta["report"]["stages"] if s["name"] == "shift")
    assert any("6 of 6 recorded layer(s) matched bit for bit" in n for n in shift["notes"]), shift["notes"]
    ops = stage["summary"]["integer_ops"]
    assert ops.get("shift_conv2d_int", 0) + ops.get("shift_matmul_int", 0) == 6, ops
    assert ops.get("conv2d", 0) + ops.get("matmul", 0) == 1, ops


def _residual_model(path):
    """Conv-ReLU, Conv, residual Add, Clip(0, 6), MaxPool, GlobalAveragePool, Flatten, Gemm."""
    rng = np.random.default_rng(0)
    arrays = {"w1": rng.normal(0, 0.4, (4, 1, 3, 3)), "b1": rng.normal(0, 0.1, 4), "w2": rng.normal(0, 0.3, (4, 4, 3, 3)),
              "b2": rng.normal(0, 0.1, 4), "wg": rng.normal(0, 0.5, (3, 4)), "bg": rng.normal(0, 0.1, 3),
              "lo": np.zeros(()), "hi": np.full((), 6.0)}
    inits = [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in arrays.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Add", ["c2", "r1"], ["s"], name="residual"),
             helper.make_node("Clip", ["s", "lo", "hi"], ["r2"], name="relu6"),
             helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1, name="head")]
    g = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.timeout(600)
def test_residual_add_and_relu6_compile_bit_for_bit(tmp_path):
    """Add (two activations, int16 add_int) and Clip-as-ReLU6 in the integer program too."""
    rng = np.random.default_rng(2)
    model = _residual_model(tmp_path / "res.onnx")
    res = shiftc.finetune(model, rng.normal(0, 1, (32, 1, 8, 8)).astype(np.float32), None, tmp_path / "q.onnx", bits=4,
                          steps=3, batch_size=8, lr=1e-3, integer_only=True)
    xt = rng.normal(0, 1, (5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = res.program(torch.from_numpy(xt)).numpy()
    cm = shiftc.compile(res.path, target="x86", shift_bits=4, integer_only=True, output=tmp_path / "art")
    got = np.concatenate([next(iter(cm.run(xt[i:i + 1]).values())) for i in range(len(xt))])
    assert np.array_equal(got, want), np.abs(got - want).max()
    stage = next(s for s in cm.meta["report"]["stages"] if s["name"] == "integerize")
    assert stage["summary"]["integer_ops"].get("add_int") == 1 and stage["summary"]["float_ops"] == 0
    assert not any("does not reproduce the fine-tuned model" in n for n in stage["notes"]), stage["notes"]
    # options the fine-tuning did not simulate: the report says the build is not the fine-tuned model
    other = shiftc.compile(res.path, target="x86", shift_bits=4, integer_only=True, unsigned_activations=False,
                           output=tmp_path / "signed")
    notes = next(s for s in other.meta["report"]["stages"] if s["name"] == "integerize")["notes"]
    assert any(n.startswith("warning: integer-only fine-tuning simulated the default options, not --no-unsigned-activations") and "bit for bit" in n for n in notes), notes


def test_simulated_shift_layer_is_the_reference():
    """``qat_ops.shift_layer`` (float64 sums of integers) equals ``reference.shift_conv2d_int`` /
    ``shift_matmul_int`` plus ``add_constant_int`` on random codes, biases and inputs."""
    rng = np.random.default_rng(0)
    x = Q.IntV(rng.integers(-128, 128, (2, 8, 6, 6)).astype(np.int64), 0.02, 8)
    codes = rng.integers(-8, 9, (1, 4, 4, 3, 3)).astype(np.int8)  # with-zero codes, groups 2
    codes[codes == 0] = 1
    alpha = rng.uniform(0.01, 0.5, 4).astype(np.float32)
    bias = rng.normal(0, 3, 4).astype(np.float32)
    conv = dict(padding=(1, 0, 1, 2), stride=[1, 2], dilation=[1, 1], groups=2)
    got = Q.shift_layer(x, codes, alpha, bias, conv)
    P = int(np.abs(codes.astype(np.int64)).max()) - 1
    xp = np.pad(x.codes, ((0, 0), (0, 0), (1, 1), (0, 2))).astype(np.int8)
    acc = ref.shift_conv2d_int(xp, codes[0], P, stride=(1, 2), groups=2)
    scale = 0.02 * alpha.astype(np.float64) * 2.0**-P
    want, s = add_constant_int(acc, bias.astype(np.float64).reshape(-1, 1, 1), scale, ref_bound(codes, P), axis=1)
    assert np.array_equal(got.codes, want) and np.array_equal(got.scale, s)
    xm = Q.IntV(rng.integers(-128, 128, (3, 16)).astype(np.int64), 0.1, 8)
    cm = rng.integers(-8, 9, (1, 5, 16)).astype(np.int8)
    got = Q.shift_layer(xm, cm, np.ones(5, np.float32), None, None)
    P = int(np.abs(cm.astype(np.int64)).max()) - 1
    assert np.array_equal(got.codes, ref.shift_matmul_int(xm.codes.astype(np.int8), cm[0], P))


def test_simulated_int8_layer_is_the_reference():
    """``qat_ops.int8_layer`` on uint8 codes equals ``reference.conv2d_int`` with the
    integeriser's weight codes plus ``add_constant_int``."""
    rng = np.random.default_rng(1)
    x = Q.IntV(rng.integers(0, 256, (2, 8, 6, 6)).astype(np.int64), 0.01, 8, unsigned=True)
    w = rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 1, 4).astype(np.float32)
    got = Q.int8_layer(x, w, bias, dict(padding=(1, 0, 1, 2), stride=[1, 2], dilation=[1, 1], groups=2))
    wq, sw = weight_codes(w, axis=0)
    acc = conv2d_int(x.codes.astype(np.uint8), wq, stride=(1, 2), padding=(1, 0, 1, 2), groups=2)
    bound = 2**8 * np.abs(wq.astype(np.int64)).sum(axis=(1, 2, 3))  # u8 codes: code_max(9)
    want, s = add_constant_int(acc, bias.astype(np.float64).reshape(-1, 1, 1), 0.01 * sw, bound, axis=1)
    assert np.array_equal(got.codes, want) and np.array_equal(got.scale, s)


def ref_bound(codes, P):
    from shiftc.reference.overflow import shift_bound

    return shift_bound(codes, P, 8)


def _cli(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def _one_line_error(res, code, text):
    assert res.exit_code == code, res.output
    assert text in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_cli_refuses_an_op_without_integer_qat(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 3, 3], np.full(36, 0.1, np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    _one_line_error(_cli("finetune", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--data", tmp_path / "x.npy",
                         "--integer-only"), 2, "--integer-only fine-tuning has no integer form for Sigmoid")
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("record,why", [
    ("{not json", "is malformed: JSONDecodeError"),
    (json.dumps({"method": "minmax", "samples": 1, "thresholds": {"input": 2.0, "no_such_tensor": 1.0}, "nonnegative": []}),
     "names tensor(s) not in the model: 'no_such_tensor'"),
    (json.dumps({"method": "minmax", "samples": 1, "thresholds": {"input": 2.0}, "nonnegative": []}),
     "recorded activation thresholds have none for"),
])
def test_compile_refuses_a_bad_threshold_record(tmp_path, record, why):
    proto = onnx.load(CNN)
    onnx.helper.set_model_props(proto, {calibrate.RECORD_KEY: record})
    onnx.save(proto, tmp_path / "m.onnx")
    _one_line_error(_cli("compile", tmp_path / "m.onnx", "--integer-only", "-o", tmp_path / "art"), 2, why)
    assert not (tmp_path / "art").exists()
    with pytest.raises(InputError, match="activation"):
        calibrate.read_record({calibrate.RECORD_KEY: json.dumps({"method": "x"})}, {"input"})
