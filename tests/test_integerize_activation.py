"""Integer activations (passes/integerize/rules_activation.py and the softmax/add extensions): the TE
kernels against ``shiftc.reference.activation`` on every code and on edge values, and each rule on
graphs as the ONNX importer emits them (Clip, HardSigmoid, HardSwish, Sigmoid, SiLU, Tanh, Erf,
LeakyRelu, PRelu, squeeze-excite gating, Softmax on a non-last axis, -inf masks): bit for bit
against the composition of reference functions, and within a stated bound of the FP32 model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax, te

from shiftc import frontend
from shiftc import reference as ref
from shiftc.kernels import activation as ka
from shiftc.passes import float_scan
from shiftc.passes.integerize import scales as iq
from shiftc.reference import activation as ra
from shiftc.reference import quant as rq
from test_integerize import Compiled, deq, near_fp32, rand

LLVM = tvm.target.Target({"kind": "llvm"})


def onnx_mod(nodes, shape, inits=(), out_shape=None):
    """The Relax module the ONNX importer makes of ``nodes`` (input ``x``, output ``y``)."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape or shape))],
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return frontend.to_relax(frontend.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])))


def compiled(rng, nodes, shape, inits=(), spread=2.0, out_shape=None) -> Compiled:
    mod = onnx_mod(nodes, shape, inits, out_shape)
    return Compiled(mod, [{"x": rand(rng, shape, spread)} for _ in range(3)])


def named(c: Compiled, op: str, k: int = 0) -> str:
    """The name of the ``k``-th value that ``op`` computes in the float module."""
    vals = [b.var.name for block in c.float_mod["main"].body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == op]
    return vals[k]


def output_name(c: Compiled) -> str:
    """The name of the float module's output value."""
    return c.float_mod["main"].body.body.name


def only_input(c: Compiled, x):
    """``x``'s int8 codes and the FP32 model on what they represent (x clipped to its range)."""
    return rq.quantize(x, c.s("x"), 8), c.fp32(c.saturated(x))[0]


def run_te(fn, inputs, *params, **kw):
    """A TE kernel built for the host and run on NumPy ``inputs``."""
    ph = [te.placeholder(a.shape, str(a.dtype), name=f"a{i}") for i, a in enumerate(inputs)]
    out = fn(*ph, *params, **kw)
    f = tvm.compile(te.create_prim_func([*ph, out]), target=LLVM)
    res = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype)))
    f(*[tvm.runtime.tensor(a) for a in inputs], res)
    return res.numpy()


# ----------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("fn", ["sigmoid", "tanh", "erf"])
@pytest.mark.parametrize("s_in", [2.0**-7, 0.037, 0.25])
def test_lut_kernel_matches_reference_on_every_code(fn, s_in):
    codes = np.arange(-128, 128, dtype=np.int8)
    table = ra.lut_table(fn, s_in, 2.0**-14)
    got = run_te(ka.lut, [codes, table])
    np.testing.assert_array_equal(got, ra.lut_apply(codes, table))
    # the table is f to half an output step (plus saturation of f = 1 at int16's 16384 < 32767)
    exact = ra.LUT_FUNCTIONS[fn](codes * s_in)
    assert np.abs(got * 2.0**-14 - exact).max() <= 2.0**-15 + 1e-12
    assert table.dtype == np.int16 and int(np.abs(table.astype(np.int64)).max()) <= 1 << 14


