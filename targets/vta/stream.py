"""The instruction stream of one lowered layer, tile by tile (``nbuf``-way buffered).

Per tile (``toh`` output rows x ``tm`` oc blocks of one image):

* compute: LOAD acc <- bias (one stride-0 2-D load per oc block broadcasts the bias to every
  pixel);
* per cin-block group: load module LOADs the inp rows (zero padding from the LOAD pad fields)
  and the weight blocks, then compute runs one GEMM;
* compute requantises on the ALU (the ``ops`` of the plan);
* store module STOREs each oc block's pixels, once per output byte plane (``SHR 8`` between
  planes).

Dependency tokens: load.push_next / compute.pop_prev per group (data ready);
compute.push_prev / load.pop_next (buffer free again, popped once a buffer is reused);
compute.push_next / store.pop_prev per tile; store.push_prev / compute.pop_next before an
accumulator buffer is reused and before FINISH.  Tokens left in c2l at FINISH are benign.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import isa
from .geometry import ConvGeom


@dataclass(frozen=True)
class Plan:
    """Tiling, buffer bases and DRAM element bases of one layer: all the emitter needs."""

    g: ConvGeom
    CB: int                 # cin blocks
    OB: int                 # oc blocks
    tm: int                 # oc blocks per tile
    tcb: int                # cin blocks per group
    toh: int                # output rows per tile
    rin: int                # input rows per tile
    nbuf: int
    inp_cap: int            # inp / wgt / acc rows of one buffer
    wgt_cap: int
    acc_cap: int
    ops: list               # requantising ALU steps (opcode, imm or vector name)
    nbytes: int             # output byte planes
    vec_base: dict          # vector name -> first reserved acc row
    dram_el: dict           # region -> DRAM base in elements of its memory type
    plane_el: int           # out elements of one byte plane


@dataclass(frozen=True)
class _Tile:
    n: int
    oh0: int
    toh_a: int              # output rows of this tile
    ob0: int
    tm_a: int               # oc blocks of this tile
    abuf: int               # acc buffer base
    r0: int                 # first input row read from DRAM
    nrows: int              # input rows read from DRAM
    rtop: int               # zero rows above
    rbot: int               # zero rows below


@dataclass
class Emitter:
    """Builds the instruction list and the uop buffer (each distinct uop kernel stored once)."""

    p: Plan
    body: list = field(default_factory=list)
    uops: list = field(default_factory=list)
    kernels: dict = field(default_factory=dict)
    groups: int = 0
    tiles: int = 0

    def kernel(self, key, make) -> tuple[int, int]:
        """``(uop_bgn, uop_end)`` of the uop kernel ``key``, made on first use."""
        if key not in self.kernels:
            body = make()
            self.kernels[key] = (len(self.uops), len(self.uops) + len(body))
            self.uops.extend(body)
        return self.kernels[key]

    def layer(self) -> list:
        """The whole program after the uop LOAD: vector operands, every tile, FINISH."""
        self.vector_loads()
        g = self.p.g
        for n in range(g.N):
            for oh0 in range(0, g.OH, self.p.toh):
                for ob0 in range(0, self.p.OB, self.p.tm):
                    self.tile(self._tile(n, oh0, ob0))
        # wait for the last min(tiles, nbuf) stores, then FINISH
        for _ in range(min(self.tiles, self.p.nbuf) - 1):
            self.body.append(isa.Alu(uop_bgn=0, uop_end=0, iter_out=0, iter_in=0, pop_next=1))
        self.body.append(isa.Finish(pop_next=1))
        return self.body

    def vector_loads(self) -> None:
        """Per-channel operands, loaded once into the reserved acc rows."""
        for key, base in self.p.vec_base.items():
            self.body.append(isa.LoadStore(mem_type=isa.MEM_ACC, sram_base=base,
                                           dram_base=self.p.dram_el["vec_" + key], y_size=1,
                                           x_size=self.p.OB, x_stride=self.p.OB))

    def _tile(self, n: int, oh0: int, ob0: int) -> _Tile:
        p, g = self.p, self.p.g
        toh_a = min(p.toh, g.OH - oh0)
        rin_a = (toh_a - 1) * g.sh + g.KH
        ih0 = oh0 * g.sh - g.pt
        r0, r1 = max(0, ih0), min(g.H, ih0 + rin_a)
        nrows = max(0, r1 - r0)
        rtop = min(max(0, -ih0), rin_a)
        return _Tile(n, oh0, toh_a, ob0, min(p.tm, p.OB - ob0), (self.tiles % p.nbuf) * p.acc_cap,
                     r0, nrows, rtop, rin_a - rtop - nrows)

    def tile(self, t: _Tile) -> None:
        self.bias_loads(t)
        for cb0 in range(0, self.p.CB, self.p.tcb):
            self.group(t, cb0)
        rows, alu_uops = self.requantise(t)
        self.stores(t, rows, alu_uops)
        self.tiles += 1

    def bias_loads(self, t: _Tile) -> None:
        p = self.p
        for m in range(t.tm_a):
            self.body.append(isa.LoadStore(
                mem_type=isa.MEM_ACC, sram_base=t.abuf + m * p.toh * p.g.OW,
                dram_base=p.dram_el["acc"] + t.ob0 + m, y_size=t.toh_a * p.g.OW, x_size=1,
                x_stride=0, pop_next=int(m == 0 and self.tiles >= p.nbuf)))

    def group(self, t: _Tile, cb0: int) -> None:
        """LOAD the inp rows and weights of ``tcb`` cin blocks, then one GEMM."""
        p, g = self.p, self.p.g
        tcb_a = min(p.tcb, p.CB - cb0)
        ibuf, wbuf = (self.groups % p.nbuf) * p.inp_cap, (self.groups % p.nbuf) * p.wgt_cap
        loads = [isa.LoadStore(
            mem_type=isa.MEM_INP, sram_base=ibuf + cbl * p.rin * g.Wp,
            dram_base=p.dram_el["inp"] + ((t.n * p.CB + cb0 + cbl) * g.H + t.r0) * g.W,
            y_size=t.nrows, x_size=g.W, x_stride=g.W, y_pad_top=t.rtop,
            y_pad_bottom=t.rbot, x_pad_left=g.pl, x_pad_right=g.xr)
            for cbl in range(tcb_a)]
        kk = g.KH * g.KW
        loads.append(isa.LoadStore(
            mem_type=isa.MEM_WGT, sram_base=wbuf,
            dram_base=p.dram_el["wgt"] + (t.ob0 * p.CB + cb0) * kk, y_size=t.tm_a,
            x_size=tcb_a * kk, x_stride=p.CB * kk))
        if self.groups >= p.nbuf:
            loads[0] = dataclasses.replace(loads[0], pop_next=1)
        loads[-1] = dataclasses.replace(loads[-1], push_next=1)
        self.body.extend(loads)
        bgn, end = self.kernel(("gemm", t.tm_a, tcb_a, ibuf, wbuf, t.abuf),
                               lambda: self.gemm_uops(t.tm_a, tcb_a, ibuf, wbuf, t.abuf))
        self.body.append(isa.Gemm(
            uop_bgn=bgn, uop_end=end, iter_out=t.toh_a, iter_in=g.OW,
            dst_factor_out=g.OW if t.toh_a > 1 else 0, dst_factor_in=1,
            src_factor_out=g.sh * g.Wp if t.toh_a > 1 else 0,
            src_factor_in=g.sw if g.OW > 1 else 0, pop_prev=1, push_prev=1))
        self.groups += 1

    def gemm_uops(self, tm_a: int, tcb_a: int, ibuf: int, wbuf: int, abuf: int) -> list:
        """One uop per (oc block, cin block, kh, kw)."""
        p, g = self.p, self.p.g
        kk = g.KH * g.KW
        return [isa.Uop(dst=abuf + m * p.toh * g.OW,
                        src=ibuf + cbl * p.rin * g.Wp + kh * g.Wp + kw,
                        wgt=wbuf + (m * tcb_a + cbl) * kk + kh * g.KW + kw)
                for m in range(tm_a) for cbl in range(tcb_a)
                for kh in range(g.KH) for kw in range(g.KW)]

    def requantise(self, t: _Tile) -> tuple[dict, tuple[int, int]]:
        """The plan's ALU ops over the tile's acc rows; the last one hands the tile to store."""
        p = self.p
        alu_uops = self.kernel(("alu", t.abuf), lambda: [isa.Uop(dst=t.abuf)])
        rows = dict(iter_out=t.tm_a, iter_in=t.toh_a * p.g.OW,
                    dst_factor_out=p.toh * p.g.OW if t.tm_a > 1 else 0, dst_factor_in=1)
        if not p.ops:  # nothing to requantise: hand the tile to store directly
            self.body.append(isa.Alu(uop_bgn=0, uop_end=0, iter_out=0, iter_in=0, push_next=1))
        for k, (op, imm) in enumerate(p.ops):
            last = int(k == len(p.ops) - 1)
            if isinstance(imm, str):  # per-channel operand from reserved acc rows
                vb, ve = self.kernel(("alu_vec", t.abuf, t.ob0, imm),
                                     lambda: [isa.Uop(dst=t.abuf, src=p.vec_base[imm] + t.ob0)])
                self.body.append(isa.Alu(alu_opcode=op, use_imm=0, uop_bgn=vb, uop_end=ve,
                                         src_factor_out=int(t.tm_a > 1), push_next=last, **rows))
            else:
                self.body.append(isa.Alu(alu_opcode=op, use_imm=1, imm=imm, uop_bgn=alu_uops[0],
                                         uop_end=alu_uops[1], push_next=last, **rows))
        return rows, alu_uops

    def stores(self, t: _Tile, rows: dict, alu_uops: tuple[int, int]) -> None:
        """STORE each byte plane (low byte first); ``SHR 8`` brings up the next one."""
        p, g = self.p, self.p.g
        for j in range(p.nbytes):
            if j:  # next byte plane: wait for the previous STORE, shift, hand over
                self.body.append(isa.Alu(alu_opcode=isa.ALU_SHR, use_imm=1, imm=8,
                                         uop_bgn=alu_uops[0], uop_end=alu_uops[1], pop_next=1,
                                         push_next=1, **rows))
            for m in range(t.tm_a):
                self.body.append(isa.LoadStore(
                    store=True, mem_type=isa.MEM_OUT, sram_base=t.abuf + m * p.toh * g.OW,
                    dram_base=(p.dram_el["out"] + j * p.plane_el
                               + ((t.n * p.OB + t.ob0 + m) * g.OH + t.oh0) * g.OW),
                    y_size=1, x_size=t.toh_a * g.OW, x_stride=t.toh_a * g.OW,
                    pop_prev=int(m == 0), push_prev=int(m == t.tm_a - 1)))
