"""VTA instruction set: 128-bit instructions and 32-bit micro-ops (uops).

Bit layout (little-endian bit numbering, bit 0 = LSB of the 128-bit word; encoded to
16 bytes little-endian).  Common header of every instruction:

    [0..2]  opcode  LOAD=0 STORE=1 GEMM=2 FINISH=3 ALU=4
    [3]     pop_prev   [4] pop_next   [5] push_prev   [6] push_next

LOAD / STORE (``LoadStore``):

    [7..9]    memory type   uop=0 wgt=1 inp=2 acc=3 out=4
    [10..25]  SRAM base (in elements of that memory type)
    [26..57]  DRAM base (in elements of that memory type; see ``config.VTAConfig.*_elem_bytes``)
    [58..63]  unused (0)
    [64..79]  y_size        [80..95] x_size        [96..111] x_stride (DRAM elements)
    [112..115] y_pad_top  [116..119] y_pad_bottom  [120..123] x_pad_left  [124..127] x_pad_right

GEMM (``Gemm``):

    [7]       reset        [8..20] uop_bgn   [21..34] uop_end (exclusive)
    [35..48]  iter_out     [49..62] iter_in  [63] unused (0)
    [64..74]  dst_factor_out  [75..85]  src_factor_out  [86..95]   wgt_factor_out
    [96..106] dst_factor_in   [107..117] src_factor_in  [118..127] wgt_factor_in

ALU (``Alu``): same header and loop fields as GEMM (bit 7 = reset), then

    [64..74]  dst_factor_out  [75..85] src_factor_out
    [86..96]  dst_factor_in   [97..107] src_factor_in
    [108..110] alu opcode MIN=0 MAX=1 ADD=2 SHR=3   [111] use_imm   [112..127] imm (int16)

FINISH (``Finish``): only the header.

Uop (``Uop``, 32 bits): dst [0..10] (acc row), src [11..21] (inp row for GEMM, acc row
for ALU), wgt [22..31] (weight block).

Every field is range-checked on construction; ``decode`` rejects words with bits set in
unused positions, so ``decode(encode(i)) == i`` and ``encode(decode(w)) == w``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Union


class IsaError(ValueError):
    """An instruction or uop field is out of range, or a word does not decode."""


OP_LOAD, OP_STORE, OP_GEMM, OP_FINISH, OP_ALU = 0, 1, 2, 3, 4
OPCODE_NAMES = {OP_LOAD: "LOAD", OP_STORE: "STORE", OP_GEMM: "GEMM", OP_FINISH: "FINISH",
                OP_ALU: "ALU"}

MEM_UOP, MEM_WGT, MEM_INP, MEM_ACC, MEM_OUT = 0, 1, 2, 3, 4
MEM_NAMES = {MEM_UOP: "uop", MEM_WGT: "wgt", MEM_INP: "inp", MEM_ACC: "acc", MEM_OUT: "out"}

ALU_MIN, ALU_MAX, ALU_ADD, ALU_SHR = 0, 1, 2, 3
ALU_NAMES = {ALU_MIN: "MIN", ALU_MAX: "MAX", ALU_ADD: "ADD", ALU_SHR: "SHR"}

INSN_BYTES = 16
UOP_BYTES = 4

# (name, lsb, width, signed) for every field after the 7-bit common header.
_HEADER = (("pop_prev", 3, 1, False), ("pop_next", 4, 1, False),
           ("push_prev", 5, 1, False), ("push_next", 6, 1, False))
_LOADSTORE = _HEADER + (
    ("mem_type", 7, 3, False), ("sram_base", 10, 16, False), ("dram_base", 26, 32, False),
    ("y_size", 64, 16, False), ("x_size", 80, 16, False), ("x_stride", 96, 16, False),
    ("y_pad_top", 112, 4, False), ("y_pad_bottom", 116, 4, False),
    ("x_pad_left", 120, 4, False), ("x_pad_right", 124, 4, False),
)
_LOOP = (("reset", 7, 1, False), ("uop_bgn", 8, 13, False), ("uop_end", 21, 14, False),
         ("iter_out", 35, 14, False), ("iter_in", 49, 14, False))
_GEMM = _HEADER + _LOOP + (
    ("dst_factor_out", 64, 11, False), ("src_factor_out", 75, 11, False),
    ("wgt_factor_out", 86, 10, False), ("dst_factor_in", 96, 11, False),
    ("src_factor_in", 107, 11, False), ("wgt_factor_in", 118, 10, False),
)
_ALU = _HEADER + _LOOP + (
    ("dst_factor_out", 64, 11, False), ("src_factor_out", 75, 11, False),
    ("dst_factor_in", 86, 11, False), ("src_factor_in", 97, 11, False),
    ("alu_opcode", 108, 3, False), ("use_imm", 111, 1, False), ("imm", 112, 16, True),
)
_FINISH = _HEADER
_UOP = (("dst", 0, 11, False), ("src", 11, 11, False), ("wgt", 22, 10, False))


def _check(cls_name: str, layout, obj) -> None:
    for name, _lsb, width, signed in layout:
        v = getattr(obj, name)
        if isinstance(v, bool):
            v = int(v)
            object.__setattr__(obj, name, v)
        if not isinstance(v, int):
            raise IsaError(f"{cls_name}.{name} must be an int, got {type(v).__name__}")
        lo, hi = ((-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed
                  else (0, (1 << width) - 1))
        if not lo <= v <= hi:
            raise IsaError(f"{cls_name}.{name}={v} out of range [{lo}, {hi}] ({width}-bit field)")


def _pack(layout, obj, word: int = 0) -> int:
    for name, lsb, width, _signed in layout:
        word |= (getattr(obj, name) & ((1 << width) - 1)) << lsb
    return word


def _unpack(layout, word: int) -> dict:
    out = {}
    for name, lsb, width, signed in layout:
        v = (word >> lsb) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        out[name] = v
    return out


def _used_mask(layout, header_bits: int = 3) -> int:
    m = (1 << header_bits) - 1
    for _n, lsb, width, _s in layout:
        m |= ((1 << width) - 1) << lsb
    return m


class _Insn:
    OPCODE: ClassVar[int]
    LAYOUT: ClassVar[tuple]

    def __post_init__(self) -> None:
        _check(type(self).__name__, self.LAYOUT, self)

    def to_int(self) -> int:
        """The 128-bit instruction word as a Python int."""
        return _pack(self.LAYOUT, self, self.OPCODE)

    def encode(self) -> bytes:
        """16 bytes, little-endian."""
        return self.to_int().to_bytes(INSN_BYTES, "little")


@dataclass(frozen=True)
class LoadStore(_Insn):
    """LOAD (``store=False``) or STORE (``store=True``) of a 2-D strided DRAM region."""

    store: bool = False
    mem_type: int = MEM_INP
    sram_base: int = 0
    dram_base: int = 0
    y_size: int = 1
    x_size: int = 1
    x_stride: int = 1
    y_pad_top: int = 0
    y_pad_bottom: int = 0
    x_pad_left: int = 0
    x_pad_right: int = 0
    pop_prev: int = 0
    pop_next: int = 0
    push_prev: int = 0
    push_next: int = 0
    LAYOUT: ClassVar[tuple] = _LOADSTORE

    @property
    def OPCODE(self) -> int:  # type: ignore[override]
        return OP_STORE if self.store else OP_LOAD

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", bool(self.store))
        super().__post_init__()
        if self.mem_type not in MEM_NAMES:
            raise IsaError(f"LoadStore.mem_type={self.mem_type} is not a memory type "
                           f"({', '.join(f'{k}={v}' for k, v in MEM_NAMES.items())})")


@dataclass(frozen=True)
class Gemm(_Insn):
    """GEMM over the uop loop nest ``iter_out x iter_in x uops[uop_bgn:uop_end]``."""

    reset: int = 0
    uop_bgn: int = 0
    uop_end: int = 1
    iter_out: int = 1
    iter_in: int = 1
    dst_factor_out: int = 0
    src_factor_out: int = 0
    wgt_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_in: int = 0
    wgt_factor_in: int = 0
    pop_prev: int = 0
    pop_next: int = 0
    push_prev: int = 0
    push_next: int = 0
    OPCODE: ClassVar[int] = OP_GEMM
    LAYOUT: ClassVar[tuple] = _GEMM


@dataclass(frozen=True)
class Alu(_Insn):
    """Vector ALU op on accumulator rows: ``acc[dst] = op(acc[dst], imm or acc[src])``."""

    alu_opcode: int = ALU_ADD
    use_imm: int = 0
    imm: int = 0
    reset: int = 0
    uop_bgn: int = 0
    uop_end: int = 1
    iter_out: int = 1
    iter_in: int = 1
    dst_factor_out: int = 0
    src_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_in: int = 0
    pop_prev: int = 0
    pop_next: int = 0
    push_prev: int = 0
    push_next: int = 0
    OPCODE: ClassVar[int] = OP_ALU
    LAYOUT: ClassVar[tuple] = _ALU

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alu_opcode not in ALU_NAMES:
            raise IsaError(f"Alu.alu_opcode={self.alu_opcode} is not an ALU op "
                           f"({', '.join(f'{k}={v}' for k, v in ALU_NAMES.items())})")


@dataclass(frozen=True)
class Finish(_Insn):
    """End of the instruction stream."""

    pop_prev: int = 0
    pop_next: int = 0
    push_prev: int = 0
    push_next: int = 0
    OPCODE: ClassVar[int] = OP_FINISH
    LAYOUT: ClassVar[tuple] = _FINISH


Instruction = Union[LoadStore, Gemm, Alu, Finish]


@dataclass(frozen=True)
class Uop:
    """A GEMM/ALU micro-op: base indices added to the loop-nest offsets."""

    dst: int = 0
    src: int = 0
    wgt: int = 0
    LAYOUT: ClassVar[tuple] = _UOP

    def __post_init__(self) -> None:
        _check("Uop", self.LAYOUT, self)

    def to_int(self) -> int:
        return _pack(self.LAYOUT, self)

    def encode(self) -> bytes:
        """4 bytes, little-endian."""
        return self.to_int().to_bytes(UOP_BYTES, "little")

    @classmethod
    def decode(cls, data: bytes | int) -> "Uop":
        word = int.from_bytes(data, "little") if isinstance(data, (bytes, bytearray)) else data
        if not 0 <= word < (1 << 32):
            raise IsaError(f"uop word {word:#x} is not 32 bits")
        return cls(**_unpack(cls.LAYOUT, word))


_CLASS_BY_OPCODE = {OP_GEMM: Gemm, OP_ALU: Alu, OP_FINISH: Finish}


def decode(data: bytes | int) -> Instruction:
    """Decode a 128-bit instruction (16 little-endian bytes or an int)."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) != INSN_BYTES:
            raise IsaError(f"an instruction is {INSN_BYTES} bytes, got {len(data)}")
        word = int.from_bytes(data, "little")
    else:
        word = int(data)
    if not 0 <= word < (1 << 128):
        raise IsaError(f"instruction word {word:#x} is not 128 bits")
    opcode = word & 0b111
    if opcode in (OP_LOAD, OP_STORE):
        cls, kw = LoadStore, {"store": opcode == OP_STORE}
    elif opcode in _CLASS_BY_OPCODE:
        cls, kw = _CLASS_BY_OPCODE[opcode], {}
    else:
        raise IsaError(f"unknown opcode {opcode} in instruction {word:#034x}")
    stray = word & ~_used_mask(cls.LAYOUT)
    if stray:
        raise IsaError(f"{OPCODE_NAMES[opcode]} instruction {word:#034x} has bits set in unused "
                       f"positions (mask {stray:#034x})")
    return cls(**_unpack(cls.LAYOUT, word), **kw)


