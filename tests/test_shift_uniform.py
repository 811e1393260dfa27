"""Uniform-grid shift codes (shiftc.reference.shift_uniform) and their kernels.

The reference: every level's canonical signed-digit terms decode to exactly ``m * 2**-(b-1)``,
packing round-trips and rejects the one unused field, the encoder beats nearest power-of-two codes
and never loses to ``alpha = max|w|``. The kernels: float kernels equal the FTZ reference on the
expanded codes, integer kernels bit for bit, the TIR scan finds no weight x activation multiply.
"""

import numpy as np
import pytest
from shift_helpers import ShiftWeights
from test_shift_pass import imported, ort_with_decoded_weights, tiny_model
from tvm import te

import shiftc
from shiftc import evaluate
from shiftc.core.errors import InputError
from shiftc.passes import shift as S

from shiftc.kernels import shift as K
from shiftc.reference import shift as R
from shiftc.reference import shift_float as RF
from shiftc.reference import shift_uniform as U
from shiftc.schedules.shift_schedule import schedule_cpu
from test_shift_kernels import rel, run
from test_shift_tir import data_multiplies

rng = np.random.default_rng(11)


@pytest.mark.parametrize("bits", U.UNIFORM_BITS)
def test_every_level_is_its_canonical_terms_exactly(bits):
    L = 2 ** (bits - 1) - 1
    m = np.arange(-L, L + 1)
    codes = U.csd_codes(m, bits)
    assert codes.shape[0] == U.terms_for(bits) == {3: 2, 4: 2, 5: 3, 6: 3}[bits]
    np.testing.assert_array_equal(R.decode_multi(codes[:, None, :], np.ones(1, np.float32))[0], m / 2.0 ** (bits - 1))
    assert np.abs(codes.astype(int)).max() - 1 <= R.p_limit(bits, zero_free=False)  # valid with-zero codes
    # non-adjacent form: no level uses more terms than needed (7 = 8 - 1, not 4 + 2 + 1)
    assert int((U.csd_codes(np.array([7]), 4) != 0).sum()) == 2
    np.testing.assert_array_equal(U.levels_of(codes, bits), m)


def test_pack_round_trip_and_layout():
    m = np.array([[-7, 0, 3], [7, -1, 5]])
    codes = U.csd_codes(m, 4)
    data = U.pack_uniform(codes, 4)
    assert data == bytes([0x09, 0x73, 0x5F])  # fields -7=0x9, 0, 3, 7, -1=0xF, 5: low nibble first
    np.testing.assert_array_equal(U.unpack_uniform(data, 4, m.shape), codes)
    with pytest.raises(ValueError, match="outside the symmetric"):
        U.unpack_uniform(bytes([0x08]), 4, (1,))  # -8 is never written
    with pytest.raises(ValueError, match="canonical terms"):
        U.pack_uniform(np.array([[2], [3]], np.int8), 4)  # 1/2 + 1/4 is not a CSD pair
    with pytest.raises(ValueError, match="bits in"):
        U.csd_codes(np.zeros(1, int), 7)


