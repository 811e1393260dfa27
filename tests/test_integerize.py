"""integerize: every rewritten op, built by the pass and run by TVM, matches the composition of
``shiftc.reference`` functions on the same integers, bit for bit (outputs compared with ==).

That alone would pass a rewrite that is wrong in the same way as the helpers the expectations are
built from, so every test also bounds the dequantised integer output against the FP32 model (the
Relax float module before integerize, compiled by TVM) on the same inputs: ``near_fp32``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from shiftc import calibrate
from shiftc import reference as ref
from shiftc.core.errors import UnsupportedModelError
from shiftc.passes import float_scan
from shiftc.kernels import quant as kq
from shiftc.passes.integerize import IntOptions, integerize
from shiftc.passes.integerize import scales as iq
from shiftc.reference import quant as rq
from shiftc.targets.x86 import flatten_outputs

F32 = "float32"


def graph(body, **shapes):
    """A float32 Relax ``main`` over the named inputs; ``body(bb, *params)`` returns the output."""
    bb = relax.BlockBuilder()
    params = [relax.Var(n, relax.TensorType(s, F32)) for n, s in shapes.items()]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def _vm(mod):
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(ex, tvm.cpu())


def run_vm(vm, *xs):
    return flatten_outputs(vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in xs]))


def fp32(mod, *xs):
    """The FP32 model (the float Relax module) on ``xs``."""
    return run_vm(_vm(mod), *xs)


def near_fp32(got, want, rel_l2=None, atol=None):
    """The float-model bound: ``||got - want||_2 <= rel_l2 * ||want||_2`` and/or
    ``max |got - want| <= atol`` (for outputs on a fixed grid, e.g. probabilities: output steps).

    Each test states its bound from the scales involved. The yardstick: rounding a value to a step
    ``s`` errs by at most ``s/2`` (RMS ``s/sqrt(12)``), so an int8 tensor whose values fill
    ``[-127 s, 127 s]`` with RMS about a third of that range carries a relative RMS error near
    ``1/(sqrt(12) * 127/3)`` ~ 0.7 %; every int8 rounding on the path (input, weights,
    requantised intermediates, output) adds about that much, in quadrature when independent. The
    bounds are a few times that sum: loose enough for rounding, far below what a wrong rewrite gives
    (a wrong scale or sign, a dropped bias, a transposed weight: tens of %).
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    rel = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12)
    worst = np.abs(got - want).max()
    assert rel_l2 is None or rel <= rel_l2, f"relative L2 error vs FP32 {rel:.4g} > {rel_l2}"
    assert atol is None or worst <= atol, f"max |error| vs FP32 {worst:.4g} > {atol}"


class Compiled:
    """The integerized module, built once; ``run(x)`` returns its outputs, ``fp32(x)`` the float
    model's (the module before integerize)."""

    def __init__(self, mod, samples, **opts):
        self.float_mod = mod
        self.calib = calibrate.calibrate(mod, samples)
        self.mod, self.report = integerize(mod, self.calib, IntOptions(**opts))
        self.vm = _vm(self.mod)
        self._float_vm = None

    def run(self, *xs):
        return run_vm(self.vm, *xs)

    def fp32(self, *xs):
        if self._float_vm is None:
            self._float_vm = _vm(self.float_mod)
        return run_vm(self._float_vm, *xs)

    def saturated(self, x, name="x", bits=8):
        """``x`` clipped to the range its input quantiser represents (what the integer model sees)."""
        s = self.s(name, bits)
        return np.clip(x, -(2 ** (bits - 1)) * s, (2 ** (bits - 1) - 1) * s).astype(np.float32)

    def s(self, name, bits=8, unsigned=False):
        return self.calib.scale(name, bits, unsigned)

    def row(self, op):
        return next(r for r in self.report.rows if r["op"] == op)


def deq(q, scale):
    """The output dequantiser in NumPy (float32 product, as the kernel)."""
    return q.astype(np.float32) * np.asarray(scale, np.float32)


def rand(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def emit(bb, expr, name):
    return bb.emit(expr, name_hint=name)


# ----------------------------------------------------------------------------- boundary
@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-300, 300, width=32), min_size=1, max_size=64), st.floats(1e-3, 2.0))
def test_quantize_te_matches_numpy(values, scale):
    x = np.asarray(values, np.float32)
    q_np = rq.quantize(x, scale, 8)
    assert q_np.dtype == np.int8 and q_np.min() >= -128 and q_np.max() <= 127
    q_tvm = _quantize_kernel(len(x), scale)(x)
    np.testing.assert_array_equal(q_tvm, q_np)
    # float bound: dequantised, within half a step of x as the int8 range saturates it (plus the
    # float32 rounding of 1/scale and of the product)
    sat = np.clip(x, -128 * np.float32(scale), 127 * np.float32(scale))
    assert np.all(np.abs(deq(q_tvm, scale) - sat) <= 0.5 * scale * (1 + 1e-5) + 1e-6 * np.abs(sat))


