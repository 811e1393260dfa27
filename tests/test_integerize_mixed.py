"""Transformer fidelity rules of integerize: Shiftmax's uint8 probabilities at 2**-8 into attention's
P V (u8 x s8), and mixed precision (``IntOptions.wide``: chosen values int16 into their matmul,
LayerNorm writing int16). Bit-exact against ``shiftc.reference`` and bounded against FP32, as
tests/test_integerize.py."""

from __future__ import annotations

import math

import numpy as np
from test_integerize import Compiled, deq, emit, graph, near_fp32, rand
from tvm import relax

from shiftc import reference as ref
from shiftc.passes import float_scan
from shiftc.passes.integerize import scales as iq
from shiftc.reference import quant as rq

F32 = "float32"


def _attention(bb, s, v):
    p = emit(bb, relax.op.nn.softmax(s, axis=-1), "p")
    return emit(bb, relax.op.matmul(p, v), "y")


def test_shiftmax_writes_uint8_at_2_to_minus_8_into_p_v(rng):
    mod = graph(_attention, s=(4, 16), v=(16, 8))
    c = Compiled(mod, [{"s": rand(rng, (4, 16), 2.0), "v": rand(rng, (16, 8))} for _ in range(3)])
    row = c.row("shiftmax")
    assert row["out"] == "u8 at 2^-8"
    mm = next(r for r in c.report.rows if r["op"] == "matmul")
    assert mm["input"] == "u8 x s8"
    s, v = rand(rng, (4, 16), 2.0), rand(rng, (16, 8))
    ss, sv = c.s("s"), c.s("v")
    p = ref.shiftmax(rq.quantize(s, ss, 8), ss, 12, unsigned=True)
    assert p.dtype == np.uint8 and p.max() > 127  # the eighth bit is used
    acc = p.astype(np.int64) @ rq.quantize(v, sv, 8).astype(np.int64)
    (got,) = c.run(s, v)
    np.testing.assert_array_equal(got, deq(acc, 2.0**-8 * sv))
    # s and v rounded to int8 (~0.7 % RMS each), probabilities on a 2^-8 grid and ShiftMax's
    # shift-only exponent (a few % of the largest probability): measured ~3 %
    near_fp32(got, c.fp32(c.saturated(s, "s"), c.saturated(v, "v"))[0], 0.08)
    assert float_scan.float_ops(c.mod) == []


def test_softmax_read_by_other_ops_stays_int8(rng):
    mod = graph(lambda bb, s: emit(bb, relax.op.add(emit(bb, relax.op.nn.softmax(s, axis=-1), "p"), s), "y"), s=(4, 16))
    c = Compiled(mod, [{"s": rand(rng, (4, 16), 2.0)} for _ in range(2)])
    assert c.row("shiftmax")["out"] == "s8 at 2^-7"


def _ln_matmul(g, bt, W):
    def body(bb, x):
        ln = emit(bb, relax.op.nn.layer_norm(x, relax.const(g), relax.const(bt), [-1]), "ln")
        return emit(bb, relax.op.matmul(ln, relax.const(W)), "y")
    return body


def test_wide_layernorm_output_into_an_int16_matmul(rng):
    """``wide={"ln"}``: the LayerNorm writes int16 at max|ln| / 32767 and the matmul reads it as
    int16 x int8 -> int32 (bound 2**15 * sum|W| per channel, proved to fit)."""
    C = 24
    g = rand(rng, (C,), 1.0)
    g[5] = 25.0  # an outlier channel, as BERT's LayerNorms have
    bt, W = rand(rng, (C,), 0.2), rand(rng, (C, 12), 0.3)
    mod = graph(_ln_matmul(g, bt, W), x=(5, C))
    samples = [{"x": rand(rng, (5, C), 2.0)} for _ in range(3)]
    narrow, wide = Compiled(mod, samples), Compiled(mod, samples, wide=frozenset({"ln"}))
    assert next(r for r in wide.report.rows if r["op"] == "i_layernorm")["out_bits"] == 16
    assert next(r for r in wide.report.rows if r["op"] == "matmul")["input"] == "s16"
    x = rand(rng, (5, C), 2.0)
    sx, sy = wide.s("x"), wide.calib.absmax["ln"] / 32767
    ln = ref.i_layernorm(rq.quantize(x, sx, 8))
    m, e = ref.dyadic(np.abs(g).astype(np.float64) * math.sqrt(C) * 2.0**-30 / sy)
    y16 = ref.saturate(ref.requantize(ln * np.where(g < 0, -1, 1), m, e, 32, axis=-1).astype(np.int64) + rq.bias_codes(bt, sy), 16)
    w, sw = iq.weight_codes(W, axis=1)
    (got,) = wide.run(x)
    np.testing.assert_array_equal(got, deq(y16 @ w.astype(np.int64), sy * sw))
    want = wide.fp32(wide.saturated(x))[0]
    err = lambda out: np.linalg.norm(out - want) / np.linalg.norm(want)  # noqa: E731
    # int16 removes the LayerNorm output's rounding (the outlier channel stretches its int8 step to
    # ~0.2 of the other channels' spread); what is left is x at int8 and W at int8: ~1.5 %
    assert err(got) <= 0.03 and err(got) < 0.7 * err(narrow.run(x)[0])
    assert float_scan.float_ops(wide.mod) == []


