"""The static int32 accumulator proof (docs/NUMERICS.md §2.8): the bound functions of
``shiftc.reference.overflow`` against int64 / exact arithmetic at the int8 extremes, the emitted
split kernel bit-equal to its int64 reference, big MatMul / Conv models that used to wrap round
compiled exactly, and the shipped models left unsplit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import shiftc
from shiftc.reference import overflow as ov
from shiftc.reference.rounding import INT32_MAX, rshift_round

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
THRESHOLD = ov.max_uniform_k(8)  # 132,104: the largest K of full-scale int8 weights that fits


# --------------------------------------------------------------------------- bound functions
def _weights(draw, K, N):
    kind = draw(st.sampled_from(["full", "positive", "mixed", "sparse"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "full":
        w = np.where(rng.random((K, N)) < 0.5, -127, 127)
    elif kind == "positive":
        w = np.full((K, N), 127)
    elif kind == "mixed":
        w = rng.integers(-127, 128, (K, N))
    else:
        w = np.where(rng.random((K, N)) < 0.02, 127, 0)
    return w.astype(np.int8)


@st.composite
def dot_cases(draw):
    K = draw(st.one_of(st.integers(1, 64), st.integers(THRESHOLD - 3, THRESHOLD + 3), st.integers(THRESHOLD, 3 * THRESHOLD)))
    return _weights(draw, K, draw(st.integers(1, 3)))


@settings(max_examples=25, deadline=None)
@given(dot_cases())
def test_dot_bound_is_the_exact_worst_case(w):
    """``128 * sum|W|`` per channel is never exceeded, and the worst int8 input (-128 against a
    positive weight, 127 against a negative one) reaches it up to ``sum of |negative W|``."""
    w64 = w.astype(np.int64)
    bound = ov.dot_bound(w, axis=1)
    worst = np.einsum("kn,kn->n", np.where(w64 > 0, -128, 127), -w64)  # = sum 128|w+| + 127|w-|
    assert np.all(worst <= bound)
    assert np.array_equal(bound - worst, np.where(w64 < 0, -w64, 0).sum(0))
    x = np.random.default_rng(0).integers(-128, 128, w.shape[0])
    assert np.all(np.abs(x @ w64) <= bound)
    if worst.max() > INT32_MAX:
        assert not ov.fits_int32(bound)
    if ov.fits_int32(bound):
        assert worst.max() <= INT32_MAX


@settings(max_examples=25, deadline=None)
@given(dot_cases(), st.sampled_from([8, 7, 4]))
def test_chunks_fit_and_the_split_is_exact(w, x_bits):
    """Every chunk of ``k_chunks`` provably fits int32, the chunks tile K greedily, and the split
    sum narrowed by ``narrow_shift`` equals the exact int64 product rounded once."""
    K = w.shape[0]
    chunks = ov.k_chunks(np.abs(w.astype(np.int64)), x_bits)
    assert chunks[0][0] == 0 and chunks[-1][1] == K and all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    for i, (a, b) in enumerate(chunks):
        assert ov.fits_int32(ov.dot_bound(w[a:b], axis=1, x_bits=x_bits))
        if i + 1 < len(chunks):  # greedy: one more unit would not fit
            assert not ov.fits_int32(ov.dot_bound(w[a:b + 1], axis=1, x_bits=x_bits))
    lo, hi = -(1 << (x_bits - 1)), (1 << (x_bits - 1)) - 1
    x = np.where(w.astype(np.int64).T[:1] > 0, lo, hi)  # the extremes, (1, K)
    bound = int(ov.dot_bound(w, axis=1, x_bits=x_bits).max())
    r = ov.narrow_shift(bound)
    got = ov.chunked_matmul_int(x, w, chunks, r)
    exact = [sum(int(a) * int(b) for a, b in zip(x[0], w[:, n])) for n in range(w.shape[1])]  # Python ints
    assert np.array_equal(got[0], rshift_round(np.array(exact, np.int64), r))
    assert np.all(np.abs(got) <= ov.NARROW_LIMIT)
    assert all(abs(int(g) * 2**r - e) <= 2 ** max(r - 1, 0) for g, e in zip(got[0], exact))


def test_act_and_sum_bounds():
    assert ov.act_dot_bound(131_071, 8, 8) <= INT32_MAX < ov.act_dot_bound(131_072, 8, 8)
    assert ov.fits_int32(ov.sum_bound(65_535, 16)) and not ov.fits_int32(ov.sum_bound(65_536, 16))
    assert ov.max_uniform_k(8) == INT32_MAX // (128 * 127) == 132_104
    assert ov.narrow_shift(INT32_MAX, INT32_MAX) == 0 and ov.narrow_shift(2**31, INT32_MAX) == 1
