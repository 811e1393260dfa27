"""canonicalize: written-out LayerNorm / GELU / L2 norm become one op each, outputs unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_model
from norm_helpers import counts, imported, max_rel_error
from onnx import helper

from shiftc.passes.canonicalize import canonicalize, linear_resizes

EXACT = 1e-5
SQRT2 = np.float32(math.sqrt(2.0))


def n(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def layer_norm_nodes(x="x", y="y", affine=True, square="Pow"):
    nodes = [
        n("ReduceMean", [x], ["mu"], axes=[-1]),
        n("Sub", [x, "mu"], ["d"]),
        n("Pow", ["d", "two"], ["d2"]) if square == "Pow" else n("Mul", ["d", "d"], ["d2"]),
        n("ReduceMean", ["d2"], ["var"], axes=[-1]),
        n("Add", ["var", "eps"], ["ve"]),
        n("Sqrt", ["ve"], ["sd"]),
        n("Div", ["d", "sd"], ["nrm" if affine else y]),
    ]
    if affine:
        nodes += [n("Mul", ["nrm", "gamma"], ["sc"]), n("Add", ["sc", "beta"], [y])]
    return nodes


def ln_consts(rng, c=16):
    return {"two": np.float32(2.0), "eps": np.float32(1e-5), "gamma": rng.standard_normal(c).astype(np.float32),
            "beta": rng.standard_normal(c).astype(np.float32)}


@pytest.mark.parametrize("square", ["Pow", "Mul"])
def test_written_out_layer_norm_becomes_one_op(rng, square):
    model = make_model(layer_norm_nodes(square=square), [("x", [2, 5, 16])], [("y", [2, 5, 16])], ln_consts(rng), opset=13)
    loaded, mod = imported(model)
    before = counts(mod)
    assert before["mean"] == 2 and before["sqrt"] == 1 and "nn.layer_norm" not in before
    after = canonicalize(mod)
    assert counts(after) == {"nn.layer_norm": 1}
    assert max_rel_error(loaded, after) <= EXACT


def test_layer_norm_without_affine(rng):
    consts = {k: v for k, v in ln_consts(rng).items() if k in ("two", "eps")}
    model = make_model(layer_norm_nodes(affine=False), [("x", [3, 16])], [("y", [3, 16])], consts, opset=13)
    loaded, mod = imported(model)
    after = canonicalize(mod)
    assert counts(after) == {"nn.layer_norm": 1}
    assert max_rel_error(loaded, after) <= EXACT


def test_shared_intermediate_is_not_rewritten(rng):
    """If x - mu is also a graph output, replacing the pattern would not remove it: leave it."""
    model = make_model(layer_norm_nodes(), [("x", [2, 16])], [("y", [2, 16]), ("d", [2, 16])], ln_consts(rng), opset=13)
    loaded, mod = imported(model)
    after = canonicalize(mod)
    assert "nn.layer_norm" not in counts(after)
    assert counts(after) == counts(mod)


def gelu_erf_nodes(form):
    if form == "torch":  # Div by sqrt2, Erf, Add 1, Mul x, Mul 0.5
        return [n("Div", ["x", "sqrt2"], ["z"]), n("Erf", ["z"], ["e"]), n("Add", ["e", "one"], ["e1"]),
                n("Mul", ["x", "e1"], ["p"]), n("Mul", ["p", "half"], ["y"])]
    # Hugging Face style: x * 0.5 * (1 + erf(x * (1/sqrt2)))
    return [n("Mul", ["x", "half"], ["hx"]), n("Mul", ["x", "isqrt2"], ["z"]), n("Erf", ["z"], ["e"]),
            n("Add", ["one", "e"], ["e1"]), n("Mul", ["hx", "e1"], ["y"])]


@pytest.mark.parametrize("form", ["torch", "hf"])
def test_erf_gelu_becomes_gelu(form):
    consts = {"sqrt2": SQRT2, "isqrt2": np.float32(1 / math.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}
    consts = {k: v for k, v in consts.items() if any(k in node.input for node in gelu_erf_nodes(form))}
    model = make_model(gelu_erf_nodes(form), [("x", [4, 32])], [("y", [4, 32])], consts)
    loaded, mod = imported(model)
    assert "erf" in counts(mod)
    after = canonicalize(mod)
    assert counts(after) == {"nn.gelu": 1}
    assert max_rel_error(loaded, after) <= EXACT


def test_wrong_constant_is_not_gelu():
    consts = {"sqrt2": SQRT2, "one": np.float32(1), "half": np.float32(0.6)}
    model = make_model(gelu_erf_nodes("torch"), [("x", [4, 8])], [("y", [4, 8])], consts)
    _, mod = imported(model)
    assert counts(canonicalize(mod)) == counts(mod)


@pytest.mark.parametrize("cube", ["Pow", "MulMul"])
def test_tanh_gelu_becomes_gelu_tanh(cube):
    nodes = ([n("Pow", ["x", "three"], ["x3"])] if cube == "Pow"
             else [n("Mul", ["x", "x"], ["xx"]), n("Mul", ["x", "xx"], ["x3"])])
    nodes += [n("Mul", ["x3", "c"], ["cx3"]), n("Add", ["x", "cx3"], ["inner"]), n("Mul", ["inner", "k"], ["u"]),
              n("Tanh", ["u"], ["t"]), n("Add", ["t", "one"], ["t1"]), n("Mul", ["x", "half"], ["hx"]),
              n("Mul", ["hx", "t1"], ["y"])]
    consts = {"c": np.float32(0.044715), "k": np.float32(math.sqrt(2 / math.pi)), "one": np.float32(1),
              "half": np.float32(0.5)}
    if cube == "Pow":
        consts["three"] = np.float32(3)
    model = make_model(nodes, [("x", [4, 32])], [("y", [4, 32])], consts)
    loaded, mod = imported(model)
    after = canonicalize(mod)
    assert counts(after) == {"nn.gelu_tanh": 1}
    assert max_rel_error(loaded, after) <= EXACT


@pytest.mark.parametrize("clip", [False, True])
def test_reduce_l2_div_becomes_marked_l2_normalize(clip):
    nodes = [n("ReduceL2", ["x"], ["nrm"], axes=[-1], keepdims=1)]
    consts = {}
    if clip:  # torch.nn.functional.normalize: x / max(||x||, eps)
        nodes += [n("Clip", ["nrm", "eps"], ["cl"]), n("Expand", ["cl", "shape"], ["den"]), n("Div", ["x", "den"], ["y"])]
        consts = {"eps": np.float32(1e-12), "shape": np.array([2, 6, 16], np.int64)}
    else:  # Segmenter: x / x.norm(dim=-1, keepdim=True)
        nodes += [n("Div", ["x", "nrm"], ["y"])]
    model = make_model(nodes, [("x", [2, 6, 16])], [("y", [2, 6, 16])], consts, opset=17)
    loaded, mod = imported(model)
    after = canonicalize(mod)
    assert counts(after) == {"l2_normalize": 1}
    (gv, fn), = [(gv, f) for gv, f in after.functions.items() if f.attrs is not None and "shiftc.op" in f.attrs]
    assert str(fn.attrs["shiftc.op"]) == "l2_normalize" and [int(a) for a in fn.attrs["shiftc.axes"]] == [2]
    assert float(fn.attrs["shiftc.eps"]) == pytest.approx(1e-12 if clip else 0.0)
    assert max_rel_error(loaded, after) <= EXACT


def test_bilinear_resize_is_counted_and_kept():
    model = make_model([n("Resize", ["x", "", "scales"], ["y"], mode="linear")], [("x", [1, 3, 8, 8])],
                       [("y", [1, 3, 16, 16])], {"scales": np.array([1, 1, 2, 2], np.float32)})
    _, mod = imported(model)
    after = canonicalize(mod)
    assert counts(after) == {"image.resize2d": 1} and linear_resizes(after) == 1


def test_torch_opset14_export_canonicalises(tmp_path):
    """What torch actually exports below opset 17: LayerNorm decomposed, GELU erf and tanh, normalize."""
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.fc = torch.nn.LayerNorm(16), torch.nn.Linear(16, 32)

        def forward(self, x):
            y = torch.nn.functional.gelu(self.fc(self.ln(x)))
            return torch.nn.functional.normalize(torch.nn.functional.gelu(y, approximate="tanh"), dim=-1)

    torch.manual_seed(0)
    path = tmp_path / "block.onnx"
    torch.onnx.export(Block().eval(), (torch.randn(1, 4, 16),), str(path), dynamo=False, opset_version=14)
    loaded, mod = imported(str(path))
    after = canonicalize(mod)
    assert counts(after) == {"nn.layer_norm": 1, "matmul": 1, "add": 1, "nn.gelu": 1, "nn.gelu_tanh": 1, "l2_normalize": 1}
    assert max_rel_error(loaded, after) <= EXACT
