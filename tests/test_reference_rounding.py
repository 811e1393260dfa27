"""Rounding, dyadic scales, requantisation and the integer add (shiftc.reference.rounding/requant)."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from shiftc.reference import add_int, dyadic, requantize, rshift_round, saturate

FAST = settings(max_examples=60, deadline=None)


def rhu(fr: Fraction) -> int:
    """Exact round half up of a rational."""
    return (fr + Fraction(1, 2)).__floor__()


@FAST
@given(st.integers(-(2**61), 2**61), st.integers(0, 62))
def test_rshift_round_is_round_half_up(z, e):
    got = int(rshift_round(np.int64(z), e))
    assert got == rhu(Fraction(z, 2**e))


def test_rshift_round_examples_and_errors():
    assert rshift_round(np.array([5, -5, 6, -6, 7, -7]), 1).tolist() == [3, -2, 3, -3, 4, -3]
    assert rshift_round(np.array([3]), 0).tolist() == [3]
    for bad in (-1, 63):
        with pytest.raises(ValueError):
            rshift_round(np.array([1]), bad)
    with pytest.raises(OverflowError):
        rshift_round(np.array([2**62]), 3)
    assert saturate(np.array([-300, 300, 5]), 8).tolist() == [-128, 127, 5]


@FAST
@given(st.floats(2.0**-32, 2.0**30, exclude_max=True, allow_subnormal=False))
def test_dyadic_accuracy(scale):
    try:
        m, e = dyadic(scale)
    except ValueError:
        # only the edges of the documented range may be rejected
        assert scale < 2.0**-31 or scale >= 2.0**29
        return
    assert 1 <= e <= 62 and 2**30 <= m <= 2**31 - 1
    assert abs(Fraction(m, 2**e) - Fraction(scale)) <= Fraction(scale) * Fraction(1, 2**31)


def test_dyadic_edges_and_vector():
    m, e = dyadic(1.0 - 2.0**-40)  # rounds up to 2**31 -> halved
    assert (m, e) == (2**30, 30)
    assert dyadic(0.0) == (0, 1)
    for bad in (-1.0, float("nan"), float("inf"), 2.0**31, 2.0**-40):
        with pytest.raises(ValueError):
            dyadic(bad)
    mv, ev = dyadic(np.array([0.5, 0.25, 3e-3]))
    assert mv.tolist()[:2] == [2**30, 2**30] and ev.tolist()[:2] == [31, 32]


@FAST
@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=20),
    st.floats(1e-6, 100.0),
    st.sampled_from([8, 16, 32]),
)
def test_requantize_matches_exact_rational(zs, scale, bits):
    m, e = dyadic(scale)
    z = np.array(zs, np.int64)
    got = requantize(z, m, e, bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    want = [min(max(rhu(Fraction(v) * Fraction(m, 2**e)), lo), hi) for v in zs]
    assert got.tolist() == want
    # and within one rounding of the real scale (dyadic error <= 2^-31 relative)
    real = [min(max(float(v) * scale, lo), hi) for v in zs]
    assert np.all(np.abs(got.astype(np.float64) - real) <= 0.5 + np.abs(real) * 2.0**-30 + 1e-9)


def test_requantize_per_axis():
    z = np.arange(-12, 12).reshape(2, 3, 4).astype(np.int32) * 1000
    scales = np.array([0.01, 0.002, 0.03])
    m, e = dyadic(scales)
    got = requantize(z, m, e, 8, axis=1)
    for c in range(3):
        assert np.array_equal(got[:, c], requantize(z[:, c], int(m[c]), int(e[c]), 8))
    assert got.dtype == np.int8


@FAST
@given(
    st.lists(st.tuples(st.integers(-128, 127), st.integers(-128, 127)), min_size=1, max_size=16),
    st.floats(0.01, 0.2),
    st.floats(0.01, 0.2),
    st.floats(0.02, 0.4),
)
def test_add_int(pairs, sa, sb, so):
    a = np.array([p[0] for p in pairs], np.int8)
    b = np.array([p[1] for p in pairs], np.int8)
    got = add_int(a, sa, b, sb, so)
    real = (a * sa + b * sb) / so
    assert got.dtype == np.int8
    assert np.all(np.abs(got - np.clip(real, -128, 127)) <= 1.0 + 1e-6)
