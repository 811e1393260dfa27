"""Properties of the PoT shift codes (shiftc.reference.shift)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from shiftc.reference import shift as S

FAST = settings(max_examples=40, deadline=None)

weights = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 4), st.integers(1, 12)),
    # Magnitudes below 1e-30 are left out: alpha * 2^-p would then be a float32 subnormal, which
    # has too few mantissa bits for "nearest representable" to hold (no trained weight is that small).
    elements=st.one_of(
        st.floats(-4, 4, width=32).filter(lambda v: v == 0 or abs(v) > 1e-30),
        st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.75, 1e-6]),
    ),
)
modes = st.sampled_from([(True, 2), (True, 3), (True, 5), (True, 7), (False, 2), (False, 4), (False, 8)])


def _representable(alpha, pmax, zero_free):
    mags = np.ldexp(np.float64(alpha), -np.arange(pmax + 1))
    vals = np.concatenate([mags, -mags] + ([np.zeros(1)] if not zero_free else []))
    return vals


@FAST
@given(weights, modes, st.sampled_from(["mse", "max", "pot"]))
def test_decode_is_nearest_representable(w, mode, how):
    zero_free, bits = mode
    codes, alpha = S.encode_pot(w, bits, zero_free, axis=0, alpha=how)
    assert codes.dtype == np.int8 and codes.shape == w.shape
    assert alpha.dtype == np.float32 and alpha.shape == (w.shape[0],)
    pmax = S.p_limit(bits, zero_free)
    mag = np.abs(codes.astype(int))
    assert mag.max() <= pmax + 1
    if zero_free:
        assert (codes != 0).all()
    dec = S.decode_pot(codes, alpha).astype(np.float64)
    for c in range(w.shape[0]):
        if alpha[c] == 0:
            assert np.all(w[c] == 0) and np.all(dec[c] == 0)
            continue
        vals = _representable(alpha[c], pmax, zero_free)
        best = np.min(np.abs(w[c].astype(np.float64)[:, None] - vals[None, :]), axis=1)
        got = np.abs(w[c].astype(np.float64) - dec[c])
        assert np.all(got <= best * (1 + 1e-12) + 1e-300), (w[c], dec[c], alpha[c])
        nz = (w[c] != 0) & (codes[c] != 0)
        assert np.all(np.sign(dec[c][nz]) == np.sign(w[c][nz]))


@FAST
@given(weights, modes)
def test_mse_alpha_never_worse_than_max(w, mode):
    zero_free, bits = mode
    c1, a1 = S.encode_pot(w, bits, zero_free, alpha="mse")
    c2, a2 = S.encode_pot(w, bits, zero_free, alpha="max")
    e1 = ((w.astype(np.float64) - S.decode_pot(c1, a1)) ** 2).sum(axis=1)
    e2 = ((w.astype(np.float64) - S.decode_pot(c2, a2)) ** 2).sum(axis=1)
    assert np.all(e1 <= e2 * (1 + 1e-6) + 1e-30)


def test_explicit_alpha_and_pot_alpha():
    w = np.array([[0.3, -0.1, 0.05, 0.0]], np.float32)
    codes, alpha = S.encode_pot(w, 4, zero_free=False, alpha=np.array([0.4]))
    assert alpha[0] == np.float32(0.4)
    # 0.3/0.4 = 0.75 -> tie between 1 and 0.5 -> larger magnitude (p=0)
    assert codes[0, 0] == 1
    assert codes[0, 3] == 0
    _, ap = S.encode_pot(np.random.default_rng(0).normal(size=(6, 20)), 4, alpha="pot")
    m, _ = np.frexp(ap)
    assert np.all(m == 0.5)


def test_no_saturation_at_one_and_zero_handling():
    w = np.array([[100.0, -50.0, 25.0, 0.0], [0, 0, 0, 0]], np.float32)
    for zf in (True, False):
        codes, alpha = S.encode_pot(w, 4, zero_free=zf)
        dec = S.decode_pot(codes, alpha)
        np.testing.assert_allclose(dec[0, :3], w[0, :3], rtol=1e-4)  # zero-free: w=0 costs alpha*2^-7
        assert alpha[1] == 0 and np.all(dec[1] == 0)
    codes, _ = S.encode_pot(w, 4, zero_free=False)
    assert codes[0, 3] == 0
    codes, _ = S.encode_pot(w, 4, zero_free=True)
    assert codes[0, 3] > 0  # zero-free: w == 0 -> sign +1, smallest magnitude


def test_axis_and_bad_inputs():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 5, 2)).astype(np.float32)
    c1, a1 = S.encode_pot(w, 5, axis=1)
    c0, a0 = S.encode_pot(np.moveaxis(w, 1, 0), 5, axis=0)
    assert np.array_equal(np.moveaxis(c1, 1, 0), c0) and np.array_equal(a1, a0)
    np.testing.assert_array_equal(S.decode_pot(c1, a1, axis=1), np.moveaxis(S.decode_pot(c0, a0), 0, 1))
    with pytest.raises(ValueError):
        S.encode_pot(np.array([[np.nan]]), 4)
    with pytest.raises(ValueError):
        S.encode_pot(w, 8, zero_free=True)
    with pytest.raises(ValueError):
        S.encode_pot(w, 1)


@FAST
@given(weights, st.sampled_from([(True, 3), (True, 5), (False, 4), (False, 8)]))
def test_pack_roundtrip(w, mode):
    zero_free, bits = mode
    codes, _ = S.encode_pot(w, bits, zero_free)
    data = S.pack_codes(codes, bits, zero_free)
    assert len(data) == (codes.size * bits + 7) // 8
    back = S.unpack_codes(data, bits, codes.size, zero_free, codes.shape)
    assert np.array_equal(back, codes)


def test_pack_layout_and_invalid():
    # with-zero 4-bit: code -3 -> sign 1, e = 3 -> field 0b1011 ; code 0 -> 0
    assert S.pack_codes(np.array([-3, 0], np.int8), 4, zero_free=False) == bytes([0b0000_1011])
    # zero-free 3-bit: code 1 -> p 0 -> 0b000 ; code -4 -> 0b111
    assert S.pack_codes(np.array([1, -4], np.int8), 3, zero_free=True) == bytes([0b00_111_000])
    with pytest.raises(ValueError):
        S.unpack_codes(bytes([0b1000]), 4, 1, zero_free=False)  # negative zero
    with pytest.raises(ValueError):
        S.pack_codes(np.array([0], np.int8), 4, zero_free=True)
    with pytest.raises(ValueError):
        S.pack_codes(np.array([9], np.int8), 4, zero_free=True)


def test_multi_term_improves_and_decodes():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(16, 64)).astype(np.float32)
    errs = []
    for t in (1, 2, 3):
        codes, alpha = S.encode_multi(w, t, 5, zero_free=False)
        assert codes.shape == (t,) + w.shape and codes.dtype == np.int8
        errs.append(float(((w - S.decode_multi(codes, alpha)) ** 2).sum()))
    assert errs[1] < 0.25 * errs[0] and errs[2] < 0.25 * errs[1], errs
    c1, a1 = S.encode_pot(w, 5, zero_free=False)
    assert errs[0] <= ((w - S.decode_pot(c1, a1)) ** 2).sum() * 1.0001


@FAST
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**31))
def test_shift_matmul_int_exact(K, N, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(N, K))
    codes, alpha = S.encode_pot(w, 4, zero_free=bool(seed & 1))
    P = int(np.abs(codes.astype(int)).max() - 1)
    x = rng.integers(-128, 128, size=(3, K)).astype(np.int8)
    x[0] = -128
    y = S.shift_matmul_int(x, codes, P)
    assert y.dtype == np.int32
    exact = x.astype(np.float64) @ (S.decode_pot(codes, np.ones(N, np.float32)).astype(np.float64) * 2.0**P).T
    assert np.array_equal(y, exact.astype(np.int64))
    yf = S.shift_matmul_float(x.astype(np.float32), codes, alpha)
    np.testing.assert_allclose(yf, y * alpha.astype(np.float64) * 2.0**-P, rtol=1e-6, atol=1e-6)


def test_headroom():
    # K * 128 * 2**P <= 2**31 - 1
    assert S.headroom_ok(2**23 - 1, 1) and not S.headroom_ok(2**23, 1)
    assert S.max_P_for(4096) == 11 and S.headroom_ok(4096, 11) and not S.headroom_ok(4096, 12)
    x = np.full((1, 4096), -128, np.int8)
    codes = np.full((1, 4096), -1, np.int8)  # -2**0: every term +128 << P
    y = S.shift_matmul_int(x, codes, 11)
    assert y[0, 0] == 4096 * 128 * 2**11 == 2**30
    with pytest.raises(OverflowError):
        S.shift_matmul_int(x, codes, 12)
    with pytest.raises(ValueError):
        S.shift_matmul_int(x, np.full((1, 4096), 5, np.int8), 3)  # P < max p
    with pytest.raises(ValueError):
        S.max_shift(31)
    assert S.max_shift(7) == 7


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 2), (1, (1, 2), 2, 4), (2, (0, 1, 2, 1), 1, 1)])
def test_shift_conv2d_matches_torch(stride, padding, dilation, groups):
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(2, 8, 9, 8)).astype(np.int8)
    w = rng.normal(size=(8, 8 // groups, 3, 3))
    codes, alpha = S.encode_pot(w, 5, zero_free=False)
    P = int(np.abs(codes.astype(int)).max() - 1)
    y = S.shift_conv2d_int(x, codes, P, stride, padding, dilation, groups)
    pads = S.conv_padding(padding)
    xt = torch.nn.functional.pad(torch.tensor(x.astype(np.float64)), (pads[1], pads[3], pads[0], pads[2]))
    wt = torch.tensor(S.decode_pot(codes, np.ones(8, np.float32)).astype(np.float64) * 2.0**P)
    ref = torch.nn.functional.conv2d(xt, wt, stride=stride, dilation=dilation, groups=groups).numpy()
    assert y.dtype == np.int32 and np.array_equal(y, ref.astype(np.int64))
    yf = S.shift_conv2d_float(x.astype(np.float32), codes, alpha, stride, padding, dilation, groups)
    np.testing.assert_allclose(yf, ref * alpha.reshape(1, -1, 1, 1) * 2.0**-P, rtol=1e-5, atol=1e-4)
