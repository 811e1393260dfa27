"""fold_norm (exact folds, residual refusal) and ln_to_l1 (L1 kernel vs NumPy, measured error)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_model
from norm_helpers import counts, imported, max_rel_error
from onnx import helper

import shiftc
from shiftc.cli import main as cli_main
from shiftc.core.errors import InputError
from shiftc.passes.canonicalize import canonicalize
from shiftc.passes.fold_norm import fold_norm
from shiftc.passes.ln_to_l1 import ln_to_l1
from shiftc.reference.nonlinear import l1_norm_float
from shiftc.reference.norm import ln_to_l1_params

EXACT = 1e-5


def n(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def bn_consts(rng, c):
    return {"s": (rng.random(c) + 0.5).astype(np.float32), "bb": f32(rng, c), "m": f32(rng, c),
            "v": (rng.random(c) + 0.5).astype(np.float32)}


@pytest.mark.parametrize("bias", [True, False])
def test_batch_norm_folds_into_preceding_conv(rng, bias):
    conv_in = ["x", "w", "b"] if bias else ["x", "w"]
    consts = {"w": f32(rng, 4, 3, 3, 3), **bn_consts(rng, 4), **({"b": f32(rng, 4)} if bias else {})}
    model = make_model([n("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]), n("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"])],
                       [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])], consts)
    loaded, mod = imported(model)
    assert counts(mod)["nn.batch_norm"] == 1
    notes = []
    after, folded = fold_norm(mod, notes)
    assert counts(after) == {"nn.conv2d": 1, "add": 1}
    assert folded["batch_norm_into_conv"] == 1 and notes == []
    assert max_rel_error(loaded, after) <= EXACT


@pytest.mark.parametrize("bias", [True, False])
def test_batch_norm_folds_into_preceding_conv_transpose(rng, bias):
    """The ViT decoder's ConvTranspose -> BatchNormalization: the IOHW weight is scaled along axis 1."""
    conv_in = ["x", "w", "b"] if bias else ["x", "w"]
    consts = {"w": f32(rng, 3, 4, 4, 4), **bn_consts(rng, 4), **({"b": f32(rng, 4)} if bias else {})}
    model = make_model([n("ConvTranspose", conv_in, ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
                        n("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"])],
                       [("x", [1, 3, 8, 8])], [("y", [1, 4, 16, 16])], consts)
    loaded, mod = imported(model)
    assert counts(mod)["nn.batch_norm"] == 1
    notes = []
    after, folded = fold_norm(mod, notes)
    assert counts(after) == {"nn.conv2d_transpose": 1, "add": 1}
    assert folded["batch_norm_into_conv"] == 1 and notes == []
    assert max_rel_error(loaded, after) <= EXACT


def test_batch_norm_after_grouped_conv_transpose_is_left(rng):
    """A grouped ConvTranspose's weight is (I, O/groups, kH, kW): not folded, the batch_norm stays."""
    consts = {"w": f32(rng, 4, 2, 3, 3), **bn_consts(rng, 4)}
    model = make_model([n("ConvTranspose", ["x", "w"], ["c"], group=2),
                        n("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"])],
                       [("x", [1, 4, 6, 6])], [("y", [1, 4, 8, 8])], consts)
    loaded, mod = imported(model)
    after, folded = fold_norm(mod, [])
    assert counts(after)["nn.batch_norm"] == 1 and folded["batch_norm_into_conv"] == 0
    assert max_rel_error(loaded, after) <= EXACT


def test_residual_producer_is_refused(rng):
    """conv output feeds the BatchNorm and a residual Add: folding into the conv would change the Add."""
    model = make_model(
        [n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), n("BatchNormalization", ["c", "s", "bb", "m", "v"], ["bn"]),
         n("Relu", ["bn"], ["r"]), n("Add", ["r", "c"], ["y"])],
        [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])], {"w": f32(rng, 4, 3, 3, 3), **bn_consts(rng, 4)})
    loaded, mod = imported(model)
    notes = []
    after, folded = fold_norm(mod, notes)
    assert counts(after)["nn.batch_norm"] == 1 and folded["batch_norm_into_conv"] == 0 and folded["affine_into_consumer"] == 0
    assert len(notes) == 1 and "residual" in notes[0] and "not folded into conv2d" in notes[0]
    assert max_rel_error(loaded, after) <= EXACT