def test_leaky_relu_kernel_matches_reference_at_the_edges(rng):
    alpha = np.array([0.1, 0.0, -0.25, 1.5, 3e-11])  # incl. a negative, a zero, > 1 and below 2**-32
    m, e = ref.dyadic(np.where(np.abs(alpha) < 2.0**-32, 0.0, np.abs(alpha)))
    sign = np.where(alpha < 0, -1, 1).astype(np.int64)
    x = rng.integers(-(2**31), 2**31, size=(3, 5, 7), dtype=np.int64)
    x[0, :, :4] = np.array([-(2**31) + 1, 2**31 - 1, 0, -1])  # edges (|x| < 2**31 / 1.5 keeps int32 below)
    x = (x // 2).astype(np.int32)
    ints = [np.asarray(v, np.int64) for v in (m, e, sign)]
    got = run_te(ka.leaky_relu, [x, *ints], 1)
    want = ra.leaky_relu_int(x, m, e, sign, axis=1)
    np.testing.assert_array_equal(got, want)
    exact = np.where(x >= 0, x, x * alpha.reshape(1, -1, 1))
    assert np.abs(want - exact).max() <= 0.5 + np.abs(x).max() * 2.0**-30  # a rounding, plus m's


# ----------------------------------------------------------------------------- clamps
@pytest.mark.parametrize("bounds", [(-1.5, 2.0), (-0.3, None), (None, 0.7)])
def test_clip_any_constant_bounds(rng, bounds):
    lo, hi = bounds
    names, inits = [n if b is not None else "" for n, b in zip(("lo", "hi"), bounds)], [(n, np.float32(b)) for n, b in zip(("lo", "hi"), bounds) if b is not None]
    c = compiled(rng, [helper.make_node("Clip", ["x", *names], ["y"])], (2, 3, 4), inits)
    x = rand(rng, (2, 3, 4), 2.0)
    xq, want_f = only_input(c, x)
    s = c.s("x")
    want = np.clip(xq.astype(np.int64), math.ceil(lo / s) if lo is not None else None, math.floor(hi / s) if hi is not None else None)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, s))
    # the bounds are rounded inwards to x's step: within one step of the float clip
    near_fp32(got, want_f, atol=s * (1 + 1e-6))
    assert float_scan.float_ops(c.mod) == []


def test_hard_sigmoid_and_hard_swish(rng):
    nodes = [helper.make_node("HardSigmoid", ["x"], ["h"], alpha=0.2, beta=0.5), helper.make_node("HardSwish", ["x"], ["w"]),
             helper.make_node("Add", ["h", "w"], ["y"])]
    c = compiled(rng, nodes, (2, 16), spread=3.0)
    x = rand(rng, (2, 16), 3.0)
    xq, want_f = only_input(c, x)
    s, a = c.s("x"), float(np.float32(0.2))
    x64 = xq.astype(np.int64)
    # HardSigmoid: (0.2 x) + 0.5, clipped to [0, 1], at 0.2 s
    hs = np.clip(x64 + rq.bias_codes(np.float64(0.5), a * s), 0, math.floor(1 / (a * s)))
    # HardSwish: x * clip(x + 3, 0, 6) / 6 at s * s / 6; the product is requantised to w's int16
    # scale when its width (8 + the clip's, from its bound 6 / s) exceeds 16
    top = math.floor(6 / s)
    sw, s_w = x64 * np.clip(x64 + rq.bias_codes(np.float64(3.0), s), 0, top), s * s / 6
    if 8 + top.bit_length() + 1 > 16:
        s_w = c.s(named(c, "relax.multiply", 1), 16)
        sw = ref.requantize(sw, *ref.dyadic(s * s / 6 / s_w), 16)
    sy = c.s(output_name(c), 16)
    want = ref.add_int(hs, a * s, sw, s_w, sy, 16)  # the clipped HardSigmoid is narrow: used as it is
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, sy))
    # x rounded to int8 (its step ~0.07 moves HardSwish by up to ~1.5 steps), clip ends rounded inwards
    near_fp32(got, want_f, 0.04)
    assert float_scan.float_ops(c.mod) == []


