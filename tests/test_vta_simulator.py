"""VTA functional simulator: loads/stores, ALU, GEMM loop nest, shift weights, dependencies."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from helpers.rtl_bench import dump_gemm_vectors
from shiftc.reference.shift import code_weights
from shiftc.targets.vta import isa
from shiftc.targets.vta.config import ConfigError, VTAConfig, load_config
from shiftc.targets.vta.simulator import DeadlockError, SimError, Simulator

CFG = load_config()
# 4x4 blocks (same SRAM depths as the default): quick to reason about
SMALL = CFG.replace(LOG_BLOCK_IN=2, LOG_BLOCK_OUT=2, LOG_INP_BUFF_SIZE=13,
                    LOG_WGT_BUFF_SIZE=14, LOG_ACC_BUFF_SIZE=15)
FIN = isa.Finish()


def test_config_defaults_and_validation():
    assert (CFG.block_in, CFG.block_out, CFG.batch) == (16, 16, 1)
    assert (CFG.inp_depth, CFG.wgt_depth, CFG.acc_depth, CFG.uop_depth) == (2048, 1024, 2048, 8192)
    with pytest.raises(ConfigError, match="acc buffer depth"):
        CFG.replace(LOG_ACC_BUFF_SIZE=20)
    with pytest.raises(ConfigError, match="BATCH"):
        CFG.replace(LOG_BATCH=1)
    with pytest.raises(ConfigError, match="unknown"):
        VTAConfig.from_dict({"LOG_FOO": 1})


def test_load_inp_strides_and_zero_padding():
    sim = Simulator(SMALL, dram_bytes=4096)
    data = np.arange(-60, 60, dtype=np.int8)             # 30 inp elements of 4 bytes
    sim.write_dram(0, data)
    sim.inp[:] = 99                                       # padding must overwrite with zeros
    ld = isa.LoadStore(mem_type=isa.MEM_INP, sram_base=3, dram_base=2, y_size=2, x_size=3,
                       x_stride=5, y_pad_top=1, y_pad_bottom=2, x_pad_left=1, x_pad_right=2)
    st_ = sim.run([ld, FIN])
    elems = data.reshape(30, 4)
    expect = np.zeros((5, 6, 4), dtype=np.int8)
    expect[1:3, 1:4] = np.stack([elems[2 + y * 5: 5 + y * 5] for y in range(2)])
    assert np.array_equal(sim.inp[3:33, 0], expect.reshape(30, 4))
    assert np.all(sim.inp[:3] == 99) and np.all(sim.inp[33:40] == 99)
    assert st_.bytes_loaded["inp"] == 2 * 3 * 4
    # cycle model: latency + ceil(bytes / bpc) + padding rows
    assert st_.module_busy["load"] == SMALL.DRAM_LATENCY_CYCLES + 24 // 8 + (30 - 6)


def test_load_padding_illegal_for_weights_and_overflow():
    sim = Simulator(SMALL, dram_bytes=4096)
    with pytest.raises(SimError, match="padding is only legal"):
        sim.run([isa.LoadStore(mem_type=isa.MEM_WGT, x_pad_left=1), FIN])
    with pytest.raises(SimError, match="SRAM overflow"):
        sim.run([isa.LoadStore(mem_type=isa.MEM_INP, sram_base=SMALL.inp_depth - 1, x_size=2),
                 FIN])
    with pytest.raises(SimError, match="beyond DRAM"):
        sim.run([isa.LoadStore(mem_type=isa.MEM_INP, dram_base=4096), FIN])


def test_store_truncates_to_low_8_bits():
    sim = Simulator(SMALL, dram_bytes=4096)
    vals = np.array([300, -129, 127, -128, 255, 256, -1, 1 << 30], dtype=np.int32)
    sim.acc[5:7, 0] = vals.reshape(2, 4)
    sim.run([isa.LoadStore(store=True, mem_type=isa.MEM_OUT, sram_base=5, dram_base=3,
                           y_size=2, x_size=1, x_stride=2), FIN])
    got = sim.dram.view(np.int8)
    assert list(got[12:16]) == [44, 127, 127, -128]
    assert list(got[20:24]) == [-1, 0, -1, 0]
    assert sim.stats.bytes_stored["out"] == 8


def _alu(op, imm=0, use_imm=1, n=2, **kw):
    return isa.Alu(alu_opcode=op, use_imm=use_imm, imm=imm, uop_bgn=0, uop_end=1, iter_out=1,
                   iter_in=n, dst_factor_in=1, **kw)


def _sim_with_acc(values):
    sim = Simulator(SMALL, dram_bytes=4096)
    sim.uop[0] = (0, 4, 0)   # dst row 0, src row 4
    sim.acc[:2, 0] = np.asarray(values, dtype=np.int32).reshape(2, 4)
    return sim


@pytest.mark.parametrize("op, imm, expect", [
    (isa.ALU_MIN, 5, lambda a: np.minimum(a, 5)),
    (isa.ALU_MAX, -3, lambda a: np.maximum(a, -3)),
    (isa.ALU_ADD, 1000, lambda a: a + 1000),
    (isa.ALU_SHR, 3, lambda a: a >> 3),                 # arithmetic (floor) shift
    (isa.ALU_SHR, -4, lambda a: a << 4),                # negative amount shifts left
    (isa.ALU_SHR, 200, lambda a: a >> 31),              # magnitude saturates at 31
])
def test_alu_immediate_ops(op, imm, expect):
    a = np.array([-100, -7, -1, 0, 1, 7, 100, 12345], dtype=np.int64)
    sim = _sim_with_acc(a)
    sim.run([_alu(op, imm), FIN])
    assert np.array_equal(sim.acc[:2, 0].reshape(-1), expect(a).astype(np.int32))


def test_alu_add_wraps_and_vector_operand():
    a = np.array([2**31 - 1, -2**31, 5, 6, 7, 8, 9, 10], dtype=np.int64)
    sim = _sim_with_acc(a)
    sim.acc[4:6, 0] = np.array([1, -1, 2, 3, -3, 4, 33, -2], dtype=np.int32).reshape(2, 4)
    sim.run([_alu(isa.ALU_ADD, use_imm=0, src_factor_in=1), FIN])
    assert list(sim.acc[:2, 0].reshape(-1)) == [-2**31, 2**31 - 1, 7, 9, 4, 12, 42, 8]
    # vector SHR with per-lane amounts, negative = left
    sim.acc[4, 0] = [1, -2, 40, 0]
    sim.acc[0, 0] = [-9, 3, -1, 5]
    sim.run([_alu(isa.ALU_SHR, use_imm=0, n=1), FIN])
    assert list(sim.acc[0, 0]) == [-5, 12, -1, 5]


def test_alu_order_dependent_loop_runs_sequentially():
    # dst row 0 twice (dst factor 0): ADD 3 applied twice
    sim = _sim_with_acc(np.zeros(8))
    sim.run([isa.Alu(alu_opcode=isa.ALU_ADD, use_imm=1, imm=3, uop_end=1, iter_in=2), FIN])
    assert np.all(sim.acc[0, 0] == 6)
    # a prefix sum: acc[j+1] += acc[j] reads rows written earlier in the same instruction
    sim = Simulator(SMALL, dram_bytes=4096)
    sim.uop[0] = (1, 0, 0)
    sim.acc[:4, 0, 0] = [1, 1, 1, 1]
    sim.run([isa.Alu(alu_opcode=isa.ALU_ADD, uop_end=1, iter_in=3, dst_factor_in=1,
                     src_factor_in=1), FIN])
    assert list(sim.acc[:4, 0, 0]) == [1, 2, 3, 4]


def _random_gemm_state(sim, rng, codes=None):
    sim.inp[:] = rng.integers(-128, 128, sim.inp.shape)
    sim.wgt[:] = rng.integers(-128, 128, sim.wgt.shape) if codes is None else codes
    sim.acc[:] = rng.integers(-1000, 1000, sim.acc.shape)


def test_gemm_loop_nest_matches_naive_and_sequential():
    rng = np.random.default_rng(1)
    g = isa.Gemm(uop_bgn=2, uop_end=5, iter_out=3, iter_in=2, dst_factor_out=5, dst_factor_in=1,
                 src_factor_out=7, src_factor_in=2, wgt_factor_out=1, wgt_factor_in=3)
    sims = [Simulator(SMALL, dram_bytes=64, vectorize=v) for v in (True, False)]
    for sim in sims:
        rng = np.random.default_rng(1)
        _random_gemm_state(sim, rng)
        sim.uop[2:5] = [(0, 0, 0), (1, 3, 1), (0, 1, 2)]   # dst 0 twice: accumulation order
    acc = sims[0].acc.astype(np.int64).copy()
    for i in range(3):
        for j in range(2):
            for d, s, w in [(0, 0, 0), (1, 3, 1), (0, 1, 2)]:
                acc[5 * i + j + d] += sims[0].inp[7 * i + 2 * j + s].astype(np.int64) @ \
                    sims[0].wgt[i + 3 * j + w].astype(np.int64).T
    for sim in sims:
        sim.run([g, FIN])
        assert np.array_equal(sim.acc, acc.astype(np.int32))
        assert sim.stats.gemm_uops == 18 and sim.stats.gemm_macs == 18 * 16
        assert sim.stats.module_busy["compute"] == SMALL.INSN_OVERHEAD_CYCLES + 18 + 1
    sims[0].run([isa.Gemm(reset=1, uop_bgn=2, uop_end=5, iter_out=3, iter_in=2,
                          dst_factor_out=5, dst_factor_in=1), FIN])
    touched = sorted({5 * i + j + d for i in range(3) for j in range(2) for d in (0, 1)})
    assert np.all(sims[0].acc[touched] == 0) and sims[0].stats.gemm_reset_uops == 18
    untouched = [r for r in range(13) if r not in touched]
    assert np.array_equal(sims[0].acc[untouched], acc[untouched].astype(np.int32))


@settings(max_examples=40, deadline=None)
@given(P=st.integers(0, 6), seed=st.integers(0, 2**32 - 1), zero_frac=st.floats(0, 0.5))
def test_shift_mode_equals_int8_mac_on_decoded_weights(P, seed, zero_frac):
    """sum sign*(x << (P-p)) == int8 MAC with w = sign*2^(P-p) (fits int8 for P <= 6)."""
    rng = np.random.default_rng(seed)
    codes = (rng.integers(1, P + 2, (8, 16, 16))
             * rng.choice([-1, 1], (8, 16, 16))).astype(np.int8)
    codes[rng.random(codes.shape) < zero_frac] = 0
    dec = code_weights(codes, P)
    assert dec.min() >= -128 and dec.max() <= 127
    g = isa.Gemm(uop_bgn=0, uop_end=4, iter_out=2, iter_in=3, dst_factor_out=3,
                 dst_factor_in=1, src_factor_out=2, src_factor_in=5, wgt_factor_out=4)
    results = []
    for mode, w in (("shift", codes), ("int8", dec.astype(np.int8))):
        sim = Simulator(CFG, dram_bytes=64, wgt_mode=mode, shift_P=P)
        r = np.random.default_rng(seed + 1)
        sim.inp[:32] = r.integers(-128, 128, (32, 1, 16))
        sim.acc[:16] = r.integers(-2**20, 2**20, (16, 1, 16))
        sim.wgt[:8] = w
        sim.uop[:4] = [(0, 0, 0), (1, 1, 1), (2, 3, 2), (1, 2, 3)]
        sim.run([g, FIN])
        results.append(sim.acc[:16].copy())
    assert np.array_equal(results[0], results[1])


def test_decoded_shift_weights_leave_int8_above_P_6():
    assert code_weights(np.array([1, -1], np.int8), 6).tolist() == [64, -64]
    assert code_weights(np.array([1], np.int8), 7).tolist() == [128]   # not int8


def test_shift_mode_rejects_out_of_range_codes():
    sim = Simulator(SMALL, dram_bytes=64, wgt_mode="shift", shift_P=2)
    sim.wgt[0, 0, 0] = 5      # p = 4 > P = 2: negative shift amount
    with pytest.raises(SimError, match="outside"):
        sim.run([isa.Gemm(uop_end=1), FIN])
    with pytest.raises(SimError, match="shift_P"):
        Simulator(SMALL, wgt_mode="shift", shift_P=16)


def test_dependency_tokens_order_modules():
    """A STORE dispatched before the compute that produces its data waits on its token."""
    def stream(with_tokens):
        return [isa.LoadStore(store=True, mem_type=isa.MEM_OUT, pop_prev=int(with_tokens)),
                isa.Alu(alu_opcode=isa.ALU_ADD, use_imm=1, imm=7, uop_end=1,
                        push_next=int(with_tokens)),
                FIN]
    for with_tokens, expect in ((True, 7), (False, 0)):
        sim = Simulator(SMALL, dram_bytes=64)
        sim.run(stream(with_tokens))
        assert sim.dram.view(np.int8)[0] == expect
    # the token also orders time: the store starts after the ALU ends
    sim = Simulator(SMALL, dram_bytes=64)
    st_ = sim.run(stream(True))
    alu_end = SMALL.INSN_OVERHEAD_CYCLES + 1
    assert st_.cycles == alu_end + SMALL.DRAM_LATENCY_CYCLES + 1


def test_deadlock_detected():
    with pytest.raises(DeadlockError, match="compute module at instruction 0.*l2c"):
        Simulator(SMALL).run([isa.Gemm(uop_end=1, pop_prev=1), FIN])
    # store waits for compute, compute waits for store: a cycle
    with pytest.raises(DeadlockError, match="store module.*c2s"):
        Simulator(SMALL).run([
            isa.LoadStore(store=True, mem_type=isa.MEM_OUT, pop_prev=1, push_prev=1),
            isa.Alu(uop_end=1, pop_next=1, push_next=1), FIN])


def test_illegal_flags_and_finish():
    with pytest.raises(SimError, match="load module has no such neighbour"):
        Simulator(SMALL).run([isa.LoadStore(mem_type=isa.MEM_INP, pop_prev=1), FIN])
    with pytest.raises(SimError, match="store module has no such neighbour"):
        Simulator(SMALL).run([isa.LoadStore(store=True, mem_type=isa.MEM_OUT, push_next=1), FIN])
    with pytest.raises(SimError, match="FINISH"):
        Simulator(SMALL).run([isa.Alu(uop_end=1)])
    with pytest.raises(SimError, match="follows FINISH"):
        Simulator(SMALL).run([FIN, isa.Alu(uop_end=1)])
    with pytest.raises(SimError, match="out is store-only"):
        Simulator(SMALL).run([isa.LoadStore(mem_type=isa.MEM_OUT), FIN])
    st_ = Simulator(SMALL).run(isa.encode_stream([FIN]))
    assert st_.insns["FINISH"] == 1 and st_.cycles == 1


def test_dump_gemm_vectors(tmp_path):
    sim = Simulator(SMALL, dram_bytes=64, trace_gemm=True)
    _random_gemm_state(sim, np.random.default_rng(3))
    sim.uop[:2] = [(0, 1, 2), (0, 2, 3)]
    sim.run([isa.Gemm(uop_end=2, iter_out=2, dst_factor_out=1), FIN])
    assert len(sim.gemm_records) == 4
    r = sim.gemm_records[1]
    assert np.array_equal(r.acc_out, r.acc_in + r.wgt.astype(np.int64) @ r.inp.astype(np.int64))
    d = dump_gemm_vectors(sim, tmp_path, SMALL)
    lines = (d / "wgt.hex").read_text().split()
    assert len(lines) == 4 and len(lines[0]) == 4 * 4 * 2
    assert int(lines[0], 16) & 0xFF == int(sim.gemm_records[0].wgt[0, 0]) & 0xFF