_QK = {}


def _quantize_kernel(n, scale):
    from tvm import te

    key = (n, float(np.float32(1.0 / scale)))
    if key not in _QK:
        a = te.placeholder((n,), F32, name="a")
        f = tvm.compile(te.create_prim_func([a, kq.quantize(a, scale, 8)]), target=tvm.target.Target({"kind": "llvm"}))
        _QK.clear()
        _QK[key] = f
    f = _QK[key]

    def run(x):
        out = tvm.runtime.tensor(np.zeros(n, np.int8))
        f(tvm.runtime.tensor(x), out)
        return out.numpy()

    return run


def test_round_half_up_ties():
    # 0.5 -> 1, -0.5 -> 0, 1.5 -> 2, -1.5 -> -1 (one rounding mode, CONTRACTS.md)
    np.testing.assert_array_equal(rq.quantize(np.array([0.5, -0.5, 1.5, -1.5, 300, -300], F32), 1.0, 8), [1, 0, 2, -1, 127, -128])


# ----------------------------------------------------------------------------- linear + requant
def test_matmul_relu_matmul_per_channel_requant(rng):
    W1, b1 = rand(rng, (16, 32), 0.3), rand(rng, (32,), 0.1)
    W2, b2 = rand(rng, (32, 8), 0.3), rand(rng, (8,), 0.1)

    def body(bb, x):
        h = emit(bb, relax.op.add(emit(bb, relax.op.matmul(x, relax.const(W1)), "m1"), relax.const(b1)), "h")
        r = emit(bb, relax.op.nn.relu(h), "r")
        return emit(bb, relax.op.add(relax.const(b2), emit(bb, relax.op.matmul(r, relax.const(W2)), "m2")), "y")

    mod = graph(body, x=(4, 16))
    samples = [{"x": rand(rng, (4, 16))} for _ in range(4)]
    c = Compiled(mod, samples)
    x = rand(rng, (4, 16), 1.3)  # beyond the calibrated range: saturation is exercised too
    assert "r" in c.calib.nonnegative  # after ReLU: uint8 codes [0, 255] at T / 255 into the second matmul
    sx, sr = c.s("x"), c.s("r", unsigned=True)
    w1, sw1 = iq.weight_codes(W1, axis=1)
    w2, sw2 = iq.weight_codes(W2, axis=1)
    acc1 = rq.quantize(x, sx, 8).astype(np.int64) @ w1 + rq.bias_codes(b1, sx * sw1)
    m, e = ref.dyadic(sx * sw1 / sr)
    r8 = ref.requantize(np.maximum(acc1, 0), m, e, 8, axis=-1, unsigned=True)
    acc2 = r8.astype(np.int64) @ w2 + rq.bias_codes(b2, sr * sw2)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(acc2, sr * sw2))
    # x, W1, r and W2 each rounded to int8 (four roundings of ~0.7 % RMS), and since x is 1.3x the
    # calibrated spread, r (calibrated on the 1.0x samples) saturates in its tail too: ~5 % measured
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.08)
    assert float_scan.float_ops(c.mod) == []


def test_conv2d_maxpool_mean(rng):
    W, b = rand(rng, (6, 3, 3, 3), 0.3), rand(rng, (6,), 0.1)

    def body(bb, x):
        cv = emit(bb, relax.op.nn.conv2d(x, relax.const(W), padding=1), "cv")
        h = emit(bb, relax.op.add(cv, relax.const(b.reshape(1, 6, 1, 1))), "h")
        p = emit(bb, relax.op.nn.max_pool2d(emit(bb, relax.op.nn.relu(h), "r"), (2, 2), (2, 2)), "p")
        return emit(bb, relax.op.mean(p, axis=[2, 3], keepdims=False), "y")

    mod = graph(body, x=(1, 3, 8, 8))
    c = Compiled(mod, [{"x": rand(rng, (1, 3, 8, 8))} for _ in range(3)])
    x = rand(rng, (1, 3, 8, 8))
    sx, sp = c.s("x"), c.s("p", 16)
    w, sw = iq.weight_codes(W, axis=0)
    xq = rq.quantize(x, sx, 8).astype(np.int64)
    acc = _conv_nchw(xq, w.astype(np.int64), 1) + rq.bias_codes(b, sx * sw).reshape(1, 6, 1, 1)
    pooled = np.maximum(acc, 0).reshape(1, 6, 4, 2, 4, 2).max(axis=(3, 5))
    m, e = ref.dyadic(sx * sw / sp)
    p16 = ref.requantize(pooled, m, e, 16, axis=1)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(ref.int_mean(p16, axis=(2, 3)), sp))
    # x and W rounded to int8, the pooled values to int16 (negligible); mean of 16 values
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.03)