def un_block(rng, post_norm=False):
    """Pre-norm: y = x + Linear(UN(x)), UN(x) = x * s + beta. Post-norm variant: UN(x) also feeds the Add."""
    nodes = [n("Mul", ["x", "s"], ["a"]), n("Add", ["a", "beta"], ["u"]), n("MatMul", ["u", "w"], ["m"]),
             n("Add", ["m", "b"], ["o"]), n("Add", ["o", "u" if post_norm else "x"], ["y"])]
    consts = {"s": (rng.random(8) + 0.5).astype(np.float32), "beta": f32(rng, 8), "w": f32(rng, 8, 8), "b": f32(rng, 8)}
    return make_model(nodes, [("x", [1, 5, 8])], [("y", [1, 5, 8])], consts)


def test_unified_norm_affine_folds_forward_into_matmul(rng):
    loaded, mod = imported(un_block(rng))
    assert counts(mod) == {"multiply": 1, "add": 3, "matmul": 1}
    after, folded = fold_norm(mod)
    assert counts(after) == {"matmul": 1, "add": 2}  # the Mul and the UN Add are gone; bias merged
    assert folded["affine_into_consumer"] == 1
    assert max_rel_error(loaded, after) <= EXACT


def test_unified_norm_vit_block_folds_completely(tmp_path):
    """torch pre-norm block with UN (inference form) + final UN + token mean-pool + head: no UN op left."""
    torch = pytest.importorskip("torch")

    class UN(torch.nn.Module):
        def __init__(self, d):
            super().__init__()
            self.w, self.b = torch.nn.Parameter(torch.randn(d)), torch.nn.Parameter(torch.randn(d))
            self.register_buffer("rv", torch.rand(d) + 0.5)

        def forward(self, x):
            return x * (self.w * torch.rsqrt(self.rv + 1e-5)) + self.b

    class Net(torch.nn.Module):
        def __init__(self, d=16):
            super().__init__()
            self.n1, self.fc1, self.n2, self.fc2, self.n3 = UN(d), torch.nn.Linear(d, d), UN(d), torch.nn.Linear(d, d), UN(d)
            self.head = torch.nn.Linear(d, 10)

        def forward(self, x):
            x = x + self.fc1(self.n1(x))
            x = x + self.fc2(torch.nn.functional.gelu(self.n2(x)))
            return self.head(self.n3(x).mean(dim=1))

    torch.manual_seed(0)
    path = tmp_path / "un.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 7, 16),), str(path), dynamo=False, opset_version=17)
    loaded, mod = imported(str(path))
    mod = canonicalize(mod)  # pipeline order: the erf GELU becomes one op first
    assert counts(mod)["multiply"] == 3 and counts(mod)["nn.gelu"] == 1
    notes = []
    after, folded = fold_norm(mod, notes)
    # n1 -> fc1 and n3 -> (past the mean) -> head fold; n2 feeds a GELU, so it stays and is noted
    assert folded == {"batch_norm_into_conv": 0, "affine_into_consumer": 2, "affine_moved_past_mean": 1}
    assert counts(after)["multiply"] == 1 and notes == []
    assert max_rel_error(loaded, after) <= EXACT


def test_affine_feeding_a_residual_is_refused(rng):
    loaded, mod = imported(un_block(rng, post_norm=True))
    notes = []
    after, folded = fold_norm(mod, notes)
    assert counts(after) == counts(mod) and folded["affine_into_consumer"] == 0
    assert any("not folded forward" in note for note in notes)


def test_gemm_consumer_and_token_batch_norm(rng):
    """BatchNormalization on (N, C) features folds forward into the Gemm (transposed weight)."""
    model = make_model([n("BatchNormalization", ["x", "s", "bb", "m", "v"], ["u"]), n("Gemm", ["u", "w", "b"], ["y"], transB=1)],
                       [("x", [3, 6])], [("y", [3, 4])], {**bn_consts(rng, 6), "w": f32(rng, 4, 6), "b": f32(rng, 4)})
    loaded, mod = imported(model)
    after, folded = fold_norm(mod)
    assert "nn.batch_norm" not in counts(after) and folded["affine_into_consumer"] == 1
    assert max_rel_error(loaded, after) <= EXACT


@pytest.mark.parametrize("pad", [0, 1])
def test_batch_norm_before_conv_folds_forward_only_without_padding(rng, pad):
    model = make_model([n("Relu", ["x"], ["r"]), n("BatchNormalization", ["r", "s", "bb", "m", "v"], ["u"]),
                        n("Conv", ["u", "w"], ["y"], pads=[pad] * 4)],
                       [("x", [1, 4, 6, 6])], [("y", [1, 5, 6 + 2 * pad - 2, 6 + 2 * pad - 2])],
                       {**bn_consts(rng, 4), "w": f32(rng, 5, 4, 3, 3)})
    loaded, mod = imported(model)
    after, folded = fold_norm(mod)
    assert folded["affine_into_consumer"] == (1 if pad == 0 else 0)  # zero padding would not see beta
    assert ("nn.batch_norm" in counts(after)) == bool(pad)
    assert max_rel_error(loaded, after) <= EXACT