# ----------------------------------------------------------------------------- table lookups
def lut_input(c: Compiled, xq, fn: str):
    """The rule's table input: x's int8 codes, or x requantised to the finer scale where ``fn``
    saturates (``LUT_SATURATES / 127``), and that scale."""
    s = c.s("x")
    s_in = min(s, ra.LUT_SATURATES[fn] / 127)
    return (xq, s) if s_in == s else (ref.requantize(xq, *ref.dyadic(s / s_in), 8), s_in)


def test_silu_is_a_sigmoid_table_times_x(rng):
    c = compiled(rng, [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])], (3, 20), spread=2.5)
    x = rand(rng, (3, 20), 2.5)
    xq, want_f = only_input(c, x)
    t, s_in = lut_input(c, xq, "sigmoid")
    sig = ra.lut_apply(t, ra.lut_table("sigmoid", s_in, 2.0**-14))
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(xq.astype(np.int64) * sig, c.s("x") * 2.0**-14))
    assert c.row("lut_sigmoid")["in_scale"] == s_in
    # x rounded to int8 (step ~0.06: x * sigmoid(x) moves by up to 1.1 steps / 2), the table's 2^-15
    near_fp32(got, want_f, 0.03)
    assert float_scan.float_ops(c.mod) == []


@pytest.mark.parametrize("fn, op", [("tanh", "Tanh"), ("erf", "Erf"), ("sigmoid", "Sigmoid")])
def test_bounded_function_table(rng, fn, op):
    # spread 4: |x| reaches ~15, beyond where each saturates: the input is requantised finer
    c = compiled(rng, [helper.make_node(op, ["x"], ["y"])], (4, 32), spread=4.0)
    x = rand(rng, (4, 32), 4.0)
    x[0, :3] = [0.0, 1e4, -1e4]  # edges: zero, and codes saturated at both ends
    xq, want_f = only_input(c, x)
    t, s_in = lut_input(c, xq, fn)
    assert s_in < c.s("x")  # the requantising path
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(ra.lut_apply(t, ra.lut_table(fn, s_in, 2.0**-14)), 2.0**-14))
    # f's slope (<= 2 / sqrt(pi) = 1.13) times half of x's int8 step and half of the table's input
    # step (their roundings), plus the table's half step 2^-15
    near_fp32(got, want_f, atol=1.13 * (c.s("x") + s_in) / 2 + 2.0**-15 + 1e-6)


# ----------------------------------------------------------------------------- leaky slopes
def test_leaky_relu_and_prelu(rng):
    slopes = np.array([0.1, -0.3, 0.0, 2.0], np.float32).reshape(4, 1, 1)
    nodes = [helper.make_node("LeakyRelu", ["x"], ["l"], alpha=0.01), helper.make_node("PRelu", ["l", "slope"], ["y"])]
    c = compiled(rng, nodes, (1, 4, 3, 5), [("slope", slopes)])
    x = rand(rng, (1, 4, 3, 5), 2.0)
    xq, want_f = only_input(c, x)
    a = float(np.float32(0.01))
    m, e = ref.dyadic(a)
    lk = ra.leaky_relu_int(xq, m, e, 1)
    m, e = ref.dyadic(np.abs(slopes.reshape(-1)).astype(np.float64))
    want = ra.leaky_relu_int(lk, m, e, np.where(slopes.reshape(-1) < 0, -1, 1), axis=1)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, c.s("x")))
    # x rounded to int8 and two slope products each rounded to a step (relative to |y|: ~1 %)
    near_fp32(got, want_f, 0.03)
    assert float_scan.float_ops(c.mod) == []