def _conv_nchw(x, w, pad):
    n, ci, h, wd = x.shape
    co, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, co, h, wd), np.int64)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i : i + h, j : j + wd], w[:, :, i, j])
    return out


def test_activation_matmul_and_scalar_scale(rng):
    def body(bb, a, b):
        s = emit(bb, relax.op.matmul(a, emit(bb, relax.op.permute_dims(b, [1, 0]), "bt")), "s")
        return emit(bb, relax.op.multiply(s, relax.const(0.25, F32)), "y")

    mod = graph(body, a=(5, 8), b=(6, 8))
    c = Compiled(mod, [{"a": rand(rng, (5, 8)), "b": rand(rng, (6, 8))} for _ in range(2)])
    a, b = rand(rng, (5, 8)), rand(rng, (6, 8))
    sa, sb = c.s("a"), c.s("b")
    acc = rq.quantize(a, sa, 8).astype(np.int64) @ rq.quantize(b, sb, 8).astype(np.int64).T
    (got,) = c.run(a, b)
    np.testing.assert_array_equal(got, deq(acc, sa * sb * 0.25))
    # a and b rounded to int8, accumulated exactly, scaled by 0.25 exactly
    near_fp32(got, c.fp32(c.saturated(a, "a"), c.saturated(b, "b"))[0], 0.03)


# ----------------------------------------------------------------------------- residual add
def test_residual_add_int(rng):
    W = rand(rng, (8, 8), 0.4)

    def body(bb, x):
        h = emit(bb, relax.op.matmul(x, relax.const(W)), "h")
        return emit(bb, relax.op.add(x, h), "y")

    mod = graph(body, x=(3, 8))
    c = Compiled(mod, [{"x": rand(rng, (3, 8))} for _ in range(3)])
    x = rand(rng, (3, 8))
    sx, sh, sy = c.s("x"), c.s("h", 16), c.s("y", 16)
    w, sw = iq.weight_codes(W, axis=1)
    xq = rq.quantize(x, sx, 8)
    m, e = ref.dyadic(sx * sw / sh)
    h16 = ref.requantize(xq.astype(np.int64) @ w, m, e, 16, axis=-1)
    y = ref.add_int(xq, sx, h16, sh, sy, 16)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(y, sy))
    # x and W rounded to int8, h and y to int16 (negligible)
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.03)


def test_float_bound_fails_a_self_consistent_error(rng):
    """The FP32 bound is what catches a rewrite that is wrong the same way as the reference helpers:
    the residual add's output off by a quarter of its scale, or with the residual dropped, fails it."""
    W = rand(rng, (8, 8), 0.4)
    mod = graph(lambda bb, x: emit(bb, relax.op.add(x, emit(bb, relax.op.matmul(x, relax.const(W)), "h")), "y"), x=(3, 8))
    c = Compiled(mod, [{"x": rand(rng, (3, 8))} for _ in range(3)])
    x = rand(rng, (3, 8))
    (got,) = c.run(x)
    (want,) = c.fp32(c.saturated(x))
    near_fp32(got, want, 0.03)
    for wrong in (got * 1.25, got - x):
        with pytest.raises(AssertionError, match="relative L2"):
            near_fp32(wrong, want, 0.03)


# ----------------------------------------------------------------------------- non-linear
def _chain(rng, make, shape, scale=2.0, n=3, **opts):
    mod = graph(lambda bb, x: emit(bb, make(x), "y"), x=shape)
    c = Compiled(mod, [{"x": rand(rng, shape, scale)} for _ in range(n)], **opts)
    return c


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.2, 6.0))
def test_shiftmax(seed, spread):
    c = _SOFTMAX.get()
    x = rand(np.random.default_rng(seed), (4, 49), spread)
    row = c.row("shiftmax")
    sx = c.s("x")
    assert row["in_scale"] == sx and row["x0"] == ref.exp_x0(sx, 12)
    want = ref.shiftmax(rq.quantize(x, sx, 8), sx, 12)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, 2.0**-7))
    # probabilities on a 2^-7 grid: half a step of output rounding, the int8 input (a step of x
    # moves a probability p by about s_x * p, s_x ~ 0.07) and ShiftMax's shift-only exponent (its
    # log2(e) ~ 1 + 1/2 - 1/16 and the 2^-12 resolution: a few % of the largest probability at wide
    # spreads); measured <= 3.5 steps, bounded at 0.05 (6.4 steps, 5 % of probability mass; a wrong
    # scale or sign moves the top probability by tens of %). Relative L2 does not fit here: at small
    # spreads p ~ 1/49 is a couple of grid steps.
    near_fp32(got, c.fp32(c.saturated(x))[0], atol=0.05)


