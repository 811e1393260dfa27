"""Default CPU schedules for kernel classes unseen models hit: ConvTranspose as phase convs
(schedules/conv_transpose.py) matches onnxruntime; reductions with extents no vector width divides
(ViT's 257 tokens) are padded to whole tiles (schedules/cpu_padding.py), vectorised, and exact."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import s_tir, te

from shiftc import api
from shiftc.schedules import cpu

TARGET = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"})


def _conv_transpose_model(k, s, p, out_pad, ci, co, hw, rng):
    w = rng.standard_normal((ci, co, k, k)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[s, s], pads=[p] * 4,
                            output_padding=[out_pad] * 2, kernel_shape=[k, k])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, *hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("k,s,p,out_pad", [(4, 2, 1, 0), (2, 2, 0, 0), (3, 2, 1, 1), (5, 3, 1, 0)])
def test_conv_transpose_phases_match_onnxruntime(k, s, p, out_pad):
    rng = np.random.default_rng(k * 10 + s)
    model = _conv_transpose_model(k, s, p, out_pad, 6, 5, (9, 10), rng)
    x = rng.standard_normal((1, 6, 9, 10)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    prepared = api.prepare(model)
    names = [gv.name_hint for gv, f in prepared.module.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not any("conv2d_transpose" in n for n in names), names  # rewritten into phase convs
    got = list(api.compile(model).run(x).values())[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def _matmul_bias(m, n, k):
    a, b = te.placeholder((1, m, k), name="A"), te.placeholder((k, n), name="B")
    bias = te.placeholder((n,), name="bias")
    r = te.reduce_axis((0, k), "k")
    mm = te.compute((1, m, n), lambda z, i, j: te.sum(a[z, i, r] * b[r, j], axis=r), name="matmul")
    out = te.compute((1, m, n), lambda z, i, j: mm[z, i, j] + bias[j], name="add")
    return te.create_prim_func([a, b, bias, out])


def _vector_loops(func) -> int:
    return func.script().count("T.vectorized(")


@pytest.mark.parametrize("m,n,k", [(257, 257, 64), (197, 384, 32), (7, 5, 3)])
def test_odd_extents_padded_vectorised_and_exact(m, n, k):
    func = _matmul_bias(m, n, k)
    sch, kind = cpu.default_schedule(func, cpu.vector_lanes(TARGET), TARGET)
    assert kind == "reduction"
    scheduled = sch.mod["main"]
    if m > 8:  # padded: the main loop is vectorised although no vector width divides n or m
        assert _vector_loops(scheduled) >= 2
    lib = tvm.compile(tvm.IRModule({"main": scheduled}), target=TARGET)
    rng = np.random.default_rng(m)
    a, b = rng.standard_normal((1, m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((1, m, n), np.float32))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), tvm.runtime.tensor(bias), out)
    np.testing.assert_allclose(out.numpy(), a @ b + bias, rtol=1e-5, atol=1e-4)
    naive = tvm.compile(tvm.IRModule({"main": func}), target=TARGET)
    expect = tvm.runtime.tensor(np.zeros((1, m, n), np.float32))
    naive["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), tvm.runtime.tensor(bias), expect)
    np.testing.assert_array_equal(out.numpy(), expect.numpy())  # same sums in the same order
