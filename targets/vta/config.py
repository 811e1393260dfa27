"""VTA hardware configuration: the JSON file, derived sizes and validation.

The configuration follows VTA's published convention of log2-valued parameters in a JSON
file (``vta_config.json`` next to this module holds the default: int8 inputs and weights,
int32 accumulator, BATCH=1, BLOCK_IN=BLOCK_OUT=16, buffers inp 32 KiB, wgt 256 KiB,
acc 128 KiB, uop 32 KiB).

Additions of shiftc (not in VTA):

* ``SHIFT_BITS``: width of the shift amount ``q = P - p`` in the shift-weight GEMM core
  (``wgt_mode='shift'``); ``P`` and every ``q`` must lie in ``[0, 2**SHIFT_BITS - 1]``.
* Cycle-model constants (see ``simulator.py``): ``DRAM_BYTES_PER_CYCLE``,
  ``DRAM_LATENCY_CYCLES`` (fixed cost of every LOAD/STORE) and ``INSN_OVERHEAD_CYCLES``
  (fixed cost of every GEMM/ALU instruction: fetch, decode, pipeline fill).

There is no separate output buffer: STORE reads accumulator rows and truncates each
int32 lane to its low 8 bits (as the brief for this backend states), so the "out"
memory type addresses the accumulator SRAM.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG_PATH = Path(__file__).with_name("vta_config.json")

_LOG_KEYS = (
    "LOG_INP_WIDTH", "LOG_WGT_WIDTH", "LOG_ACC_WIDTH", "LOG_BATCH", "LOG_BLOCK_IN",
    "LOG_BLOCK_OUT", "LOG_UOP_BUFF_SIZE", "LOG_INP_BUFF_SIZE", "LOG_WGT_BUFF_SIZE",
    "LOG_ACC_BUFF_SIZE",
)
_INT_KEYS = ("SHIFT_BITS", "DRAM_BYTES_PER_CYCLE", "DRAM_LATENCY_CYCLES", "INSN_OVERHEAD_CYCLES")

# Index-field widths fixed by the ISA (isa.py); the buffers must be addressable by them.
UOP_DST_BITS, UOP_SRC_BITS, UOP_WGT_BITS = 11, 11, 10
SRAM_BASE_BITS = 16
UOP_BGN_BITS = 13


class ConfigError(ValueError):
    """An invalid VTA configuration."""


@dataclass(frozen=True)
class VTAConfig:
    """A VTA configuration (log2 parameters as in VTA's JSON file) plus derived sizes."""

    LOG_INP_WIDTH: int = 3
    LOG_WGT_WIDTH: int = 3
    LOG_ACC_WIDTH: int = 5
    LOG_BATCH: int = 0
    LOG_BLOCK_IN: int = 4
    LOG_BLOCK_OUT: int = 4
    LOG_UOP_BUFF_SIZE: int = 15
    LOG_INP_BUFF_SIZE: int = 15
    LOG_WGT_BUFF_SIZE: int = 18
    LOG_ACC_BUFF_SIZE: int = 17
    SHIFT_BITS: int = 4
    DRAM_BYTES_PER_CYCLE: int = 8
    DRAM_LATENCY_CYCLES: int = 32
    INSN_OVERHEAD_CYCLES: int = 4
    TARGET: str = "sim"

    def __post_init__(self) -> None:
        self.validate()

    # ---- loading -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "VTAConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown VTA config keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path = DEFAULT_CONFIG_PATH) -> "VTAConfig":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read VTA config {path}: {exc}") from None
        return cls.from_dict(d)

    def replace(self, **kw) -> "VTAConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ---- derived sizes -------------------------------------------------------------
    inp_width = property(lambda s: 1 << s.LOG_INP_WIDTH)
    wgt_width = property(lambda s: 1 << s.LOG_WGT_WIDTH)
    acc_width = property(lambda s: 1 << s.LOG_ACC_WIDTH)
    batch = property(lambda s: 1 << s.LOG_BATCH)
    block_in = property(lambda s: 1 << s.LOG_BLOCK_IN)
    block_out = property(lambda s: 1 << s.LOG_BLOCK_OUT)
    uop_buff_bytes = property(lambda s: 1 << s.LOG_UOP_BUFF_SIZE)
    inp_buff_bytes = property(lambda s: 1 << s.LOG_INP_BUFF_SIZE)
    wgt_buff_bytes = property(lambda s: 1 << s.LOG_WGT_BUFF_SIZE)
    acc_buff_bytes = property(lambda s: 1 << s.LOG_ACC_BUFF_SIZE)

    @property
    def inp_elem_bytes(self) -> int:
        """Bytes of one input SRAM row: BATCH x BLOCK_IN int8."""
        return self.batch * self.block_in * self.inp_width // 8

    @property
    def wgt_elem_bytes(self) -> int:
        """Bytes of one weight SRAM entry: a BLOCK_OUT x BLOCK_IN int8 block."""
        return self.block_out * self.block_in * self.wgt_width // 8

    @property
    def acc_elem_bytes(self) -> int:
        """Bytes of one accumulator SRAM row: BATCH x BLOCK_OUT int32."""
        return self.batch * self.block_out * self.acc_width // 8

    @property
    def out_elem_bytes(self) -> int:
        """Bytes of one output row in DRAM: BATCH x BLOCK_OUT int8 (truncated acc)."""
        return self.batch * self.block_out * self.inp_width // 8

    uop_elem_bytes = 4

    inp_depth = property(lambda s: s.inp_buff_bytes // s.inp_elem_bytes)
    wgt_depth = property(lambda s: s.wgt_buff_bytes // s.wgt_elem_bytes)
    acc_depth = property(lambda s: s.acc_buff_bytes // s.acc_elem_bytes)
    uop_depth = property(lambda s: s.uop_buff_bytes // s.uop_elem_bytes)

    @property
    def shift_max(self) -> int:
        """Largest shift amount q (and largest P) the shift GEMM core supports."""
        return (1 << self.SHIFT_BITS) - 1

    # ---- validation ----------------------------------------------------------------
    def validate(self) -> None:
        for k in _LOG_KEYS + _INT_KEYS:
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"VTA config {k} must be a non-negative integer, got {v!r}")
        if (self.LOG_INP_WIDTH, self.LOG_WGT_WIDTH, self.LOG_ACC_WIDTH) != (3, 3, 5):
            raise ConfigError("only int8 inputs/weights with an int32 accumulator are supported "
                              "(LOG_INP_WIDTH=3, LOG_WGT_WIDTH=3, LOG_ACC_WIDTH=5)")
        if self.LOG_BATCH != 0:
            raise ConfigError("only BATCH=1 (LOG_BATCH=0) is supported")
        if not 0 <= self.LOG_BLOCK_IN <= 6 or not 0 <= self.LOG_BLOCK_OUT <= 6:
            raise ConfigError("LOG_BLOCK_IN / LOG_BLOCK_OUT must be in [0, 6]")
        if self.DRAM_BYTES_PER_CYCLE < 1:
            raise ConfigError("DRAM_BYTES_PER_CYCLE must be >= 1")
        if not 1 <= self.SHIFT_BITS <= 5:
            raise ConfigError("SHIFT_BITS must be in [1, 5] (shift amounts up to 31)")
        for name, depth, bits in (
            ("inp", self.inp_depth, UOP_SRC_BITS), ("wgt", self.wgt_depth, UOP_WGT_BITS),
            ("acc", self.acc_depth, UOP_DST_BITS), ("uop", self.uop_depth, UOP_BGN_BITS),
        ):
            if depth < 1:
                raise ConfigError(f"{name} buffer holds no element")
            if depth > (1 << bits):
                raise ConfigError(f"{name} buffer depth {depth} exceeds the {bits}-bit ISA index "
                                  f"field (max {1 << bits} entries)")

    def describe(self) -> str:
        return (f"VTA BATCH={self.batch} BLOCK_IN={self.block_in} BLOCK_OUT={self.block_out} "
                f"depths inp={self.inp_depth} wgt={self.wgt_depth} acc={self.acc_depth} "
                f"uop={self.uop_depth}")


def load_config(path: str | Path | None = None) -> VTAConfig:
    """Load the VTA configuration (the packaged default when ``path`` is None)."""
    return VTAConfig.from_json(DEFAULT_CONFIG_PATH if path is None else path)