class _Lazy:
    def __init__(self, make):
        self.make, self.value = make, None

    def get(self):
        if self.value is None:
            self.value = self.make()
        return self.value


_SOFTMAX = _Lazy(lambda: _chain(np.random.default_rng(1), lambda x: relax.op.nn.softmax(x, -1), (4, 49), 3.0))
_GELU = _Lazy(lambda: _chain(np.random.default_rng(2), relax.op.nn.gelu, (4, 32), 2.0))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.1, 3.0))
def test_shift_gelu(seed, spread):
    c = _GELU.get()
    x = rand(np.random.default_rng(seed), (4, 32), spread)
    row = c.row("shift_gelu")
    sx = c.s("x")
    want = ref.shift_gelu(rq.quantize(x, sx, 8), row["in_scale"], 23)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, sx * 2.0**-15))
    # ShiftGELU is x * sigmoid(1.702 x) with a base-2 sigmoid (I-ViT): x * sigmoid(1.702 x) is within
    # 0.02 of erf-GELU, the base-2 sigmoid adds up to ~0.03, the int8 input half a step (s_x/2 ~ 0.03
    # for the calibrated range ~7): 0.1 in all (~1.5 % of the output range; a sign or scale error is
    # O(1)). Relative L2 does not fit: at spread 0.1 the output is a couple of input steps.
    near_fp32(got, c.fp32(c.saturated(x))[0], atol=0.1)


def test_lambda_shift_gelu_requantised_input(rng):
    # GELU after a matmul: the int32 accumulator is requantised to the widest legal width first
    W = rand(rng, (16, 24), 0.3)
    mod = graph(lambda bb, x: emit(bb, relax.op.nn.gelu(emit(bb, relax.op.matmul(x, relax.const(W)), "h")), "y"), x=(3, 16))
    samples = [{"x": rand(rng, (3, 16))} for _ in range(3)]
    probe = calibrate.collect(mod, samples, ["h"], "percentile")
    terms = ref.calibrate_lambda(probe["h"].values())
    c = Compiled(mod, samples, gelu="lambda", lambdas={"h": terms})
    row = c.row("lambda_shift_gelu")
    bits = row["in_bits"]
    assert bits > 8  # a requantised, wider input
    x = rand(rng, (3, 16))
    sx, sh = c.s("x"), c.s("h", bits)
    assert row["in_scale"] == sh
    w, sw = iq.weight_codes(W, axis=1)
    m, e = ref.dyadic(sx * sw / sh)
    h = ref.requantize(rq.quantize(x, sx, 8).astype(np.int64) @ w, m, e, bits, axis=-1)
    want = ref.lambda_shift_gelu(h, sh, terms)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, sh * 2.0**-15))
    # and it is a GELU: within the stated bound of erf-GELU plus the input quantisation step
    exact = ref.gelu_erf(h * sh)
    assert np.abs(got - exact).max() <= ref.lambda_gelu_bound(terms) + 1e-6
    # and against the FP32 model (erf-GELU of the float matmul): x and W rounded to int8 on top
    near_fp32(got, c.fp32(x)[0], 0.05)


def test_i_gelu_requantised_input(rng):
    # --gelu ibert: the matmul's int32 accumulator requantised to int16 (the widest width whose clip
    # code fits), then I-BERT's i-GELU; bit for bit the reference composition, and within the stated
    # bound of erf-GELU
    W = rand(rng, (16, 24), 0.3)
    mod = graph(lambda bb, x: emit(bb, relax.op.nn.gelu(emit(bb, relax.op.matmul(x, relax.const(W)), "h")), "y"), x=(3, 16))
    samples = [{"x": rand(rng, (3, 16))} for _ in range(3)]
    c = Compiled(mod, samples, gelu="ibert")
    row = c.row("i_gelu")
    assert row["in_bits"] == 16
    x = rand(rng, (3, 16))
    sx, sh = c.s("x"), c.s("h", 16)
    assert row["in_scale"] == sh
    w, sw = iq.weight_codes(W, axis=1)
    m, e = ref.dyadic(sx * sw / sh)
    h = ref.requantize(rq.quantize(x, sx, 8).astype(np.int64) @ w, m, e, 16, axis=-1)
    want, s_out = ref.i_gelu(h, sh)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, s_out))
    assert np.abs(got - ref.gelu_erf(h * sh)).max() <= ref.IGELU_BOUND + 1e-6
    # against the FP32 model: x and W rounded to int8 on top of the 0.02 approximation
    near_fp32(got, c.fp32(x)[0], 0.05)