def encode_stream(insns) -> bytes:
    """Concatenate encoded instructions (the instruction stream as it sits in DRAM)."""
    return b"".join(i.encode() for i in insns)


def decode_stream(data: bytes) -> list:
    if len(data) % INSN_BYTES:
        raise IsaError(f"instruction stream of {len(data)} bytes is not a multiple of {INSN_BYTES}")
    return [decode(data[i:i + INSN_BYTES]) for i in range(0, len(data), INSN_BYTES)]


def describe(insn: Instruction) -> str:
    """One-line human-readable form of an instruction."""
    if isinstance(insn, LoadStore):
        name = "STORE" if insn.store else "LOAD"
        body = (f"{MEM_NAMES[insn.mem_type]} sram={insn.sram_base} dram={insn.dram_base} "
                f"y={insn.y_size} x={insn.x_size} stride={insn.x_stride} "
                f"pad=({insn.y_pad_top},{insn.y_pad_bottom},{insn.x_pad_left},{insn.x_pad_right})")
    elif isinstance(insn, Gemm):
        name, body = "GEMM", (f"reset={insn.reset} uop=[{insn.uop_bgn},{insn.uop_end}) "
                              f"iter={insn.iter_out}x{insn.iter_in}")
    elif isinstance(insn, Alu):
        name = f"ALU.{ALU_NAMES[insn.alu_opcode]}"
        body = (f"{'imm=' + str(insn.imm) if insn.use_imm else 'vec'} reset={insn.reset} "
                f"uop=[{insn.uop_bgn},{insn.uop_end}) iter={insn.iter_out}x{insn.iter_in}")
    else:
        name, body = "FINISH", ""
    deps = "".join(f" {f}" for f in ("pop_prev", "pop_next", "push_prev", "push_next")
                   if getattr(insn, f))
    return f"{name} {body}{deps}".strip()