def test_wide_operand_overflowing_int32_is_split(rng):
    """int16 x int8 over K = 4096 full-scale weights passes 2**31: the reduction is split along K
    and narrowed (reference ``chunked_matmul_int``), never left to overflow."""
    K = 4096
    W = np.where(rng.random((K, 4)) < 0.5, -1.0, 1.0).astype(np.float32)
    mod = graph(lambda bb, x: emit(bb, relax.op.matmul(x, relax.const(W)), "y"), x=(2, K))
    c = Compiled(mod, [{"x": rand(rng, (2, K))} for _ in range(2)], wide=frozenset({"x"}))
    row = next(r for r in c.report.rows if r["op"] == "matmul")
    assert row["input"] == "s16" and row["split"] >= 2
    x = rand(rng, (2, K))
    sx = c.calib.absmax["x"] / 32767
    xq = rq.quantize(x, sx, 16)
    w, sw = iq.weight_codes(W, axis=1)
    want = ref.chunked_matmul_int(xq, w, ref.k_chunks(np.abs(w.astype(np.int64)), 16), row["shift"])
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, sx * sw * 2.0 ** row["shift"]))
    near_fp32(got, c.fp32(c.saturated(x, bits=16))[0], 0.01)


def _attention_block(rng):
    """LN (outlier channel) -> q, k, v; softmax(q k^T / 4) v: the transformer ops of this file."""
    from conftest import make_model
    from onnx import helper

    g = np.ones(16, np.float32)
    g[2] = 20.0
    mk = helper.make_node
    nodes = [mk("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1), mk("MatMul", ["ln", "wq"], ["q"]),
             mk("MatMul", ["ln", "wk"], ["k"]), mk("MatMul", ["ln", "wv"], ["v"]), mk("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             mk("MatMul", ["q", "kt"], ["s"]), mk("Mul", ["s", "c"], ["sc"]), mk("Softmax", ["sc"], ["p"], axis=-1),
             mk("MatMul", ["p", "v"], ["y"])]
    w = {k: (rng.standard_normal((16, 16)) * 0.3).astype(np.float32) for k in ("wq", "wk", "wv")}
    consts = {"g": g, "b": np.zeros(16, np.float32), "c": np.array(0.25, np.float32), **w}
    return make_model(nodes, [("x", [1, 8, 16])], [("y", [1, 8, 16])], consts)


def test_u8_shiftmax_and_int16_operands_match_on_arm_under_qemu(rng, tmp_path):
    """The same integer graph (u8 probabilities, an int16 LayerNorm output into int16 x int8
    matmuls) cross-compiled for aarch64 and run under qemu gives x86's outputs exactly."""
    import pytest

    from helpers.toolchains import ARM_MISSING, has_arm
    from shiftc import api

    if not has_arm():
        pytest.skip(ARM_MISSING)
    model = _attention_block(rng)
    calib = [{"x": rand(rng, (1, 8, 16))} for _ in range(3)]
    opts = dict(calibration=calib, integer_only=True, int16_layers="MatMul")
    x86 = api.compile(model, "x86", **opts)
    rows = next(s for s in x86.report.stages if s.name == "integerize").rows
    assert next(r for r in rows if r["op"] == "shiftmax")["out"] == "u8 at 2^-8"
    assert sorted(r["input"] for r in rows if r["op"] == "matmul") == ["s16", "s16", "s16", "s16 x s16", "u8 x s16"]
    on_arm = api.compile(model, "arm", output=tmp_path / "arm", **opts)
    x = {"x": rand(np.random.default_rng(5), (1, 8, 16))}
    np.testing.assert_array_equal(on_arm.run(x)["y"], x86.run(x)["y"])