def test_layernorm_gamma_beta_folded(rng):
    C = 24
    g = rand(rng, (C,), 1.0)
    g[3] = -0.5  # a negative gamma takes the sign path
    bt = rand(rng, (C,), 0.2)
    mod = graph(lambda bb, x: emit(bb, relax.op.nn.layer_norm(x, relax.const(g), relax.const(bt), [-1]), "y"), x=(5, C))
    c = Compiled(mod, [{"x": rand(rng, (5, C), 2.0)} for _ in range(3)])
    x = rand(rng, (5, C), 2.0)
    sx, sy = c.s("x"), c.s("y")
    ln = ref.i_layernorm(rq.quantize(x, sx, 8))
    m, e = ref.dyadic(np.abs(g).astype(np.float64) * math.sqrt(C) * 2.0**-30 / sy)
    y = ref.requantize(ln * np.where(g < 0, -1, 1), m, e, 32, axis=-1).astype(np.int64) + rq.bias_codes(bt, sy)
    want = ref.saturate(y, 8)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, sy))
    exact = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + bt
    assert np.abs(got - exact).max() < 0.15  # sanity: it is a LayerNorm
    # x and the output rounded to int8 (a LayerNorm output spans ~[-3, 3] std: ~1 % RMS each), the
    # integer square root's rounding (< 1 %)
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.04)


def test_avgpool_nearest_upsample(rng):
    mod = graph(lambda bb, x: emit(bb, make_named(bb, x, "linear"), "y"), x=(1, 2, 8, 8))
    c = Compiled(mod, [{"x": rand(rng, (1, 2, 8, 8))} for _ in range(2)], upsample="nearest")
    x = rand(rng, (1, 2, 8, 8))
    sx = c.s("x")
    pooled = ref.int_avgpool2d(rq.quantize(x, sx, 8), 2)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(ref.nearest_upsample(pooled, 2), sx))
    assert any(r["op"] == "nearest_upsample" for r in c.report.rows)
    # upsample="nearest" changes the model (reported): the bound is against the FP32 model with
    # nearest upsampling, which it must match up to x's int8 rounding (and the pool's rounding to
    # the input step: half a step)
    def nearest(bb, x):
        p = emit(bb, relax.op.nn.avg_pool2d(x, (2, 2), (2, 2)), "p")
        return emit(bb, relax.op.image.resize2d(p, (8, 8), method="nearest_neighbor"), "y")

    near_fp32(got, fp32(graph(nearest, x=(1, 2, 8, 8)), c.saturated(x))[0], 0.03)


def make_named(bb, x, method="cubic"):
    p = emit(bb, relax.op.nn.avg_pool2d(x, (2, 2), (2, 2)), "p")
    return relax.op.image.resize2d(p, (8, 8), method=method)


def test_cubic_resize_is_unsupported_unless_fallback(rng):
    """Cubic resize has no integer form (bilinear and nearest do): refused, or a float island."""
    mod = graph(lambda bb, x: emit(bb, make_named(bb, x), "y"), x=(1, 2, 8, 8))
    samples = [{"x": rand(rng, (1, 2, 8, 8))}]
    calib = calibrate.calibrate(mod, samples)
    with pytest.raises(UnsupportedModelError, match="image.resize2d"):
        integerize(mod, calib, IntOptions(upsample="keep"))
    new, rep = integerize(mod, calib, IntOptions(upsample="keep", float_fallback=True))
    assert [f["op"] for f in rep.float_ops] == ["relax.image.resize2d"]
    # the scan sees the float island (it is not part of the boundary): its value and its kernels
    found = float_scan.float_ops(new)
    assert any(o.startswith("value") and "relax.image.resize2d" in o for o in found)
    assert any(o.startswith("kernel resize2d") for o in found)
    # the island computes the float op on the dequantised input: within x's and y's int8 rounding
    x = rand(rng, (1, 2, 8, 8))
    (got,) = fp32(new, x)
    near_fp32(got, fp32(mod, np.clip(x, -128 * calib.scale("x"), 127 * calib.scale("x")))[0], 0.03)