def test_encoder_beats_power_of_two_and_max_alpha():
    w = rng.normal(size=(24, 64, 1, 1)) * rng.uniform(0.1, 2.0, size=(24, 1, 1, 1))
    w[3] = 0.0
    for bits in (3, 4, 5):
        codes, alpha = U.encode_uniform(w, bits)
        err = np.sqrt(((R.decode_multi(codes, alpha) - w) ** 2).sum(axis=(1, 2, 3)))
        assert alpha[3] == 0 and err[3] == 0
        mx = np.abs(w).max(axis=(1, 2, 3)) * 2 ** (bits - 1) / (2 ** (bits - 1) - 1)
        mx[3] = 1.0  # the all-zero channel: any alpha gives 0
        m_max = np.clip(np.rint(w / mx[:, None, None, None] * 2 ** (bits - 1)), -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
        err_max = np.sqrt(((mx[:, None, None, None] * m_max / 2 ** (bits - 1) - w) ** 2).sum(axis=(1, 2, 3)))
        assert np.all(err <= err_max * (1 + 1e-6))
    pot = R.decode_pot(*R.encode_pot(w, 4, True))
    u4 = R.decode_multi(*U.encode_uniform(w, 4))
    assert np.linalg.norm(u4 - w) < 0.75 * np.linalg.norm(pot - w)


def _packed(codes, bits):
    data = np.frombuffer(U.pack_uniform(codes, bits) + b"\0", np.uint8).copy()
    return data, te.placeholder(data.shape, "uint8", "w")


@pytest.mark.parametrize("bits", [4, 5])
def test_float_conv_and_matmul_equal_the_reference_on_expanded_codes(bits):
    terms = U.terms_for(bits)
    x = rng.normal(size=(1, 6, 7, 7)).astype(np.float32)
    codes, alpha = U.encode_uniform(rng.normal(size=(4, 3, 3, 3)), bits)
    data, W = _packed(codes, bits)
    X, A = te.placeholder(x.shape, "float32", "x"), te.placeholder(alpha.shape, "float32", "alpha")
    conv = dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=2)
    Y = K.shift_conv2d_float(X, W, A, weight_shape=(4, 3, 3, 3), terms=terms, bits=bits, zero_free=False, packed=True,
                             uniform=True, **conv)
    got = run(schedule_cpu(te.create_prim_func([X, W, A, Y])), [x, data, alpha], [int(d) for d in Y.shape], "float32")
    assert rel(got, RF.shift_conv2d_float_ftz(x, codes, alpha, (1, 1), (1, 1, 1, 1), (1, 1), 2)) <= 1e-6
    xm = rng.normal(size=(3, 21)).astype(np.float32)
    codes, alpha = U.encode_uniform(rng.normal(size=(9, 21)), bits)
    data, W = _packed(codes, bits)
    X, A = te.placeholder(xm.shape, "float32", "x"), te.placeholder(alpha.shape, "float32", "alpha")
    Y = K.shift_matmul_float(X, W, A, out_features=9, terms=terms, bits=bits, zero_free=False, packed=True, uniform=True)
    got = run(te.create_prim_func([X, W, A, Y]), [xm, data, alpha], [3, 9], "float32")
    assert rel(got, RF.shift_matmul_float_ftz(xm, codes, alpha)) <= 1e-6


def test_int_kernels_bit_exact():
    x = rng.integers(-128, 128, size=(2, 33)).astype(np.int8)
    x[0] = -128
    codes, _ = U.encode_uniform(rng.normal(size=(10, 33)), 4)
    P = int(np.abs(codes.astype(int)).max() - 1)
    data, W = _packed(codes, 4)
    X = te.placeholder(x.shape, "int8", "x")
    Y = K.shift_matmul_int(X, W, out_features=10, P=P, terms=2, bits=4, zero_free=False, packed=True, uniform=True)
    got = run(schedule_cpu(te.create_prim_func([X, W, Y])), [x, data], [2, 10], "int32")
    np.testing.assert_array_equal(got, R.shift_matmul_int_multi(x, codes, P))
    xc = rng.integers(-128, 128, size=(1, 4, 6, 6)).astype(np.int8)
    codes, _ = U.encode_uniform(rng.normal(size=(5, 4, 3, 3)), 3)
    P = int(np.abs(codes.astype(int)).max() - 1)
    data, W = _packed(codes, 3)
    X = te.placeholder(xc.shape, "int8", "x")
    Y = K.shift_conv2d_int(X, W, weight_shape=(5, 4, 3, 3), P=P, terms=2, bits=3, packed=True, uniform=True, padding=(1, 1, 1, 1))
    got = run(schedule_cpu(te.create_prim_func([X, W, Y])), [xc, data], [1, 5, 6, 6], "int32")
    want = sum(R.shift_conv2d_int(xc, c, P, (1, 1), (1, 1, 1, 1), (1, 1), 1) for c in codes)
    np.testing.assert_array_equal(got, want)


