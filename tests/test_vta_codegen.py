"""VTA codegen: simulator output is bit-identical to the NumPy reference."""
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from shiftc.targets.vta import isa
from helpers.vta_layers import run_layer
from shiftc.reference.accelerator import qconv2d, qdense
from shiftc.targets.vta.codegen import CodegenError, QConv2d, QDense, compile_layer
from shiftc.targets.vta.config import load_config

CFG = load_config()
# Tiny buffers (same 16x16 blocks) force splitting over output rows, oc and cin blocks.
TINY = CFG.replace(LOG_INP_BUFF_SIZE=11, LOG_WGT_BUFF_SIZE=13, LOG_ACC_BUFF_SIZE=11,
                   LOG_UOP_BUFF_SIZE=12)


def _weights(rng, shape, mode, P):
    if mode == "int8":
        return rng.integers(-128, 128, shape, dtype=np.int8)
    codes = rng.integers(1, P + 2, shape) * rng.choice([-1, 1], shape)
    codes[rng.random(shape) < 0.2] = 0
    return codes.astype(np.int8)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 40), K=st.integers(1, 70), M=st.integers(1, 40),
       e=st.sampled_from([0, 1, 7, 12, 15, 16, 20]), relu=st.booleans(),
       mode=st.sampled_from(["int8", "shift"]), P=st.integers(0, 8),
       seed=st.integers(0, 2**31))
def test_qdense_bit_exact(N, K, M, e, relu, mode, P, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (N, K), dtype=np.int8)
    w = _weights(rng, (M, K), mode, P)
    b = rng.integers(-2**20, 2**20, M).astype(np.int32)
    layer = QDense(w, b, e, relu, mode, P if mode == "shift" else None)
    r = run_layer(layer, x)
    ref = qdense(x, w, b, e, relu, mode, P if mode == "shift" else None)
    assert r.output.shape == (N, M) and r.output.dtype == np.int8
    assert np.array_equal(r.output, ref)
    assert r.report[0].placement == "vta"
    if mode == "int8":
        assert r.stats.gemm_macs > 0 and r.stats.gemm_shift_adds == 0
    else:
        assert r.stats.gemm_shift_adds > 0 and r.stats.gemm_macs == 0


CONV_CASES = [
    # (N, C, H, W, O, KH, KW, stride, padding)
    (1, 3, 8, 8, 16, 3, 3, 1, 1),
    (2, 19, 11, 9, 33, 3, 3, 2, 1),
    (1, 16, 7, 7, 5, 1, 1, 1, 0),
    (1, 8, 10, 12, 20, 5, 5, 1, 2),
    (1, 5, 9, 7, 7, 3, 2, (2, 1), (0, 1, 2, 0)),   # asymmetric stride and padding
    (1, 40, 6, 6, 24, 3, 3, 1, (1, 1, 1, 1)),
]


@pytest.mark.parametrize("mode", ["int8", "shift"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_qconv2d_bit_exact(case, mode):
    N, C, H, W, O, KH, KW, stride, padding = case
    rng = np.random.default_rng(zlib.crc32(repr((case, mode)).encode()))  # the same in every process
    P = 5
    x = rng.integers(-128, 128, (N, C, H, W), dtype=np.int8)
    w = _weights(rng, (O, C, KH, KW), mode, P)
    b = rng.integers(-2**16, 2**16, O).astype(np.int32)
    Ps = P if mode == "shift" else None
    for e, relu in ((9, False), (13, True)):
        layer = QConv2d(w, b, e, stride, padding, 1, relu, mode, Ps)
        r = run_layer(layer, x)
        ref = qconv2d(x, w, b, e, stride, padding, 1, relu, mode, Ps)
        assert np.array_equal(r.output, ref)
        # counters: every (pixel, oc block, cin block, kh, kw) is computed exactly once
        t = r.report[0].tiling
        assert r.stats.gemm_uops == N * t["OH"] * t["OW"] * t["OB"] * t["CB"] * KH * KW
        assert r.stats.bytes_stored["out"] == N * t["OH"] * t["OW"] * t["OB"] * 16


@settings(max_examples=15, deadline=None)
@given(C=st.integers(1, 35), H=st.integers(1, 9), W=st.integers(1, 9), O=st.integers(1, 35),
       K=st.sampled_from([1, 2, 3]), s=st.integers(1, 2), p=st.integers(0, 2),
       mode=st.sampled_from(["int8", "shift"]), tiny=st.booleans(), seed=st.integers(0, 2**31))
def test_qconv2d_random_shapes(C, H, W, O, K, s, p, mode, tiny, seed):
    if H + 2 * p < K or W + 2 * p < K:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, C, H, W), dtype=np.int8)
    w = _weights(rng, (O, C, K, K), mode, 3)
    b = rng.integers(-2**12, 2**12, O).astype(np.int32)
    Ps = 3 if mode == "shift" else None
    r = run_layer(QConv2d(w, b, 7, s, p, 1, False, mode, Ps), x, cfg=TINY if tiny else CFG)
    assert np.array_equal(r.output, qconv2d(x, w, b, 7, s, p, 1, False, mode, Ps))