def test_l2norm_removed(rng):
    # a canonical l2_normalize (as passes/canonicalize emits it): a private function tagged shiftc.op
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((4, 8), F32))
    with bb.function("l2_normalize", [xv], attrs={"shiftc.op": "l2_normalize", "shiftc.axes": [1], "shiftc.eps": 0.0}, private=True):
        with bb.dataflow():
            n = bb.emit(relax.op.sqrt(bb.emit(relax.op.sum(bb.emit(relax.op.multiply(xv, xv)), [1], keepdims=True))))
            o = bb.emit_output(relax.op.divide(xv, n))
        bb.emit_func_output(o)
    gv = bb.get().get_global_var("l2_normalize")
    x = relax.Var("x", relax.TensorType((4, 8), F32))
    with bb.function("main", [x]):
        with bb.dataflow():
            t = bb.emit(relax.op.multiply(x, relax.const(3.0, F32)), name_hint="t")
            o = bb.emit_output(relax.Call(gv, [t]))
        bb.emit_func_output(o)
    mod = bb.get()
    samples = [{"x": rand(rng, (4, 8))}]
    calib = calibrate.calibrate(mod, samples)
    with pytest.raises(UnsupportedModelError, match="l2_normalize"):
        integerize(mod, calib, IntOptions())
    new, rep = integerize(mod, calib, IntOptions(l2norm="remove"))
    assert "l2_normalize" not in [g.name_hint for g in new.functions.keys()]
    ex = tvm.compile(new, target=tvm.target.Target({"kind": "llvm"}))
    xin = rand(rng, (4, 8))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xin)).numpy()
    sx = calib.scale("x")
    np.testing.assert_array_equal(got, deq(rq.quantize(xin, sx, 8), sx * 3.0))
    # l2norm="remove" drops the op (reported; for models where a scale-invariant op follows): the
    # float model it must match is the graph without it, 3 x, up to x's int8 rounding
    assert np.all(np.abs(got - 3.0 * np.clip(xin, -128 * sx, 127 * sx)) <= 3.0 * sx * 0.5 * (1 + 1e-5))
    # --float-fallback keeps it in float: the helper function stays in the module and runs
    kept, rep = integerize(mod, calib, IntOptions(float_fallback=True))
    assert [f["op"] for f in rep.float_ops] == ["l2_normalize"]
    ex = tvm.compile(kept, target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xin)).numpy()
    want = xin / np.linalg.norm(xin, axis=1, keepdims=True)
    # up to rounding and clipping at the calibrated ranges, before the float op and after it
    np.testing.assert_allclose(got, want, atol=0.05)


def test_concat_with_constant_and_split(rng):
    cls = rand(rng, (1, 2, 4))

    def body(bb, x):
        cat = emit(bb, relax.op.concat([x, relax.const(cls)], axis=1), "cat")
        parts = emit(bb, relax.op.split(cat, [3], axis=1), "parts")
        return emit(bb, relax.op.add(emit(bb, relax.TupleGetItem(parts, 1), "b"), relax.const(np.float32(0.5))), "y")

    mod = graph(body, x=(1, 3, 4))
    c = Compiled(mod, [{"x": rand(rng, (1, 3, 4))} for _ in range(2)])
    x = rand(rng, (1, 3, 4))
    sc = c.s("cat", 16)
    cat = np.concatenate([ref.requantize(rq.quantize(x, c.s("x"), 8), *ref.dyadic(c.s("x") / sc), 16), rq.quantize(cls, sc, 16)], axis=1)
    want = cat[:, 3:].astype(np.int64) + rq.bias_codes(np.float32(0.5), sc)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(want, sc))
    # x rounded to int8, re-expressed in cat's int16 step; the constant in int16 (negligible)
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.03)


# ----------------------------------------------------------------------------- pow2 requant
def test_pow2_requant_is_shift_only(rng):
    W1, W2 = rand(rng, (8, 16), 0.3), rand(rng, (16, 4), 0.3)

    def body(bb, x):
        r = emit(bb, relax.op.nn.relu(emit(bb, relax.op.matmul(x, relax.const(W1)), "h")), "r")
        return emit(bb, relax.op.matmul(r, relax.const(W2)), "y")

    mod = graph(body, x=(2, 8))
    c = Compiled(mod, [{"x": rand(rng, (2, 8))} for _ in range(2)], requant="pow2")
    x = rand(rng, (2, 8))
    sx, sr = rq.pow2_up(c.s("x")), rq.pow2_up(c.s("r"))
    w1, sw1 = iq.weight_codes(W1, 1, pow2=True)
    w2, sw2 = iq.weight_codes(W2, 1, pow2=True)
    assert all(rq.log2_exact(v) for v in [sx, sr, *sw1, *sw2])
    m, e = iq.requant_params(sx * sw1 / sr, pow2=True)
    assert np.all((m > 0) & ((m & (m - 1)) == 0)) and np.all((m == 1) | (e == 0))  # one shift each
    r8 = ref.requantize(np.maximum(rq.quantize(x, sx, 8).astype(np.int64) @ w1, 0), m, e, 8, axis=-1)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(r8.astype(np.int64) @ w2, sr * sw2))
    # power-of-two scales are up to 2x the calibrated ones (steps up to twice as coarse) for x, W1,
    # r, W2: twice the roundings of the matmul test
    near_fp32(got, c.fp32(np.clip(x, -128 * sx, 127 * sx))[0], 0.08)


