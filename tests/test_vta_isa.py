"""VTA ISA: encode/decode round trips and field validation."""
import pytest
from hypothesis import given, settings, strategies as st

from shiftc.targets.vta import isa


def u(bits):
    return st.integers(0, (1 << bits) - 1)


flags = dict(pop_prev=u(1), pop_next=u(1), push_prev=u(1), push_next=u(1))

loadstore = st.builds(
    isa.LoadStore, store=st.booleans(), mem_type=st.integers(0, 4), sram_base=u(16),
    dram_base=u(32), y_size=u(16), x_size=u(16), x_stride=u(16), y_pad_top=u(4),
    y_pad_bottom=u(4), x_pad_left=u(4), x_pad_right=u(4), **flags)
loop = dict(reset=u(1), uop_bgn=u(13), uop_end=u(14), iter_out=u(14), iter_in=u(14))
gemm = st.builds(isa.Gemm, dst_factor_out=u(11), src_factor_out=u(11), wgt_factor_out=u(10),
                 dst_factor_in=u(11), src_factor_in=u(11), wgt_factor_in=u(10), **loop, **flags)
alu = st.builds(isa.Alu, alu_opcode=st.integers(0, 3), use_imm=u(1),
                imm=st.integers(-(1 << 15), (1 << 15) - 1), dst_factor_out=u(11),
                src_factor_out=u(11), dst_factor_in=u(11), src_factor_in=u(11), **loop, **flags)
finish = st.builds(isa.Finish, **flags)
any_insn = st.one_of(loadstore, gemm, alu, finish)


@settings(max_examples=300, deadline=None)
@given(any_insn)
def test_instruction_round_trip(insn):
    data = insn.encode()
    assert len(data) == 16
    assert isa.decode(data) == insn
    assert isa.decode(insn.to_int()) == insn
    assert isa.decode(data).encode() == data


@settings(max_examples=200, deadline=None)
@given(st.builds(isa.Uop, dst=u(11), src=u(11), wgt=u(10)))
def test_uop_round_trip(uop):
    assert isa.Uop.decode(uop.encode()) == uop
    assert uop.to_int() < (1 << 32)


def test_field_positions_match_spec():
    # opcode 0..2, flags 3..6, mem type 7..9, sram 10..25, dram 26..57, sizes 64.., pads 112..
    w = isa.LoadStore(store=True, mem_type=isa.MEM_OUT, sram_base=1, dram_base=1, y_size=1,
                      x_size=1, x_stride=1, y_pad_top=1, y_pad_bottom=1, x_pad_left=1,
                      x_pad_right=1, push_next=1).to_int()
    expect = (1 | 1 << 6 | 4 << 7 | 1 << 10 | 1 << 26 | 1 << 64 | 1 << 80 | 1 << 96
              | 1 << 112 | 1 << 116 | 1 << 120 | 1 << 124)
    assert w == expect
    a = isa.Alu(alu_opcode=isa.ALU_SHR, use_imm=1, imm=-1).to_int()
    assert a & 7 == 4 and (a >> 108) & 7 == 3 and (a >> 111) & 1 == 1
    assert (a >> 112) == 0xFFFF
    g = isa.Gemm(reset=1, uop_bgn=3, uop_end=5, iter_out=7, iter_in=9, wgt_factor_in=1).to_int()
    assert (g >> 7) & 1 == 1 and (g >> 8) & 0x1FFF == 3 and (g >> 21) & 0x3FFF == 5
    assert (g >> 35) & 0x3FFF == 7 and (g >> 49) & 0x3FFF == 9 and g >> 118 == 1
    assert isa.Uop(dst=1, src=1, wgt=1).to_int() == 1 | 1 << 11 | 1 << 22


@pytest.mark.parametrize("make, msg", [
    (lambda: isa.Gemm(uop_bgn=1 << 13), "uop_bgn"),
    (lambda: isa.Gemm(wgt_factor_out=1024), "wgt_factor_out"),
    (lambda: isa.Alu(imm=1 << 15), "imm"),
    (lambda: isa.Alu(alu_opcode=5), "alu_opcode"),
    (lambda: isa.LoadStore(mem_type=7), "mem_type"),
    (lambda: isa.LoadStore(y_pad_top=16), "y_pad_top"),
    (lambda: isa.LoadStore(dram_base=-1), "dram_base"),
    (lambda: isa.Uop(wgt=1024), "wgt"),
    (lambda: isa.Finish(pop_prev=2), "pop_prev"),
])
def test_out_of_range_fields_rejected(make, msg):
    with pytest.raises(isa.IsaError, match=msg):
        make()


def test_decode_rejects_bad_words():
    with pytest.raises(isa.IsaError, match="unknown opcode"):
        isa.decode(7)
    with pytest.raises(isa.IsaError, match="unused"):
        isa.decode(isa.Finish().to_int() | 1 << 100)
    with pytest.raises(isa.IsaError, match="16 bytes"):
        isa.decode(b"\0" * 15)
    with pytest.raises(isa.IsaError, match="unused"):
        isa.decode(isa.Gemm().to_int() | 1 << 63)
