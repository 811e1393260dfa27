"""Functional (bit-exact) simulator of the VTA-compatible accelerator, with a cycle estimate.

Architecture simulated
----------------------
* DRAM: a flat ``numpy.uint8`` array.  Instruction DRAM addresses are in *elements* of the
  memory type (``config.VTAConfig.*_elem_bytes``): uop 4 B, inp BATCH*BLOCK_IN B, wgt
  BLOCK_OUT*BLOCK_IN B, acc BATCH*BLOCK_OUT*4 B, out BATCH*BLOCK_OUT B.
* SRAMs: ``inp`` (depth x BATCH x BLOCK_IN int8), ``wgt`` (depth x BLOCK_OUT x BLOCK_IN
  int8: int8 weights, or shift codes in ``wgt_mode='shift'``), ``acc`` (depth x BATCH x
  BLOCK_OUT int32) and ``uop`` (depth x (dst, src, wgt)).  There is no separate output
  SRAM: STORE reads accumulator rows and keeps the low 8 bits of every lane.
* Three modules, as in VTA: **load** (LOAD inp / wgt), **compute** (LOAD uop / acc, GEMM,
  ALU, FINISH) and **store** (STORE).  Four dependency-token queues connect them:

      l2c: load.push_next    -> compute.pop_prev
      c2l: compute.push_prev -> load.pop_next
      c2s: compute.push_next -> store.pop_prev
      s2c: store.push_prev   -> compute.pop_next

  A flag naming a neighbour that does not exist (load.pop_prev, store.push_next, ...)
  is rejected.  Pops happen before an instruction runs, pushes after it.  The stream is
  dispatched in order into the three modules; each module runs its instructions in order
  and blocks on a pop from an empty queue.  Functionally, the simulator always runs the
  earliest (in stream order) module head whose pops can be served, so a stream without
  tokens executes in program order (on hardware it would race).  ``schedule=<int seed>``
  instead picks a random ready module at every step: any interleaving the tokens allow.
  A correctly synchronised stream gives the same result under every schedule, so running
  it under several seeds exposes missing tokens (races).  The cycle estimate does not
  depend on the schedule.  If every unfinished module is blocked, the
  stream can never finish and :class:`DeadlockError` names each blocked instruction.

Semantics
---------
* LOAD ``(y_size, x_size, x_stride, pads)``: SRAM row
  ``sram_base + (y_pad_top + y) * W + x_pad_left + x``  (``W = x_pad_left + x_size +
  x_pad_right``) receives DRAM element ``dram_base + y * x_stride + x``; padding rows and
  columns are zero.  Padding is legal for inp and acc only.
* STORE (memory type out only): DRAM out element ``dram_base + y * x_stride + x`` gets the
  low 8 bits of acc row ``sram_base + y * x_size + x``.
* GEMM: for ``i < iter_out``, ``j < iter_in``, ``u`` in ``uop[uop_bgn:uop_end]``:
  ``dst = dst_factor_out*i + dst_factor_in*j + u.dst`` (same for src, wgt);
  ``reset``: ``acc[dst] = 0``; else ``acc[dst] += inp[src] @ W(wgt[wgt])^T`` with int32
  wrap-around.  ``W`` is the int8 block (``wgt_mode='int8'``) or, in ``wgt_mode='shift'``,
  each product ``x * w`` is computed as ``sign * (x << (P - p))`` from the code
  (docs/CONTRACTS.md: 0 = zero, sign = code < 0, p = |code| - 1).
* **Where P lives:** ``P`` is a per-stream control register of the shift GEMM core
  (``Simulator(shift_P=...)``; RTL port ``shift_p``), written by the host before it
  launches a stream, like VTA's instruction-count argument.  It is not encoded in any
  instruction (GEMM has no spare bits).  ``0 <= P <= 2**SHIFT_BITS - 1`` and every code a
  GEMM touches must give ``0 <= P - p <= 2**SHIFT_BITS - 1``, else :class:`SimError`.
* ALU: same loop nest on acc rows; ``b = imm`` (``use_imm``) or ``acc[src]``;
  MIN, MAX, ADD (int32 wrap-around), SHR (arithmetic: ``b >= 0`` shifts right by ``b``,
  ``b < 0`` shifts left by ``-b``; the magnitude saturates at 31, so no shift is ever
  undefined).  ``reset`` sets ``acc[dst] = 0``.
* FINISH ends the stream; instructions after it are an error, and so is a stream without it.

Cycle model (an estimate, not RTL-accurate)
-------------------------------------------
Each module has its own clock; an instruction starts when its module is free and every
token it pops has been pushed (a token is available at the end cycle of its producer).

* LOAD/STORE: ``DRAM_LATENCY_CYCLES + ceil(dram_bytes / DRAM_BYTES_PER_CYCLE)
  + padding_rows`` (one SRAM row write per cycle for padding).
* GEMM: ``INSN_OVERHEAD_CYCLES + iter_out * iter_in * n_uops`` (one BATCH x BLOCK_IN x
  BLOCK_OUT uop per cycle; a reset uop also takes one cycle).
* ALU: ``INSN_OVERHEAD_CYCLES + iter_out * iter_in * n_uops`` (one accumulator row of
  BATCH x BLOCK_OUT lanes per cycle).
* FINISH: 1 cycle.  Total = the cycle at which the last module finishes.
Defaults (vta_config.json): 8 DRAM bytes/cycle (a 64-bit AXI port), 32 cycles DRAM
latency, 4 cycles instruction overhead.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from . import isa
from .config import VTAConfig, load_config

WGT_MODES = ("int8", "shift")

_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


class SimError(RuntimeError):
    """An illegal instruction stream or an out-of-range access."""


class DeadlockError(SimError):
    """Every unfinished module waits on a dependency queue that nothing will fill."""


def wrap_i32(v: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 (what a 32-bit adder does)."""
    v = np.asarray(v, dtype=np.int64)
    return (((v - _I32_MIN) & 0xFFFFFFFF) + _I32_MIN).astype(np.int32)