# ----------------------------------------------------------------------------- unsupported ops
def test_unsupported_op_is_named(rng):
    mod = graph(lambda bb, x: emit(bb, relax.op.cos(x), "y"), x=(2, 3))
    calib = calibrate.calibrate(mod, [{"x": rand(rng, (2, 3))}])
    with pytest.raises(UnsupportedModelError, match=r"relax.cos \(1x\): value y "):
        integerize(mod, calib, IntOptions())


# ----------------------------------------------------------------------------- masks (BERT-style)
def test_additive_mask_softmax_and_masked_mean(rng):
    """int64 mask -> (1 - m) * -FLT_MAX added to scores -> softmax; and sum(x*m)/sum(m) pooling."""
    fmax = float(np.finfo(np.float32).max)

    def body(bb, x, m):
        mf = emit(bb, relax.op.astype(m, F32), "mf")
        neg = emit(bb, relax.op.multiply(emit(bb, relax.op.subtract(relax.const(1.0, F32), mf), "inv"), relax.const(-fmax, F32)), "neg")
        p = emit(bb, relax.op.nn.softmax(emit(bb, relax.op.add(x, neg), "sc"), -1), "p")
        num = emit(bb, relax.op.sum(emit(bb, relax.op.multiply(p, mf), "pm"), [1], keepdims=False), "num")
        den = emit(bb, relax.op.sum(mf, [1], keepdims=False), "den")
        return emit(bb, relax.op.divide(num, den), "y")

    bb = relax.BlockBuilder()
    xv, mv = relax.Var("x", relax.TensorType((3, 8), F32)), relax.Var("m", relax.TensorType((3, 8), "int64"))
    with bb.function("main", [xv, mv]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, xv, mv))
        bb.emit_func_output(out)
    mod = bb.get()
    mask = np.ones((3, 8), np.int64)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    samples = [{"x": rand(rng, (3, 8), 2.0), "m": mask} for _ in range(3)]
    calib = calibrate.calibrate(mod, samples)
    assert calib.thresholds["sc"] < 100  # the -FLT_MAX sentinels are not part of the range
    new, rep = integerize(mod, calib, IntOptions())
    assert float_scan.float_ops(new) == []
    ex = tvm.compile(new, target=tvm.target.Target({"kind": "llvm"}))
    x = rand(rng, (3, 8), 2.0)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(mask)).numpy()
    # reference composition
    sx, ssc = calib.scale("x"), calib.scale("sc", 16)
    # the mask operand's ratio is capped at 2^20 steps and the masked sum kept at int32; Shiftmax's
    # input range is the calibrated one plus 12 ln 2, so masked scores saturate below every row max
    sc = ref.add_int_dyadic(rq.quantize(x, sx, 8), *ref.dyadic(sx / ssc), -(1 - mask), *ref.dyadic(2.0**20), 32)
    row = next(r for r in rep.rows if r["op"] == "shiftmax")
    bits, s_in = row["in_bits"], row["in_scale"]
    assert s_in == (calib.thresholds["sc"] + 12 * math.log(2)) / rq.qmax(bits)
    z = ref.requantize(sc, *ref.dyadic(ssc / s_in), bits)
    p = ref.shiftmax(z, s_in, 12).astype(np.int64)
    num = np.sum(p * mask, axis=1)
    den = mask.sum(axis=1)
    k = next(r for r in rep.rows if r["op"] == "int_divide")["k"]
    # the dividend, a sum of 8 products of two int8-wide codes (|.| <= 2^17), has 13 bits of headroom in int32
    assert k == 13
    want = ((num << k) + den // 2) // den
    np.testing.assert_array_equal(got, deq(want, 2.0**-7 * 2.0**-k))
    # against the FP32 model: probabilities on a 2^-7 grid, ShiftMax's exponent, int8 x
    near_fp32(got, fp32(mod, np.clip(x, -128 * sx, 127 * sx), mask)[0], rel_l2=0.03, atol=2.0**-7)
    # masked entries get no probability
    assert np.all(p[mask == 0] == 0)


# ----------------------------------------------------------------------------- shift weights
@pytest.mark.parametrize("op", ["matmul", "conv2d"])
def test_shift_weights_run_as_int_shift_accumulate(rng, op):
    from shift_helpers import ShiftWeights

    from shiftc.passes import shift as S

    # with a bias add and a ReLU that the shift pass folds into its kernel's epilogue
    if op == "matmul":
        W, b = rand(rng, (16, 12), 0.3), rand(rng, (12,), 0.2)
        mod = graph(lambda bb, x: emit(bb, relax.op.nn.relu(emit(bb, relax.op.add(emit(bb, relax.op.matmul(x, relax.const(W)), "m"), relax.const(b)), "h")), "y"), x=(3, 16))
        shape = (3, 16)
    else:
        W, b = rand(rng, (5, 2, 3, 3), 0.3), rand(rng, (5,), 0.2)
        mod = graph(lambda bb, x: emit(bb, relax.op.nn.relu(emit(bb, relax.op.add(emit(bb, relax.op.nn.conv2d(x, relax.const(W), padding=1), "m"), relax.const(b.reshape(1, 5, 1, 1))), "h")), "y"), x=(1, 2, 6, 6))
        shape = (1, 2, 6, 6)
    layer = S.find_layers(mod)[0]
    cfg = S.ShiftConfig(4)
    mod = ShiftWeights({layer.name: cfg})(mod)
    codes, alpha = S.encode(layer, cfg)
    c = Compiled(mod, [{"x": rand(rng, shape)} for _ in range(2)])
    row = c.row(f"shift_{op}_int")
    P = int(np.abs(codes.astype(np.int64)).max()) - 1
    assert row["P"] == P and row["bits"] == 4
    x = rand(rng, shape)
    sx = c.s("x")
    xq = rq.quantize(x, sx, 8)
    if op == "matmul":
        acc = ref.shift_matmul_int(xq, codes[0], P)
        scale = sx * alpha.astype(np.float64) * 2.0**-P
    else:
        acc = ref.shift_conv2d_int(xq, codes[0], P, padding=1)
        scale = (sx * alpha.astype(np.float64) * 2.0**-P).reshape(1, -1, 1, 1)
    acc = np.maximum(acc.astype(np.int64) + rq.bias_codes(b.reshape(np.shape(scale)[1:] if op == "conv2d" else -1), scale), 0)
    (got,) = c.run(x)
    np.testing.assert_array_equal(got, deq(acc, scale))
    # the FP32 model is the float shift-weight model (weights exactly alpha * 2^-k codes, so only x
    # is rounded, to int8; the bias to the accumulator's step, negligible)
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.03)
    assert float_scan.float_ops(c.mod) == []
    kernel = next(f for g, f in mod.functions.items() if g.name_hint.startswith("shift_"))
    assert "shiftc.lo" in kernel.attrs  # the ReLU really was folded into the float kernel first