# ----------------------------------------------------------------------------- per-channel constant scale
def test_layer_scale_is_a_per_channel_scale_of_the_same_integers(rng):
    """A ViT's layer scale ``x * gamma`` (gamma per channel, some negative): the integers times
    sign(gamma), dequantised at ``s_x * |gamma|`` -- bit for bit, no rounding added."""
    gamma = np.array([0.5, -0.02, 3.0, 1e-4, -1.5, 0.25], np.float32)
    c = compiled(rng, [helper.make_node("Mul", ["x", "g"], ["y"])], (1, 5, 6), [("g", gamma)])
    x = rand(rng, (1, 5, 6), 2.0)
    xq, want_f = only_input(c, x)
    (got,) = c.run(x)
    want = deq(xq.astype(np.int32) * np.sign(gamma).astype(np.int32), c.s("x") * np.abs(gamma.astype(np.float64)))
    np.testing.assert_array_equal(got, want)
    near_fp32(got, want_f, 0.01)  # only x's int8 rounding
    assert float_scan.float_ops(c.mod) == []


def test_layer_scale_on_a_residual_branch(rng):
    """``x + gamma * (x W)``: the per-channel scale feeds the residual add (requantised there)."""
    gamma, w = np.array([0.1, -0.3, 0.02, 0.7], np.float32), rand(rng, (4, 4), 0.5)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Mul", ["m", "g"], ["s"]),
             helper.make_node("Add", ["x", "s"], ["y"])]
    c = compiled(rng, nodes, (1, 7, 4), [("w", w), ("g", gamma)])
    x = rand(rng, (1, 7, 4), 1.0)  # inside the calibrated range of the sum (spread 2.0 there)
    (got,) = c.run(x)
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.03)  # x, W, the product and the sum each rounded once
    assert float_scan.float_ops(c.mod) == []


def test_multiply_by_a_constant_with_a_zero_channel_has_no_integer_form(rng):
    mod = onnx_mod([helper.make_node("Mul", ["x", "g"], ["y"])], (1, 3, 4), [("g", np.array([1.0, 0.0, 2.0, 1.0], np.float32))])
    with pytest.raises(Exception, match="no integer form for relax.multiply"):
        Compiled(mod, [{"x": rand(rng, (1, 3, 4), 2.0)} for _ in range(3)])


# ----------------------------------------------------------------------------- gating, softmax, masks
def test_squeeze_excite_gating(rng):
    """MobileNetV3's SE block: x * HardSigmoid(conv(relu(conv(mean(x))))) (product of two activations)."""
    C = 8
    w1, w2 = rand(rng, (4, C, 1, 1), 0.5), rand(rng, (C, 4, 1, 1), 0.5)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Conv", ["p", "w1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r"]), helper.make_node("Conv", ["r", "w2"], ["c2"]),
             helper.make_node("HardSigmoid", ["c2"], ["g"], alpha=0.2, beta=0.5), helper.make_node("Mul", ["x", "g"], ["y"])]
    c = compiled(rng, nodes, (1, C, 6, 6), [("w1", w1), ("w2", w2)])
    x = rand(rng, (1, C, 6, 6), 2.0)
    (got,) = c.run(x)
    # x at int8, the pooled vector at int16, two int8 convs, the gate rounded inwards to its step
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.04)
    assert float_scan.float_ops(c.mod) == []
    assert any(r["op"] == "int_mean" for r in c.report.rows)


def test_softmax_on_a_non_last_axis(rng):
    c = compiled(rng, [helper.make_node("Softmax", ["x"], ["y"], axis=1)], (2, 7, 3), spread=3.0)
    x = rand(rng, (2, 7, 3), 3.0)
    xq, want_f = only_input(c, x)
    row = c.row("shiftmax")
    assert row["axis"] == 1 and row["in_scale"] == c.s("x")
    want = np.moveaxis(ref.shiftmax(np.moveaxis(xq, 1, -1), c.s("x"), 12), -1, 1)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, 2.0**-7))
    # as test_integerize.test_shiftmax: a 2^-7 grid, ShiftMax's exponent, x's int8 step
    near_fp32(got, want_f, atol=0.05)


