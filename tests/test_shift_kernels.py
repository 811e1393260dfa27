"""Shift kernels (schedules/shift_kernels.py) against the NumPy reference.

Float path: <= 1e-6 relative L2 against ``shiftc.reference.shift_float`` (FTZ semantics).
Integer path (shift form and int dot-product form): bit-exact against ``shiftc.reference.shift``.
"""

import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from tvm import te

from benchmarks.dot_kernels import shift_conv2d_int_dot, shift_matmul_int_dot
from shiftc.reference import shift as R
from shiftc.reference import shift_float as RF
from shiftc.kernels import shift as K
from shiftc.schedules.shift_form import int_kernel_form
from shiftc.schedules.shift_schedule import schedule_cpu

TARGET = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
DEV = tvm.cpu()
rng = np.random.default_rng(7)


def run(func, arrays, out_shape, out_dtype):
    lib = tvm.compile(tvm.IRModule({"main": func}), target=TARGET)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), DEV) for a in arrays]
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype), DEV)
    lib["main"](*args, out)
    return out.numpy()


def rel(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def encode(w, bits, terms, zero_free):
    if terms == 1:
        codes, alpha = R.encode_pot(w, bits, zero_free)
        return codes[None], alpha
    return R.encode_multi(w, terms, bits, zero_free)


def code_input(codes, bits, zero_free, packed):
    if packed:
        data = np.frombuffer(R.pack_codes(codes, bits, zero_free) + b"\0", np.uint8).copy()
        return data, te.placeholder(data.shape, "uint8", "w")
    return codes, te.placeholder(codes.shape, "int8", "w")


CONV_CASES = [
    # (N, C, H, W, O, kh, kw, stride, padding(t,l,b,r), dilation, groups)
    (1, 3, 11, 9, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (2, 6, 9, 11, 4, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2), 2),  # odd shapes, groups, asym padding, dilation
    (1, 8, 7, 7, 8, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 8),  # depthwise, stride 2
    (1, 5, 6, 6, 7, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # pointwise
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bits,terms,zero_free,packed,scheduled", [(4, 1, True, True, True), (3, 2, False, False, False), (5, 1, False, True, True)])
def test_float_conv2d_matches_ftz_reference(case, bits, terms, zero_free, packed, scheduled):
    n, c, h, w, o, kh, kw, stride, pad, dil, g = case
    x = rng.normal(size=(n, c, h, w)).astype(np.float32)
    wt = rng.normal(size=(o, c // g, kh, kw)).astype(np.float32)
    codes, alpha = encode(wt, bits, terms, zero_free)
    data, W = code_input(codes, bits, zero_free, packed)
    X = te.placeholder(x.shape, "float32", "x")
    A = te.placeholder(alpha.shape, "float32", "alpha")
    Y = K.shift_conv2d_float(X, W, A, weight_shape=wt.shape, terms=terms, bits=bits, zero_free=zero_free, packed=packed,
                             stride=stride, padding=pad, dilation=dil, groups=g)
    func = te.create_prim_func([X, W, A, Y])
    got = run(schedule_cpu(func) if scheduled else func, [x, data, alpha], [int(d) for d in Y.shape], "float32")
    want = RF.shift_conv2d_float_ftz(x, codes, alpha, stride, pad, dil, g)
    assert got.shape == want.shape
    assert rel(got, want) <= 1e-6


@pytest.mark.parametrize("lead,k,o,terms,packed", [((1,), 13, 7, 1, True), ((2, 3), 29, 17, 2, True), ((5,), 64, 48, 1, False)])
def test_float_matmul_matches_ftz_reference(lead, k, o, terms, packed):
    x = rng.normal(size=(*lead, k)).astype(np.float32)
    wt = rng.normal(size=(o, k)).astype(np.float32)
    codes, alpha = encode(wt, 4, terms, True)
    data, W = code_input(codes, 4, True, packed)
    X = te.placeholder(x.shape, "float32", "x")
    A = te.placeholder(alpha.shape, "float32", "alpha")
    Y = K.shift_matmul_float(X, W, A, out_features=o, terms=terms, bits=4, zero_free=True, packed=packed)
    got = run(schedule_cpu(te.create_prim_func([X, W, A, Y])), [x, data, alpha], (*lead, o), "float32")
    assert rel(got, RF.shift_matmul_float_ftz(x, codes, alpha)) <= 1e-6


def test_float_ftz_edges_exact():
    """Zero, subnormal and underflowing activations give exactly the FTZ reference terms."""
    tiny = np.float32(np.ldexp(1.0, -125))  # exponent field 2: p >= 2 underflows
    x = np.array([[0.0, -0.0, 1e-40, tiny, -tiny, 1.5, -3.0, 2.0**100]], np.float32)
    codes = np.array([[[1, -1, 2, 3, 2, -8, 8, 5]]], np.int8)  # zero-free 4-bit: p = |c| - 1
    alpha = np.ones(1, np.float32)
    X = te.placeholder(x.shape, "float32", "x")
    W = te.placeholder(codes.shape, "int8", "w")
    A = te.placeholder((1,), "float32", "alpha")
    terms = []
    for i in range(x.shape[1]):  # one term at a time: exact, no summation rounding
        xi = np.zeros_like(x)
        xi[0, i] = x[0, i]
        Y = K.shift_matmul_float(X, W, A, out_features=1, terms=1, bits=4, zero_free=True, packed=False)
        got = run(te.create_prim_func([X, W, A, Y]), [xi, codes, alpha], (1, 1), "float32")
        want = RF.shift_matmul_float_ftz(xi, codes, alpha)
        assert got.tobytes() == want.tobytes(), (i, got, want)
        terms.append(float(want[0, 0]))
    assert terms[:4] == [0.0, 0.0, 0.0, 0.0]  # zeros, a subnormal, and 2^-125 * 2^-2 (would be subnormal)
    assert terms[4:] == [-(2.0**-126), -1.5 * 2.0**-7, -3.0 * 2.0**-7, 2.0**96]  # 2^-126 is still normal


@settings(max_examples=30, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.integers(-8, 8).filter(lambda c: c != 0))
def test_ftz_reference_is_ldexp_unless_subnormal(x, code):
    got = RF.ftz_terms(np.array([x], np.float32), np.array([code], np.int8))[0]
    exact = np.sign(code) * np.ldexp(np.float64(np.float32(x)), -(abs(code) - 1))
    if exact == 0 or abs(exact) < np.finfo(np.float32).tiny:
        assert got == 0.0
    else:
        assert got == exact


@pytest.mark.parametrize("case", CONV_CASES[:3])
@pytest.mark.parametrize("bits,zero_free,packed", [(5, False, True), (4, True, False)])
def test_int_conv2d_bit_exact_shift_and_dot(case, bits, zero_free, packed):
    n, c, h, w, o, kh, kw, stride, pad, dil, g = case
    x = rng.integers(-128, 128, size=(n, c, h, w)).astype(np.int8)
    codes, _ = R.encode_pot(rng.normal(size=(o, c // g, kh, kw)), bits, zero_free)
    P = int(np.abs(codes.astype(int)).max() - 1)
    want = R.shift_conv2d_int(x, codes, P, stride, pad, dil, g)
    data, W = code_input(codes[None], bits, zero_free, packed)
    X = te.placeholder(x.shape, "int8", "x")
    conv = dict(stride=stride, padding=pad, dilation=dil, groups=g)
    Y = K.shift_conv2d_int(X, W, weight_shape=codes.shape, P=P, bits=bits, zero_free=zero_free, packed=packed, **conv)
    got = run(schedule_cpu(te.create_prim_func([X, W, Y])), [x, data], want.shape, "int32")
    np.testing.assert_array_equal(got, want)
    wd = K.dot_weights(codes[None], P)
    D = te.placeholder(wd.shape, str(wd.dtype), "wdot")
    Y = shift_conv2d_int_dot(X, D, P=P, **conv)
    np.testing.assert_array_equal(run(te.create_prim_func([X, D, Y]), [x, wd], want.shape, "int32"), want)


def test_int_matmul_bit_exact_multi_term_and_extremes():
    x = rng.integers(-128, 128, size=(3, 37)).astype(np.int8)
    x[0] = -128  # worst case magnitude
    codes, _ = R.encode_multi(rng.normal(size=(11, 37)), 2, 4, False)
    P = 6
    want = R.shift_matmul_int_multi(x, codes, P)
    X = te.placeholder(x.shape, "int8", "x")
    data, W = code_input(codes, 4, False, True)
    Y = K.shift_matmul_int(X, W, out_features=11, P=P, terms=2, bits=4, zero_free=False, packed=True)
    np.testing.assert_array_equal(run(schedule_cpu(te.create_prim_func([X, W, Y])), [x, data], want.shape, "int32"), want)
    wd = K.dot_weights(codes, P)
    assert wd.dtype == (np.int8 if np.abs(wd.astype(int)).max() <= 127 else np.int16)  # two terms may reach 128
    D = te.placeholder(wd.shape, str(wd.dtype), "wdot")
    Y = shift_matmul_int_dot(X, D, P=P, terms=2)
    np.testing.assert_array_equal(run(schedule_cpu(te.create_prim_func([X, D, Y])), [x, wd], want.shape, "int32"), want)


def test_headroom_is_checked_at_build_time():
    X = te.placeholder((1, 4096), "int8", "x")
    W = te.placeholder((1, 2, 4096), "int8", "w")
    # 4096 * 2^7 * 2^P <= 2^31 - 1 holds up to P = 11
    with pytest.raises(K.HeadroomError, match="lower P to <= 11"):
        K.shift_matmul_int(X, W, out_features=2, P=12)
    K.shift_matmul_int(X, W, out_features=2, P=11)
    with pytest.raises(ValueError):
        K.shift_matmul_int(X, W, out_features=2, P=31)  # never a shift by >= 31


def test_int_kernel_form_choice_is_recorded():
    assert int_kernel_form("x86") in ("shift", "dot")  # measured by benchmarks/shift_kernel_forms.py
    assert int_kernel_form("no-such-target") == "shift"