def test_all_zero_weight_channel_outputs_its_bias(rng):
    """A conv output channel whose weights are all zero gets alpha = 0 from the shift encoder and
    zero-free codes that are not zero: the integer path forces its sum to 0 and still represents
    its bias (no division by a zero scale)."""
    from shift_helpers import ShiftWeights

    from shiftc.passes import shift as S

    W, b = rand(rng, (4, 2, 3, 3), 0.3), np.array([0.1, -0.4, 0.25, 0.3], np.float32)
    W[1] = 0
    mod = graph(lambda bb, x: emit(bb, relax.op.add(emit(bb, relax.op.nn.conv2d(x, relax.const(W), padding=1), "m"),
                                                    relax.const(b.reshape(1, 4, 1, 1))), "y"), x=(1, 2, 5, 5))
    layer = S.find_layers(mod)[0]
    mod = ShiftWeights({layer.name: S.ShiftConfig(4)})(mod)
    codes, alpha = S.encode(layer, S.ShiftConfig(4))
    assert alpha[1] == 0 and np.all(codes[:, 1] != 0)  # the case: zero scale, non-zero codes
    c = Compiled(mod, [{"x": rand(rng, (1, 2, 5, 5))} for _ in range(2)])
    x = rand(rng, (1, 2, 5, 5))
    (got,) = c.run(x)
    assert np.all(np.isfinite(got))
    # against the float shift-weight model: x rounded to int8 (the codes are exact)
    near_fp32(got, c.fp32(c.saturated(x))[0], 0.03)
    np.testing.assert_allclose(got[0, 1], -0.4, atol=1e-3)  # bias only, at the layer's output scale
    assert any("all-zero weight channel" in n for n in c.report.notes)