def decode_shift_codes(codes: np.ndarray, P: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split shift codes into (nonzero mask, negative mask, shift amount q = P - p).

    q is only meaningful where the mask is set (it is 0 elsewhere).
    """
    c = np.asarray(codes).astype(np.int64)
    nz = c != 0
    p = np.abs(c) - 1
    q = np.where(nz, P - p, 0)
    return nz, c < 0, q


@dataclass
class Stats:
    """Counters of one run (cumulative over runs of the same Simulator)."""

    insns: Counter = field(default_factory=Counter)          # by opcode name
    bytes_loaded: Counter = field(default_factory=Counter)   # DRAM bytes read, by memory type
    bytes_stored: Counter = field(default_factory=Counter)   # DRAM bytes written, by memory type
    gemm_uops: int = 0          # uop executions that multiply-accumulate
    gemm_reset_uops: int = 0    # uop executions with reset=1
    gemm_macs: int = 0          # int8 x int8 MACs (wgt_mode='int8')
    gemm_shift_adds: int = 0    # shift + conditional negate + add (wgt_mode='shift')
    alu_vector_ops: int = 0     # accumulator rows processed by the ALU
    alu_lane_ops: int = 0       # individual int32 lane operations
    cycles: int = 0             # estimated end cycle (see module docstring)
    module_busy: Counter = field(default_factory=Counter)    # busy cycles per module

    def to_dict(self) -> dict:
        return {
            "insns": dict(self.insns), "bytes_loaded": dict(self.bytes_loaded),
            "bytes_stored": dict(self.bytes_stored), "gemm_uops": self.gemm_uops,
            "gemm_reset_uops": self.gemm_reset_uops, "gemm_macs": self.gemm_macs,
            "gemm_shift_adds": self.gemm_shift_adds, "alu_vector_ops": self.alu_vector_ops,
            "alu_lane_ops": self.alu_lane_ops, "cycles": self.cycles,
            "module_busy": dict(self.module_busy),
        }


@dataclass
class GemmRecord:
    """One GEMM uop execution as the core sees it (for RTL test vectors)."""

    inp: np.ndarray      # (BLOCK_IN,) int8
    wgt: np.ndarray      # (BLOCK_OUT, BLOCK_IN) int8 weights or codes
    acc_in: np.ndarray   # (BLOCK_OUT,) int32
    acc_out: np.ndarray  # (BLOCK_OUT,) int32


_LOAD, _COMPUTE, _STORE = "load", "compute", "store"
# flag -> (queue popped / pushed) per module; None = the flag is illegal there.
_POPS = {_LOAD: {"pop_prev": None, "pop_next": "c2l"},
         _COMPUTE: {"pop_prev": "l2c", "pop_next": "s2c"},
         _STORE: {"pop_prev": "c2s", "pop_next": None}}
_PUSHES = {_LOAD: {"push_prev": None, "push_next": "l2c"},
           _COMPUTE: {"push_prev": "c2l", "push_next": "c2s"},
           _STORE: {"push_prev": "s2c", "push_next": None}}


def module_of(insn) -> str:
    """Which module executes an instruction."""
    if isinstance(insn, isa.LoadStore):
        if insn.store:
            return _STORE
        return _LOAD if insn.mem_type in (isa.MEM_INP, isa.MEM_WGT) else _COMPUTE
    return _COMPUTE


class Simulator:
    """Bit-exact functional model of the accelerator (see the module docstring)."""

    def __init__(self, cfg: VTAConfig | None = None, dram_bytes: int = 1 << 24,
                 wgt_mode: str = "int8", shift_P: int = 0, trace_gemm: bool = False,
                 vectorize: bool = True, schedule: str | int = "program"):
        self.cfg = cfg or load_config()
        if wgt_mode not in WGT_MODES:
            raise SimError(f"wgt_mode must be one of {WGT_MODES}, got {wgt_mode!r}")
        if not 0 <= int(shift_P) <= self.cfg.shift_max:
            raise SimError(f"shift_P={shift_P} out of range [0, {self.cfg.shift_max}] "
                           f"(SHIFT_BITS={self.cfg.SHIFT_BITS})")
        self.wgt_mode, self.shift_P = wgt_mode, int(shift_P)
        self.trace_gemm, self.vectorize = trace_gemm, vectorize
        if schedule != "program" and not isinstance(schedule, int):
            raise SimError("schedule must be 'program' or an int seed (random interleaving)")
        self.schedule = schedule
        c = self.cfg
        self.dram = np.zeros(int(dram_bytes), dtype=np.uint8)
        self.inp = np.zeros((c.inp_depth, c.batch, c.block_in), dtype=np.int8)
        self.wgt = np.zeros((c.wgt_depth, c.block_out, c.block_in), dtype=np.int8)
        self.acc = np.zeros((c.acc_depth, c.batch, c.block_out), dtype=np.int32)
        self.uop = np.zeros((c.uop_depth, 3), dtype=np.int64)
        self.stats = Stats()
        self.gemm_records: list[GemmRecord] = []

    # ---- DRAM helpers (host side) ------------------------------------------------------
    def write_dram(self, byte_addr: int, data) -> None:
        b = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray)
                          else np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
        if byte_addr < 0 or byte_addr + b.size > self.dram.size:
            raise SimError(f"host write [{byte_addr}, {byte_addr + b.size}) outside DRAM "
                           f"of {self.dram.size} bytes")
        self.dram[byte_addr:byte_addr + b.size] = b

    def read_dram(self, byte_addr: int, nbytes: int) -> np.ndarray:
        return self.dram[byte_addr:byte_addr + nbytes].copy()

    # ---- the run loop -----------------------------------------------------------------
    def run(self, stream) -> Stats:
        """Execute an instruction stream (bytes, or a list of instruction objects).

        Instruction objects are encoded and decoded first, so the binary form is what runs.
        """
        data = stream if isinstance(stream, (bytes, bytearray)) else isa.encode_stream(stream)
        queues = self._dispatch(isa.decode_stream(bytes(data)))
        tokens = {q: deque() for q in ("l2c", "c2l", "c2s", "s2c")}
        rng = np.random.default_rng(self.schedule if isinstance(self.schedule, int) else 0)
        pcs = {m: 0 for m in queues}
        clock = {m: 0 for m in queues}
        end_cycle = 0
        while not all(pcs[m] == len(queues[m]) for m in queues):
            heads = {m: queues[m][pcs[m]] for m in queues if pcs[m] < len(queues[m])}
            ready = self._ready(heads, tokens)
            if self.schedule == "program":
                pc, mod, insn, need = min(ready, key=lambda r: r[0])
            else:
                pc, mod, insn, need = ready[int(rng.integers(len(ready)))]
            start = clock[mod]
            for q in need:
                start = max(start, tokens[q].popleft())
            end = start + self._step(pc, mod, insn)
            clock[mod] = end
            end_cycle = max(end_cycle, end)
            for f, q in _PUSHES[mod].items():
                if q and getattr(insn, f):
                    tokens[q].append(end)
            pcs[mod] += 1
        self.stats.cycles += end_cycle
        return self.stats

    def _dispatch(self, insns) -> dict:
        """Split the stream, in order, into the three modules' instruction queues."""
        queues = {_LOAD: [], _COMPUTE: [], _STORE: []}
        finish_seen = False
        for pc, insn in enumerate(insns):
            if finish_seen:
                raise SimError(f"instruction {pc} ({isa.describe(insn)}) follows FINISH")
            mod = module_of(insn)
            self._check_flags(pc, insn, mod)
            queues[mod].append((pc, insn))
            finish_seen = isinstance(insn, isa.Finish)
        if not finish_seen:
            raise SimError("instruction stream does not end with FINISH")
        return queues

    @staticmethod
    def _ready(heads: dict, tokens: dict) -> list:
        """The module heads whose pops can be served, as ``(pc, module, insn, queues popped)``.

        The default schedule runs the earliest of them (in stream order), so without tokens
        the modules follow program order; a stream that relies on that instead of tokens has
        a race on real hardware.  Raises :class:`DeadlockError` when none is ready.
        """
        ready, blocked = [], []
        for mod in (_LOAD, _COMPUTE, _STORE):
            if mod not in heads:
                continue
            pc, insn = heads[mod]
            need = [q for f, q in _POPS[mod].items() if q and getattr(insn, f)]
            empty = [q for q in need if not tokens[q]]
            if not empty:
                ready.append((pc, mod, insn, need))
            blocked.append(f"{mod} module at instruction {pc} ({isa.describe(insn)}) "
                           f"waits on empty queue {'/'.join(empty)}")
        if not ready:
            raise DeadlockError("deadlock: " + "; ".join(blocked))
        return ready

    def _step(self, pc: int, mod: str, insn) -> int:
        """Execute one instruction and count it; returns its cycles."""
        try:
            cycles = self._execute(insn)
        except SimError as exc:
            raise SimError(f"instruction {pc} ({isa.describe(insn)}): {exc}") from None
        self.stats.module_busy[mod] += cycles
        self.stats.insns[isa.OPCODE_NAMES[insn.to_int() & 7]] += 1
        return cycles

    @staticmethod
    def _check_flags(pc: int, insn, mod: str) -> None:
        for table in (_POPS, _PUSHES):
            for f, q in table[mod].items():
                if q is None and getattr(insn, f):
                    raise SimError(f"instruction {pc} ({isa.describe(insn)}) sets {f}, but the "
                                   f"{mod} module has no such neighbour")

    def _execute(self, insn) -> int:
        if isinstance(insn, isa.LoadStore):
            return self._store(insn) if insn.store else self._load(insn)
        if isinstance(insn, isa.Gemm):
            return self._gemm(insn)
        if isinstance(insn, isa.Alu):
            return self._alu(insn)
        return 1  # FINISH

    # ---- LOAD / STORE -------------------------------------------------------------------
    def _mem(self, mem_type: int):
        """(sram array view as rows of bytes-per-element, element bytes, numpy dtype)."""
        c = self.cfg
        return {
            isa.MEM_UOP: (None, c.uop_elem_bytes, None),
            isa.MEM_INP: (self.inp, c.inp_elem_bytes, np.int8),
            isa.MEM_WGT: (self.wgt, c.wgt_elem_bytes, np.int8),
            isa.MEM_ACC: (self.acc, c.acc_elem_bytes, np.dtype("<i4")),
        }[mem_type]

    def _dram_rows(self, base: int, y: int, x: int, stride: int, elem: int) -> np.ndarray:
        rows = (base + np.arange(y)[:, None] * stride + np.arange(x)[None, :]).reshape(-1)
        if rows.size and (rows.max() + 1) * elem > self.dram.size:
            raise SimError(f"DRAM access up to byte {(rows.max() + 1) * elem} beyond DRAM of "
                           f"{self.dram.size} bytes")
        return rows

    def _transfer_cycles(self, dram_bytes: int, pad_rows: int = 0) -> int:
        c = self.cfg
        return c.DRAM_LATENCY_CYCLES + -(-dram_bytes // c.DRAM_BYTES_PER_CYCLE) + pad_rows

    def _load(self, insn: isa.LoadStore) -> int:
        mt = insn.mem_type
        if mt == isa.MEM_OUT:
            raise SimError("LOAD of memory type out is illegal (out is store-only)")
        pads = (insn.y_pad_top, insn.y_pad_bottom, insn.x_pad_left, insn.x_pad_right)
        if any(pads) and mt not in (isa.MEM_INP, isa.MEM_ACC):
            raise SimError(f"padding is only legal for inp and acc loads, not "
                           f"{isa.MEM_NAMES[mt]}")
        sram, elem, dtype = self._mem(mt)
        depth = self.uop.shape[0] if mt == isa.MEM_UOP else sram.shape[0]
        W = insn.x_pad_left + insn.x_size + insn.x_pad_right
        H = insn.y_pad_top + insn.y_size + insn.y_pad_bottom
        if insn.x_size == 0:
            H = W = 0  # nothing to move (padding needs a width)
        if insn.sram_base + H * W > depth:
            raise SimError(f"{isa.MEM_NAMES[mt]} SRAM overflow: rows [{insn.sram_base}, "
                           f"{insn.sram_base + H * W}) exceed depth {depth}")
        rows = self._dram_rows(insn.dram_base, insn.y_size, insn.x_size, insn.x_stride, elem)
        nbytes = rows.size * elem
        raw = self.dram[(rows[:, None] * elem + np.arange(elem)[None, :]).reshape(-1)]
        if H * W:  # y_size == 0 with padding writes only the zero padding rows
            if mt == isa.MEM_UOP:
                words = raw.view("<u4").astype(np.int64)
                tile = np.stack([words & 0x7FF, (words >> 11) & 0x7FF, (words >> 22) & 0x3FF], 1)
                self.uop[insn.sram_base:insn.sram_base + H * W] = tile
            else:
                shape = sram.shape[1:]
                data = raw.view(dtype).reshape((insn.y_size, insn.x_size) + shape)
                tile = np.zeros((H, W) + shape, dtype=sram.dtype)
                tile[insn.y_pad_top:insn.y_pad_top + insn.y_size,
                     insn.x_pad_left:insn.x_pad_left + insn.x_size] = data
                sram[insn.sram_base:insn.sram_base + H * W] = tile.reshape((H * W,) + shape)
        self.stats.bytes_loaded[isa.MEM_NAMES[mt]] += nbytes
        return self._transfer_cycles(nbytes, H * W - rows.size)

    def _store(self, insn: isa.LoadStore) -> int:
        if insn.mem_type != isa.MEM_OUT:
            raise SimError(f"STORE of memory type {isa.MEM_NAMES[insn.mem_type]} is illegal "
                           "(only out)")
        if any((insn.y_pad_top, insn.y_pad_bottom, insn.x_pad_left, insn.x_pad_right)):
            raise SimError("STORE cannot pad")
        n = insn.y_size * insn.x_size
        if insn.sram_base + n > self.acc.shape[0]:
            raise SimError(f"acc SRAM read [{insn.sram_base}, {insn.sram_base + n}) exceeds "
                           f"depth {self.acc.shape[0]}")
        elem = self.cfg.out_elem_bytes
        rows = self._dram_rows(insn.dram_base, insn.y_size, insn.x_size, insn.x_stride, elem)
        src = self.acc[insn.sram_base:insn.sram_base + n]
        out = (src.astype(np.int64) & 0xFF).astype(np.uint8).reshape(n, elem)
        self.dram[(rows[:, None] * elem + np.arange(elem)[None, :]).reshape(-1)] = out.reshape(-1)
        self.stats.bytes_stored["out"] += n * elem
        return self._transfer_cycles(n * elem)

    # ---- GEMM ---------------------------------------------------------------------------
    def _loop_indices(self, insn, field_names):
        if not insn.uop_bgn <= insn.uop_end <= self.uop.shape[0]:
            raise SimError(f"uop range [{insn.uop_bgn}, {insn.uop_end}) invalid for uop depth "
                           f"{self.uop.shape[0]}")
        u = self.uop[insn.uop_bgn:insn.uop_end]
        i = np.arange(insn.iter_out)[:, None, None]
        j = np.arange(insn.iter_in)[None, :, None]
        out = []
        for col, name in field_names:
            fo = getattr(insn, f"{name}_factor_out")
            fi = getattr(insn, f"{name}_factor_in")
            out.append((fo * i + fi * j + u[None, None, :, col]).reshape(-1))
        return out

    @staticmethod
    def _bound(idx: np.ndarray, depth: int, what: str) -> None:
        if idx.size and idx.max() >= depth:
            raise SimError(f"{what} index {int(idx.max())} out of range (depth {depth})")

    def _products(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Per-uop GEMM result (n, BATCH, BLOCK_OUT) int64: MAC or shift-add datapath."""
        if self.wgt_mode == "int8":
            return np.einsum("nbk,nok->nbo", x.astype(np.int64), w.astype(np.int64))
        nz, neg, q = decode_shift_codes(w, self.shift_P)
        bad = nz & ((q < 0) | (q > self.cfg.shift_max))
        if np.any(bad):
            code = int(np.asarray(w)[bad].reshape(-1)[0])
            raise SimError(f"shift code {code} gives shift amount P - p = "
                           f"{self.shift_P - (abs(code) - 1)} outside [0, {self.cfg.shift_max}] "
                           f"(P={self.shift_P})")
        # sign * (x << q): barrel shift, conditional negate, adder tree; zero codes drop out.
        t = np.left_shift(x.astype(np.int64)[:, :, None, :], q[:, None, :, :])
        t = np.where(neg[:, None], -t, t)
        t = np.where(nz[:, None], t, 0)
        return t.sum(axis=-1)

    def _gemm(self, insn: isa.Gemm) -> int:
        dst, src, wgt = self._loop_indices(insn, ((0, "dst"), (1, "src"), (2, "wgt")))
        n = dst.size
        c = self.cfg
        self._bound(dst, c.acc_depth, "GEMM acc (dst)")
        if insn.reset:
            self.acc[dst] = 0
            self.stats.gemm_reset_uops += n
        else:
            self._bound(src, c.inp_depth, "GEMM inp (src)")
            self._bound(wgt, c.wgt_depth, "GEMM wgt")
            if self.trace_gemm or not self.vectorize:
                for d, s, w in zip(dst, src, wgt):
                    before = self.acc[d].copy()
                    prod = self._products(self.inp[s][None], self.wgt[w][None])[0]
                    self.acc[d] = wrap_i32(before.astype(np.int64) + prod)
                    if self.trace_gemm:
                        self.gemm_records.append(GemmRecord(
                            self.inp[s][0].copy(), self.wgt[w].copy(), before[0].copy(),
                            self.acc[d][0].copy()))
            elif n:
                prod = self._products(self.inp[src], self.wgt[wgt])
                acc64 = self.acc.astype(np.int64)
                np.add.at(acc64, dst, prod)  # modular sum: order of accumulation is irrelevant
                self.acc[:] = wrap_i32(acc64)
            self.stats.gemm_uops += n
            ops = n * c.batch * c.block_in * c.block_out
            if self.wgt_mode == "int8":
                self.stats.gemm_macs += ops
            else:
                self.stats.gemm_shift_adds += ops
        return c.INSN_OVERHEAD_CYCLES + n

    # ---- ALU ----------------------------------------------------------------------------
    @staticmethod
    def _alu_op(op: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a.astype(np.int64)
        b = np.broadcast_to(np.asarray(b, dtype=np.int64), a.shape)
        if op == isa.ALU_MIN:
            r = np.minimum(a, b)
        elif op == isa.ALU_MAX:
            r = np.maximum(a, b)
        elif op == isa.ALU_ADD:
            r = a + b
        else:  # SHR: arithmetic; negative amount shifts left; magnitude saturates at 31
            amt = np.minimum(np.abs(b), 31)
            r = np.where(b >= 0, np.right_shift(a, amt), np.left_shift(a, amt))
        return wrap_i32(r)

    def _alu(self, insn: isa.Alu) -> int:
        dst, src = self._loop_indices(insn, ((0, "dst"), (1, "src")))
        c = self.cfg
        self._bound(dst, c.acc_depth, "ALU dst")
        if not insn.use_imm and not insn.reset:
            self._bound(src, c.acc_depth, "ALU src")
        n = dst.size
        if insn.reset:
            self.acc[dst] = 0
        elif n:
            unique = np.unique(dst).size == n
            independent = (insn.use_imm or np.all(src == dst)
                           or np.intersect1d(src, dst).size == 0)
            if self.vectorize and unique and independent:
                b = insn.imm if insn.use_imm else self.acc[src]
                self.acc[dst] = self._alu_op(insn.alu_opcode, self.acc[dst], b)
            else:  # order-dependent: one row at a time, in loop order
                for d, s in zip(dst, src):
                    b = insn.imm if insn.use_imm else self.acc[s]
                    self.acc[d] = self._alu_op(insn.alu_opcode, self.acc[d], b)
        self.stats.alu_vector_ops += n
        self.stats.alu_lane_ops += n * c.batch * c.block_out
        return c.INSN_OVERHEAD_CYCLES + n
