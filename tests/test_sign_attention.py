"""Add-only attention (ShiftAddViT): the NumPy reference, its TE kernels bit for bit on x86, and
the integerize rule on an exported ShiftAddAttention model (x86, and aarch64 under qemu)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from shiftc import reference as ref
from shiftc.kernels import attention as AK


def _build(func):
    return tvm.compile(tvm.IRModule({"main": func}), target="llvm")


def _run(lib, *arrays, out_shape, out_dtype):
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], out)
    return out.numpy()


def test_reference_sign_matmul_is_the_matmul():
    rng = np.random.default_rng(0)
    s = rng.integers(-1, 2, (2, 3, 5, 7)).astype(np.int8)
    v = rng.integers(-(1 << 15), 1 << 15, (2, 3, 7, 4)).astype(np.int16)
    got = ref.sign_matmul(s, v)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, s.astype(np.int64) @ v.astype(np.int64))
    np.testing.assert_array_equal(ref.sign_int(np.array([-5, 0, 7], np.int32)), [-1, 0, 1])


def test_reference_refuses_what_it_cannot_define():
    with pytest.raises(ValueError):
        ref.sign_matmul(np.full((2, 2), 2, np.int8), np.ones((2, 2), np.int8))
    with pytest.raises(OverflowError):
        ref.sign_matmul(np.ones((1, 4), np.int8), np.full((4, 1), 2**30, np.int32))
    with pytest.raises(TypeError):
        ref.sign_int(np.ones(3, np.float32))


@pytest.mark.parametrize("s_shape, v_shape, v_dtype", [
    ((1, 4, 16, 16), (1, 4, 16, 16), "int8"),   # Kbᵀ @ V of a 4-head, 16-token, d=16 layer
    ((1, 4, 16, 16), (1, 4, 16, 16), "int32"),  # Qb @ (KbᵀV): the int32 accumulator as is
    ((3, 5, 9), (1, 9, 6), "int16"),             # broadcast leading axis
    ((5, 9), (2, 9, 6), "int8"),                 # rank broadcast
])
def test_sign_matmul_kernel_matches_reference(s_shape, v_shape, v_dtype):
    rng = np.random.default_rng(1)
    s = rng.integers(-1, 2, s_shape).astype(np.int8)
    hi = {"int8": 127, "int16": 1 << 15, "int32": 1 << 23}[v_dtype]
    v = rng.integers(-hi, hi, v_shape).astype(v_dtype)
    want = ref.sign_matmul(s, v)
    S, V = te.placeholder(s_shape, "int8", "s"), te.placeholder(v_shape, v_dtype, "v")
    Y = AK.sign_matmul(S, V, hi)
    got = _run(_build(te.create_prim_func([S, V, Y])), s, v, out_shape=want.shape, out_dtype="int32")
    np.testing.assert_array_equal(got, want)


def test_sign_kernel_matches_reference():
    x = np.array([[-(2**31), -1, 0, 1, 2**31 - 1]], np.int32)
    X = te.placeholder(x.shape, "int32", "x")
    got = _run(_build(te.create_prim_func([X, AK.sign_int(X)])), x, out_shape=x.shape, out_dtype="int8")
    np.testing.assert_array_equal(got, ref.sign_int(x))


def test_sign_matmul_kernel_refuses_an_unbounded_accumulator():
    S, V = te.placeholder((2, 64), "int8", "s"), te.placeholder((64, 3), "int32", "v")
    with pytest.raises(OverflowError):
        AK.sign_matmul(S, V, 2**26)