def l1_kernel(x, gamma, beta, eps):
    import tvm
    from tvm import relax

    from shiftc.kernels.norm import l1_norm
    from shiftc.targets.x86 import host_cpu

    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(bb.call_te(l1_norm, xv, relax.const(gamma), relax.const(beta), eps=eps))
        bb.emit_func_output(out)
    mod = bb.get()
    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    return mod, vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()


def test_l1_kernel_matches_numpy_reference(rng):
    x = (f32(rng, 3, 7, 48) * 3 + 1).astype(np.float32)
    gamma, beta, eps = f32(rng, 48), f32(rng, 48), 1e-5
    g1, e1 = ln_to_l1_params(gamma, eps)
    mod, got = l1_kernel(x, g1.astype(np.float32), beta, e1)
    ref = l1_norm_float(x, gamma, beta, eps, correction=True)
    err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max() <= EXACT
    prim = next(f for gv, f in mod.functions.items() if gv.name_hint == "l1_norm").script()
    assert "sqrt" not in prim and "pow" not in prim.lower()  # no square root, no squares


def test_ln_to_l1_replaces_layer_norm_and_is_measured(rng):
    model = make_model([n("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)], [("x", [2, 10, 32])],
                       [("y", [2, 10, 32])], {"g": f32(rng, 32), "b": f32(rng, 32)})
    loaded, mod = imported(model)
    after, converted = ln_to_l1(mod)
    assert converted == 1 and counts(after) == {"call_tir:l1_norm": 1}
    err = max_rel_error(loaded, after)
    assert 1e-4 < err < 0.5  # lossy but close for Gaussian rows


def test_pipeline_stages_and_options(rng, tmp_path):
    model = make_model([n("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1), n("Mul", ["y", "s"], ["u"]),
                        n("MatMul", ["u", "w"], ["z"])], [("x", [1, 6, 16])], [("z", [1, 6, 8])],
                       {"g": f32(rng, 16), "b": f32(rng, 16), "s": f32(rng, 16), "w": f32(rng, 16, 8)})
    stages = {s.name: s for s in shiftc.compile(model).report.stages}
    assert stages["fold_norm"].summary["folded"]["affine_into_consumer"] == 1 and "ln_to_l1" not in stages
    l1 = {s.name: s for s in shiftc.compile(model, norm="l1").report.stages}["ln_to_l1"]
    assert l1.lossy and l1.summary["layer_norm_to_l1"] == 1 and 0.9 < l1.error["cosine"] < 1.0
    with pytest.raises(InputError):
        shiftc.compile(model, norm="l3")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    res = CliRunner().invoke(cli_main, ["inspect", str(path), "--passes"])
    assert res.exit_code == 0, res.output
    assert "Relax ops before / after" in res.output and "multiply" in res.output


def test_unique_value_names_renames_repeats_only():
    """Before: two bindings named ``lv`` (as folding passes can leave them). After: ``lv`` and
    ``lv_1``; the parameter and the computation are unchanged."""
    import tvm
    from tvm import relax

    from shiftc.passes.graph import unique_value_names

    ty = relax.TensorType((2, 3), "float32")
    x, a, b, o = relax.Var("x", ty), relax.DataflowVar("lv", ty), relax.DataflowVar("lv", ty), relax.Var("gv", ty)
    block = relax.DataflowBlock([relax.VarBinding(a, relax.op.add(x, x)), relax.VarBinding(b, relax.op.multiply(a, a)),
                                 relax.VarBinding(o, relax.op.subtract(b, a))])
    mod = relax.transform.Normalize()(tvm.IRModule({"main": relax.Function([x], relax.SeqExpr([block], o), ty)}))
    names = lambda m: [bd.var.name for blk in m["main"].body.blocks for bd in blk.bindings]  # noqa: E731
    assert names(mod)[:2] == ["lv", "lv"]
    out = unique_value_names(mod)
    assert names(out)[:2] == ["lv", "lv_1"] and [p.name for p in out["main"].params] == ["x"]
    assert len(set(names(out))) == len(names(out))
    ex = tvm.compile(out, target=tvm.target.Target({"kind": "llvm"}))
    xv = np.arange(6, dtype="float32").reshape(2, 3)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv)).numpy()
    np.testing.assert_allclose(got, (2 * xv) ** 2 - 2 * xv)
    assert unique_value_names(out) is out  # nothing to rename: the module itself
