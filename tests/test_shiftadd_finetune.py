"""``shiftc.finetune(..., attention="shiftadd")``: a short fine-tune of a small ViT to add-only
attention and shift layers, its ONNX compiled --integer-only (sign / sign matmul kernels, no float
op, and no multiply in those kernels as codegen receives them: tests/test_shift_tir.py's scan),
and the same build under qemu-aarch64 bit for bit equal to x86."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import shiftc
from examples import fashion_mnist as fm
from examples.models import FashionViT
from shiftc import api
from shiftc.core.errors import InputError
from helpers.toolchains import needs_arm
from shiftc.targets.x86 import flatten_outputs

from conftest import ort_run
from test_shift_tir import data_multiplies, lower


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A 1-block FashionViT (random init) fine-tuned for 12 steps on 64 training images."""
    torch.manual_seed(0)
    x, y = fm.load("train")
    x, y = fm.preprocess(x[:64]), y[:64]
    path = tmp_path_factory.mktemp("shiftadd") / "vit.onnx"
    res = shiftc.finetune(FashionViT(depth=1).eval(), x, y, path, bits=4, steps=12, batch_size=32, lr=1e-3,
                          attention="shiftadd")
    return res, x


def test_shiftadd_finetune_trains_and_exports_sign_attention(finetuned):
    res, _ = finetuned
    import onnx

    ops = [n.op_type for n in res.model.graph.node]
    assert ops.count("Sign") == 2 and "Softmax" not in ops  # Q and K of the one block hashed
    assert np.mean(res.history.loss[-4:]) < np.mean(res.history.loss[:4])
    meta = {p.key: p.value for p in res.model.metadata_props}
    assert '"attention": "shiftadd"' in "".join(meta.values())
    onnx.checker.check_model(res.model)


@pytest.fixture(scope="module")
def x86_integer(finetuned):
    """(the x86 --integer-only build as compiled: ``shiftc.api.prepare``, its codegen PrimFuncs, a VM)."""
    res, x = finetuned
    prepared = api.prepare(res.model, "x86", calibration=[{"input": v[None]} for v in x[:16]], integer_only=True)
    vm = relax.VirtualMachine(prepared.compile(), tvm.cpu())
    return prepared, prepared.finished(), lambda a: flatten_outputs(vm["main"](tvm.runtime.tensor(a)))[0]


def test_integer_only_build_lowers_attention_to_add_only_kernels(finetuned, x86_integer):
    res, x = finetuned
    prepared, finished, run = x86_integer
    stage = {s.name: s for s in prepared.report.stages}["integerize"]
    ops = stage.summary["integer_ops"]
    assert ops["sign"] == 2 and ops["sign_matmul"] == 2 and stage.summary["float_ops"] == 0
    kernels = {gv.name_hint: f for gv, f in finished.functions.items() if "sign" in gv.name_hint}
    assert any("sign_matmul" in k for k in kernels), list(kernels)
    for name, func in kernels.items():  # as codegen receives them (fused), parameters are data
        lowered = lower(func)
        fdef = next(n for n in ast.walk(ast.parse(lowered.script())) if isinstance(n, ast.FunctionDef))
        loops, muls = data_multiplies(lowered, data={a.arg for a in fdef.args.args}, anywhere=True)
        assert muls == [] and (loops >= 1 or "sign_matmul" not in name), (name, muls)
    got = np.concatenate([run(x[i:i + 1]) for i in range(8)])
    ref = np.concatenate([ort_run(res.model, {"input": x[i:i + 1]})[0] for i in range(8)])
    assert np.linalg.norm(got - ref) <= 0.25 * np.linalg.norm(ref)


@pytest.mark.slow
@needs_arm
def test_integer_only_attention_is_bit_exact_on_aarch64(finetuned, x86_integer, tmp_path):
    res, x = finetuned
    cal = [{"input": v[None]} for v in x[:16]]
    run_x86 = x86_integer[2]
    a53 = api.compile(res.model, "arm", cpu="cortex-a53", calibration=cal, integer_only=True, output=tmp_path / "a")
    for i in range(4):
        np.testing.assert_array_equal(a53.run({"input": x[i:i + 1]})["output"], run_x86(x[i:i + 1]))


def test_shiftadd_refuses_a_model_without_attention_modules():
    with pytest.raises(InputError, match="attention"):
        shiftc.finetune(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), np.zeros((4, 4), np.float32),
                        steps=1, attention="shiftadd")
    with pytest.raises(InputError, match="--attention"):
        shiftc.finetune(FashionViT(depth=1), np.zeros((4, 1, 28, 28), np.float32), steps=1, attention="performer")


def _cli(*args):
    from click.testing import CliRunner

    from shiftc.cli import main

    return CliRunner().invoke(main, ["finetune", *map(str, args)])


def test_cli_attention_shiftadd_on_a_saved_torch_module(tmp_path):
    """``shiftc finetune vit.pt --attention shiftadd``: two real steps, the attention in --json and
    in the output's metadata, Sign nodes in its graph; a bad value is click's usage error."""
    import json

    from helpers import json_schema

    torch.manual_seed(0)
    torch.save(FashionViT(depth=1).eval(), tmp_path / "vit.pt")
    np.save(tmp_path / "x.npy", fm.preprocess(fm.load("train")[0][:8]))
    res = _cli(tmp_path / "vit.pt", "-o", tmp_path / "o.onnx", "--data", tmp_path / "x.npy", "--attention", "shiftadd",
               "--steps", 2, "--batch-size", 4, "--json")
    assert res.exit_code == 0, res.output
    doc = json_schema.validate("finetune", json.loads(res.stdout))
    assert doc["attention"] == "shiftadd" and doc["attention_modules"] == ["encoder.blocks.0.attn"] and doc["steps"] == 2
    import onnx

    model = onnx.load(tmp_path / "o.onnx")
    assert [n.op_type for n in model.graph.node].count("Sign") == 2
    assert '"attention": "shiftadd"' in "".join(p.value for p in model.metadata_props)
    bad = _cli(tmp_path / "vit.pt", "-o", tmp_path / "b.onnx", "--data", tmp_path / "x.npy", "--attention", "performer")
    assert bad.exit_code == 2 and "Invalid value for '--attention'" in bad.stderr and not (tmp_path / "b.onnx").exists()


def test_cli_attention_shiftadd_refuses_onnx_and_a_state_dict(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 28, 28), np.float32))
    onnx_vit = tmp_path / "vit.onnx"
    torch.onnx.export(FashionViT(depth=1).eval(), (torch.zeros(1, 1, 28, 28),), str(onnx_vit), dynamo=False,
                      opset_version=17, input_names=["input"])
    res = _cli(onnx_vit, "-o", tmp_path / "o.onnx", "--data", tmp_path / "x.npy", "--attention", "shiftadd", "--steps", 1)
    assert res.exit_code == 2 and "pass the torch module" in res.stderr, res.output
    torch.save(FashionViT(depth=1).state_dict(), tmp_path / "sd.pt")
    res = _cli(tmp_path / "sd.pt", "-o", tmp_path / "o.onnx", "--data", tmp_path / "x.npy", "--attention", "shiftadd", "--steps", 1)
    assert res.exit_code == 2 and "not a torch module" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "o.onnx").exists()