@pytest.mark.parametrize("nbuf", [1, 2])
@pytest.mark.parametrize("mode", ["int8", "shift"])
def test_tiling_splits_when_buffers_are_small(nbuf, mode):
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (1, 50, 12, 10), dtype=np.int8)
    w = _weights(rng, (37, 50, 3, 3), mode, 4)
    b = rng.integers(-1000, 1000, 37).astype(np.int32)
    layer = QConv2d(w, b, 11, 1, 1, 1, False, mode, 4 if mode == "shift" else None)
    r = run_layer(layer, x, cfg=TINY, nbuf=nbuf)
    t = r.report[0].tiling
    assert t["n_tiles"] > 1 and t["n_groups"] > t["n_tiles"]     # split over rows/oc and cin
    ref = qconv2d(x, w, b, 11, 1, 1, 1, False, mode, 4 if mode == "shift" else None)
    assert np.array_equal(r.output, ref)
    # the trace path (one uop at a time) agrees with the vectorised one
    r2 = run_layer(layer, x, cfg=TINY, nbuf=nbuf, vectorize=False)
    assert np.array_equal(r2.output, ref)


def test_double_buffering_overlaps_load_and_compute():
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (1, 64, 32, 32), dtype=np.int8)
    w = rng.integers(-128, 128, (128, 64, 3, 3), dtype=np.int8)
    layer = QConv2d(w, None, 11, 1, 1)
    r1, r2 = run_layer(layer, x, nbuf=1), run_layer(layer, x, nbuf=2)
    assert r1.report[0].tiling["n_groups"] > 1
    assert r2.stats.cycles < r1.stats.cycles
    assert np.array_equal(r1.output, r2.output)
    # compute bound: at least one GEMM uop per cycle
    assert r2.stats.cycles >= r2.stats.gemm_uops


def test_requant_program_shape():
    w = np.ones((16, 16), dtype=np.int8)
    prog = compile_layer(QDense(w, None, 4, relu=True), (3, 16))
    alu = [i for i in prog.insns if isinstance(i, isa.Alu) and i.iter_in]
    assert [(a.alu_opcode, a.imm) for a in alu] == [(isa.ALU_ADD, 8), (isa.ALU_SHR, 4),
                                                    (isa.ALU_MAX, 0), (isa.ALU_MIN, 127)]
    prog = compile_layer(QDense(w, None, 20), (3, 16))
    alu = [i for i in prog.insns if isinstance(i, isa.Alu) and i.iter_in]
    assert [a.alu_opcode for a in alu] == [isa.ALU_SHR, isa.ALU_MAX, isa.ALU_MIN]
    assert "folded into the bias" in prog.notes[0]


def test_depthwise_falls_back_to_host_and_says_so():
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, (1, 8, 6, 6), dtype=np.int8)
    w = rng.integers(-128, 128, (8, 1, 3, 3), dtype=np.int8)
    r = run_layer(QConv2d(w, None, 8, 1, 1, groups=8, name="dw"), x)
    assert r.report[0].placement == "host" and "groups=8" in r.report[0].reason
    assert np.array_equal(r.output, qconv2d(x, w, None, 8, 1, 1, 8))


def test_rejections():
    x = np.zeros((2, 16), dtype=np.int8)
    # 128 * 2^15 * K exceeds int32 for K = 2^9 at P = 15
    big = np.full((1, 2**9), 1, np.int8)
    with pytest.raises(CodegenError, match="overflow"):
        compile_layer(QDense(np.full((1, 2**9), 1, np.int8), None, 2, wgt_mode="shift",
                             shift_P=15), big.shape)
    with pytest.raises(CodegenError, match="p > shift_P"):
        compile_layer(QDense(np.full((4, 16), 5, np.int8), None, 2, wgt_mode="shift",
                             shift_P=3), x.shape)
    with pytest.raises(CodegenError, match="shift_e"):
        compile_layer(QDense(np.ones((4, 16), np.int8), None, 32), x.shape)
    with pytest.raises(CodegenError, match="width tiling"):
        compile_layer(QConv2d(np.ones((4, 16, 3, 3), np.int8), None, 2, 1, 1),
                      (1, 16, 4, 1000))
    with pytest.raises(CodegenError, match="input must be int8"):
        run_layer(QDense(np.ones((4, 16), np.int8), None, 2), x.astype(np.int16))


def _race_case():
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (1, 50, 12, 10), dtype=np.int8)
    w = rng.integers(-128, 128, (37, 50, 3, 3), dtype=np.int8)
    layer = QConv2d(w, None, 11, 1, 1)
    return layer, x, qconv2d(x, w, None, 11, 1, 1)


@pytest.mark.parametrize("nbuf", [1, 2])
def test_tokens_make_every_interleaving_correct(nbuf):
    """Random module interleavings (any order the tokens allow) give the same output."""
    layer, x, ref = _race_case()
    cycles = set()
    for seed in range(4):
        r = run_layer(layer, x, cfg=TINY, nbuf=nbuf, schedule=seed)
        assert np.array_equal(r.output, ref)
        cycles.add(r.stats.cycles)
    assert len(cycles) == 1                       # the cycle estimate is schedule-independent


def test_random_schedule_exposes_a_missing_token():
    """Drop the load module's buffer-reuse waits: some interleaving then corrupts data."""
    import dataclasses
    from shiftc.targets.vta import layout
    from shiftc.targets.vta.codegen import run_program
    layer, x, ref = _race_case()
    prog = compile_layer(layer, x.shape, TINY, nbuf=1)
    prog.insns = [dataclasses.replace(i, pop_next=0)
                  if isinstance(i, isa.LoadStore) and i.mem_type in (isa.MEM_INP, isa.MEM_WGT)
                  else i for i in prog.insns]
    xp = layout.pack_activations(x, TINY.block_in)
    wrong = 0
    for seed in range(4):
        out, _ = run_program(prog, xp, schedule=seed)
        wrong += not np.array_equal(layout.unpack_activations(out, 37), ref)
    assert wrong > 0