def test_uniform_kernels_never_multiply_data():
    X = te.placeholder((2, 40), "float32", "x")
    W = te.placeholder(((24 * 40 * 4 + 7) // 8 + 1,), "uint8", "w")
    A = te.placeholder((24,), "float32", "alpha")
    Y = K.shift_matmul_float(X, W, A, out_features=24, terms=2, bits=4, zero_free=False, packed=True, uniform=True)
    loops, found = data_multiplies(te.create_prim_func([X, W, A, Y]))
    assert loops > 0 and found == []
    Xi = te.placeholder((3, 50), "int8", "x")
    Wi = te.placeholder(((16 * 50 * 5 + 7) // 8 + 1,), "uint8", "w")
    Y = K.shift_matmul_int(Xi, Wi, out_features=16, P=4, terms=3, bits=5, packed=True, uniform=True)
    loops, found = data_multiplies(te.create_prim_func([Xi, Wi, Y]))
    assert loops > 0 and found == []


def test_kernel_refuses_a_mismatched_uniform_stream():
    X = te.placeholder((1, 8), "float32", "x")
    A = te.placeholder((4,), "float32", "alpha")
    with pytest.raises(ValueError, match="take 2 terms"):
        K.shift_matmul_float(X, te.placeholder((18,), "uint8", "w"), A, out_features=4, terms=1, bits=4, zero_free=False,
                             packed=True, uniform=True)
    with pytest.raises(ValueError, match=r"uint8\[17\]"):
        K.shift_matmul_float(X, te.placeholder((18,), "uint8", "w"), A, out_features=4, terms=2, bits=4, zero_free=False,
                             packed=True, uniform=True)


def test_rewritten_model_equals_its_decoded_weights_in_onnxruntime():
    plan = {"conv2d_0": S.uniform_config(4), "conv2d_1": S.uniform_config(5), "matmul_0": S.uniform_config(3),
            "matmul_1": S.uniform_config(4)}
    loaded, mod = imported()
    x = np.random.default_rng(3).normal(size=(1, 3, 8, 8)).astype(np.float32)
    got = evaluate.relax_outputs(ShiftWeights(plan)(mod), loaded.inputs, [{"x": x}])[0][0]
    assert rel(got, ort_with_decoded_weights(plan, x)) < 1e-5


def _calibration(n=8):
    rng = np.random.default_rng(5)
    return [{"x": rng.normal(0.5, 1.0, (1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def test_integer_only_build_is_the_same_in_shift_and_dot_form(tmp_path, monkeypatch):
    """``--shift-grid uniform --integer-only``: every layer a uniform shift_int kernel; the x86 dot
    form and the shift form of those kernels give the same integers."""
    opts = dict(shift_bits=4, shift_grid="uniform", integer_only=True, calibration=_calibration())
    dot = shiftc.compile(tiny_model(), "x86", output=tmp_path / "dot", **opts)
    rows = next(s for s in dot.report.stages if s.name == "shift").rows
    assert {(r["grid"], r["bits"], r["terms"]) for r in rows} == {("uniform", 4, 2)}
    assert all(r["code_bytes"] == (int(np.prod(r["weight_shape"])) * 4 + 7) // 8 + 1 for r in rows)  # 4 bits a weight
    integer = next(s for s in dot.report.stages if s.name == "integerize")
    assert sorted(r["op"] for r in integer.rows if r.get("op", "").startswith("shift_")) == \
        ["shift_conv2d_int"] * 2 + ["shift_matmul_int"] * 2
    monkeypatch.setattr("shiftc.schedules.shift_form.int_kernel_form", lambda _name: "shift")
    shift = shiftc.compile(tiny_model(), "x86", output=tmp_path / "shift", **opts)
    for x in _calibration(3):
        np.testing.assert_array_equal(dot.run(x["x"])["y"], shift.run(x["x"])["y"])
    assert next(s for s in dot.report.stages if s.name == "integerize").error["rel_l2"] < 0.2


@pytest.mark.parametrize("opts,match", [({"shift_bits": 7}, "3, 4, 5 or 6 with --shift-grid uniform"),
                                        ({"shift_bits": 4, "shift_terms": 2}, "takes no --shift-terms")])
def test_bad_uniform_options_are_input_errors(tmp_path, opts, match):
    with pytest.raises(InputError, match=match):
        shiftc.compile(tiny_model(), "x86", shift_grid="uniform", calibration=_calibration(2), output=tmp_path / "a", **opts)