@pytest.mark.parametrize("sentinel", [-np.inf, -float(np.finfo(np.float32).max)])
def test_constant_additive_mask(rng, sentinel):
    """scores + a constant causal mask of -inf (or -FLT_MAX) above the diagonal, then softmax
    (-inf as a Relax constant: the ONNX frontend refuses non-finite weights)."""
    from test_integerize import emit, graph

    mask = np.triu(np.full((5, 5), sentinel, np.float32), 1)
    if np.isfinite(sentinel):
        nodes = [helper.make_node("Add", ["x", "mask"], ["sc"]), helper.make_node("Softmax", ["sc"], ["y"], axis=-1)]
        mod = onnx_mod(nodes, (2, 5, 5), [("mask", mask)])
    else:
        mod = graph(lambda bb, x: emit(bb, relax.op.nn.softmax(emit(bb, relax.op.add(x, relax.const(mask)), "lv"), -1), "gv"), x=(2, 5, 5))
    c = Compiled(mod, [{"x": rand(rng, (2, 5, 5), 2.0)} for _ in range(3)])
    x = rand(rng, (2, 5, 5), 2.0)
    xq, want_f = only_input(c, x)
    cap = max(c.s(named(c, "relax.add"), 16) * 2.0**20, 64.0)
    acc = xq.astype(np.int64) + rq.bias_codes(np.where(np.abs(mask) < 1e30, mask, -cap), c.s("x"))
    row = c.row("shiftmax")
    want = ref.shiftmax(ref.requantize(acc, *ref.dyadic(c.s("x") / row["in_scale"]), row["in_bits"]), row["in_scale"], 12)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, 2.0**-7))
    assert np.all(want[:, np.triu(np.ones((5, 5), bool), 1)] == 0)  # masked: no probability at all
    near_fp32(got, want_f, atol=0.05)
    assert any("masking constant" in n for n in c.report.notes)


def test_gelu_tanh_form_is_the_integer_gelu(rng):
    from test_integerize import graph, emit

    mod = graph(lambda bb, x: emit(bb, relax.op.nn.gelu_tanh(x), "y"), x=(4, 32))
    c = Compiled(mod, [{"x": rand(rng, (4, 32), 2.0)} for _ in range(3)])
    x = rand(rng, (4, 32), 2.0)
    xq, want_f = only_input(c, x)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(ref.shift_gelu(xq, c.s("x"), 23), c.s("x") * 2.0**-15))
    # as test_integerize.test_shift_gelu (the tanh form is within 1e-3 of the erf form)
    near_fp32(got, want_f, atol=0.1)


def test_softmax_over_a_long_row_takes_the_wide_reciprocal(rng):
    """A 2000-class softmax (PP-OCRv4's recogniser has 6625): n = 12 would floor every exponential
    at 2^-13 of the max's (the tail alone outweighing it) and its sum needs > 31 bits, so the rule
    takes n = 20 with a 62-bit reciprocal."""
    from test_integerize import emit, graph

    W = rand(rng, (16, 2000), 0.5)
    mod = graph(lambda bb, x: emit(bb, relax.op.nn.softmax(emit(bb, relax.op.matmul(x, relax.const(W)), "h"), -1), "y"), x=(3, 16))
    c = Compiled(mod, [{"x": rand(rng, (3, 16))} for _ in range(3)])
    row = c.row("shiftmax")
    assert (row["n"], row["f_bits"]) == (20, 62)
    x = rand(rng, (3, 16))
    w, sw = iq.weight_codes(W, axis=1)
    acc = rq.quantize(x, c.s("x"), 8).astype(np.int64) @ w
    h = ref.requantize(acc, *ref.dyadic(c.s("x") * sw / row["in_scale"]), row["in_bits"], axis=-1)
    want = ref.shiftmax(h, row["in_scale"], 20, f_bits=62)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, 2.0**-7))
    # probabilities on a 2^-7 grid (most are below half a step and round to 0); x and W at int8
    want_f = c.fp32(c.saturated(x))[0]
    near_fp32(got, want_f, atol=0.05)
    assert np.array_equal(got.argmax(-1), want_f.argmax(-1))
