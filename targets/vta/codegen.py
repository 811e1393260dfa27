"""Lower quantised Dense / Conv2d layers to a VTA instruction stream and run them.

Both layers become one kind of GEMM program ("conv as a GEMM over (kh, kw, cin) blocks",
no im2col): a dense layer ``x (N, K)`` is a 1x1 convolution of the image
``(1, K, N, 1)``.  For every output pixel (a BATCH=1 GEMM row) and every output-channel
block, the GEMM loop nest accumulates ``inp[pixel + (kh, kw) offset, cin block] @
W[oc block, cin block, kh, kw]^T`` over uops that enumerate (oc block, cin block, kh, kw);
``iter_out`` walks output rows and ``iter_in`` output columns (strides become the src loop
factors).

Program per tile (oh rows x oc blocks), ``nbuf``-way buffered (2 = double buffering):

* compute: LOAD acc <- bias (one stride-0 2-D load per oc block broadcasts the bias to
  every pixel; for ``e >= 16`` the rounding constant ``2**(e-1)`` is folded into it);
* per cin-block group: load module LOADs inp rows (zero padding from the LOAD pad fields)
  and the weight blocks, then compute runs one GEMM;
* compute requantises on the ALU: ``ADD 2**(e-1)`` (imm, e in 1..15), ``SHR e``,
  ``MAX -128`` (or ``MAX 0`` for ReLU), ``MIN 127``; STORE then keeps the low 8 bits, which
  after the clamp is exactly the int8 result
  ``clamp((acc + 2**(e-1)) >> e)`` (round half up, docs/CONTRACTS.md);
* store module STOREs each oc block's pixels.

Dependency tokens: load.push_next / compute.pop_prev per group (data ready);
compute.push_prev / load.pop_next (buffer free again, popped once a buffer is reused);
compute.push_next / store.pop_prev per tile; store.push_prev / compute.pop_next before an
accumulator buffer is reused and before FINISH.  Tokens left in c2l at FINISH are benign.

Grouped / depthwise convolutions (``groups > 1``) are not lowered: they run on the host
with the NumPy reference, and the returned partition report says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import isa, layout
from .config import VTAConfig, load_config
from .reference import (ReferenceError, _pads, layer_weights, reference_qconv2d,
                        reference_qdense)
from .simulator import Simulator, Stats


class CodegenError(ValueError):
    """A layer the VTA code generator cannot lower (the message says why)."""


@dataclass(frozen=True, eq=False)
class QDense:
    """``y = sat8(round_half_up((x @ W^T + b) >> shift_e))``, optional ReLU.

    ``weight``: (M, K) int8 weights, or int8 shift codes with ``wgt_mode='shift'`` and
    ``shift_P`` (the integer weights are then ``sign * 2**(shift_P - p)``).
    """

    weight: np.ndarray
    bias: np.ndarray | None
    shift_e: int
    relu: bool = False
    wgt_mode: str = "int8"
    shift_P: int | None = None
    name: str = "dense"


@dataclass(frozen=True, eq=False)
class QConv2d:
    """Quantised NCHW convolution, weights (O, C/groups, KH, KW); see :class:`QDense`."""

    weight: np.ndarray
    bias: np.ndarray | None
    shift_e: int
    stride: int | tuple = 1
    padding: int | tuple = 0
    groups: int = 1
    relu: bool = False
    wgt_mode: str = "int8"
    shift_P: int | None = None
    name: str = "conv2d"


@dataclass
class LayerReport:
    """Where a layer ran and how it was tiled (the partition report)."""

    name: str
    kind: str
    placement: str                 # "vta" or "host"
    reason: str = ""
    tiling: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


@dataclass
class Program:
    """An instruction stream plus the DRAM image it runs on."""

    cfg: VTAConfig
    insns: list
    dram: np.ndarray
    inp_byte: int
    inp_shape: tuple       # (N, CB, H, W, BLOCK_IN)
    out_byte: int
    out_shape: tuple       # (N, OB, OH, OW, BLOCK_OUT)
    wgt_mode: str
    shift_P: int
    tiling: dict
    notes: list

    def stream(self) -> bytes:
        return isa.encode_stream(self.insns)


@dataclass
class LayerResult:
    output: np.ndarray
    stats: Stats | None
    report: list            # [LayerReport]
    program: Program | None = None
    simulator: Simulator | None = None


@dataclass(frozen=True)
class _ConvGeom:
    N: int
    C: int
    H: int
    W: int
    O: int
    KH: int
    KW: int
    sh: int
    sw: int
    pt: int
    pl: int
    pb: int
    pr: int

    @property
    def OH(self):
        return (self.H + self.pt + self.pb - self.KH) // self.sh + 1

    @property
    def OW(self):
        return (self.W + self.pl + self.pr - self.KW) // self.sw + 1

    @property
    def xr(self):
        """Right padding actually read by the last output column."""
        return max(0, (self.OW - 1) * self.sw + self.KW - self.pl - self.W)

    @property
    def Wp(self):
        return self.pl + self.W + self.xr


def _requant_ops(e: int, relu: bool) -> tuple[list, int]:
    """ALU (opcode, imm) sequence and the rounding constant folded into the bias."""
    ops, fold = [], 0
    if e >= 1:
        rnd = 1 << (e - 1)
        if rnd <= (1 << 15) - 1:
            ops.append((isa.ALU_ADD, rnd))
        else:
            fold = rnd  # does not fit the 16-bit immediate: pre-add it through the bias
        ops.append((isa.ALU_SHR, e))
    ops.append((isa.ALU_MAX, 0 if relu else -128))
    ops.append((isa.ALU_MIN, 127))
    return ops, fold


def _choose_tiling(cfg: VTAConfig, g: _ConvGeom, CB: int, OB: int, nbuf: int) -> dict:
    """Pick (oc blocks, cin blocks, output rows) per tile minimising estimated DRAM cycles."""
    inp_cap, wgt_cap, acc_cap = (cfg.inp_depth // nbuf, cfg.wgt_depth // nbuf,
                                 cfg.acc_depth // nbuf)
    kk = g.KH * g.KW
    # worst case: one uop kernel per (edge tm, edge tcb) x inp/wgt parity x acc parity
    uop_cap = (cfg.uop_depth - 2 * nbuf) // (4 * nbuf * nbuf)
    best = None
    for tm in range(1, OB + 1):
        for tcb in range(1, CB + 1):
            if tm * tcb * kk > min(wgt_cap, uop_cap):
                break
            rin_cap = inp_cap // (tcb * g.Wp)
            toh = min(g.OH, (rin_cap - g.KH) // g.sh + 1 if rin_cap >= g.KH else 0,
                      acc_cap // (tm * g.OW))
            if toh < 1:
                continue
            n_oh, n_m, n_k = -(-g.OH // toh), -(-OB // tm), -(-CB // tcb)
            rin = (toh - 1) * g.sh + g.KH
            inp_bytes = g.N * n_m * CB * n_oh * rin * g.W * cfg.inp_elem_bytes
            wgt_bytes = g.N * n_oh * OB * CB * kk * cfg.wgt_elem_bytes
            n_loads = g.N * n_oh * n_m * (n_k * (1 + tcb) + tm)
            cost = ((inp_bytes + wgt_bytes) / cfg.DRAM_BYTES_PER_CYCLE
                    + n_loads * cfg.DRAM_LATENCY_CYCLES)
            key = (cost, -(tm * tcb * toh))
            if best is None or key < best[0]:
                best = (key, dict(tm=tm, tcb=tcb, toh=toh, rin=rin, nbuf=nbuf,
                                  n_tiles=g.N * n_oh * n_m, n_groups=g.N * n_oh * n_m * n_k))
    if best is None:
        raise CodegenError(
            f"no tiling fits the buffers (inp {inp_cap} rows, wgt {wgt_cap} blocks, acc "
            f"{acc_cap} rows per buffer) for a {g.KH}x{g.KW} conv with padded width {g.Wp} "
            f"and output width {g.OW}: width tiling is not implemented")
    return best[1]


def _check_headroom(W: np.ndarray, bias: np.ndarray, fold: int, name: str) -> None:
    """Every partial sum must fit int32: |acc| <= 128 * sum|W| + |b| + rounding."""
    per_oc = 128 * np.abs(W).reshape(W.shape[0], -1).sum(axis=1) + np.abs(bias) + fold
    worst = int(per_oc.max()) if per_oc.size else 0
    if worst > (1 << 31) - 1:
        raise CodegenError(f"{name}: the int32 accumulator may overflow (worst-case |acc| = "
                           f"{worst} > 2^31-1); split K or lower shift_P")


def _lower(cfg: VTAConfig, g: _ConvGeom, w: np.ndarray, bias: np.ndarray | None, e: int,
           relu: bool, wgt_mode: str, shift_P: int | None, name: str, nbuf: int) -> Program:
    bi, bo = cfg.block_in, cfg.block_out
    if not 0 <= e <= 31:
        raise CodegenError(f"{name}: shift_e={e} outside [0, 31] (the SHR amount must be a "
                           "defined 32-bit shift)")
    if wgt_mode == "shift":
        if shift_P is None or not 0 <= shift_P <= cfg.shift_max:
            raise CodegenError(f"{name}: wgt_mode='shift' needs shift_P in [0, {cfg.shift_max}]"
                               f", got {shift_P}")
        if np.asarray(w).dtype != np.int8:
            raise CodegenError(f"{name}: shift codes must be int8")
        p = np.abs(w.astype(np.int64)) - 1
        if np.any((w != 0) & (p > shift_P)):
            raise CodegenError(f"{name}: a shift code has p > shift_P={shift_P} (negative "
                               "shift amount); raise shift_P")
    elif wgt_mode != "int8":
        raise CodegenError(f"{name}: unknown wgt_mode {wgt_mode!r}")
    try:
        W_int = layer_weights(w, wgt_mode, shift_P)
    except ReferenceError as exc:
        raise CodegenError(f"{name}: {exc}") from None
    bias = (np.zeros(g.O, dtype=np.int64) if bias is None
            else np.asarray(bias).astype(np.int64).reshape(-1))
    if bias.shape != (g.O,):
        raise CodegenError(f"{name}: bias has {bias.size} values for {g.O} outputs")
    ops, fold = _requant_ops(e, relu)
    _check_headroom(W_int, bias, fold, name)
    bias_acc = bias + fold
    if np.any(np.abs(bias_acc) > (1 << 31) - 1):
        raise CodegenError(f"{name}: bias (+ rounding constant) does not fit int32")
    if max(g.pt, g.pb, g.pl, g.xr) > 15:
        raise CodegenError(f"{name}: padding above 15 does not fit the 4-bit LOAD pad fields")
    OH, OW, Wp = g.OH, g.OW, g.Wp
    if OH < 1 or OW < 1:
        raise CodegenError(f"{name}: empty output")
    CB, OB = layout.ceil_div(g.C, bi), layout.ceil_div(g.O, bo)
    for what, v, lim in (("output width", OW, 2047), ("row stride sh*Wp", g.sh * Wp, 2047),
                         ("column stride", g.sw, 2047)):
        if v > lim:
            raise CodegenError(f"{name}: {what} {v} exceeds the 11-bit loop factor field")
    t = _choose_tiling(cfg, g, CB, OB, nbuf)
    tm, tcb, toh, rin = t["tm"], t["tcb"], t["toh"], t["rin"]
    kk = g.KH * g.KW
    inp_cap, wgt_cap, acc_cap = (cfg.inp_depth // nbuf, cfg.wgt_depth // nbuf,
                                 cfg.acc_depth // nbuf)

    # ---- DRAM image: uops | wgt | bias (acc) | inp | out ------------------------------------
    wpk = layout.pack_weights(np.asarray(w).astype(np.int8), bo, bi)       # OB,CB,KH,KW,bo,bi
    bpk = layout.pack_bias(bias_acc.astype(np.int32), bo)                   # OB, bo
    n_uop_max = cfg.uop_depth
    regions, cursor = {}, 0

    def alloc(nm, nbytes, align):
        nonlocal cursor
        cursor = -(-cursor // max(align, 64)) * max(align, 64)
        regions[nm] = cursor
        cursor += nbytes

    alloc("uop", n_uop_max * 4, 4)
    alloc("wgt", wpk.nbytes, cfg.wgt_elem_bytes)
    alloc("acc", bpk.nbytes, cfg.acc_elem_bytes)
    inp_shape = (g.N, CB, g.H, g.W, bi)
    alloc("inp", int(np.prod(inp_shape)), cfg.inp_elem_bytes)
    out_shape = (g.N, OB, OH, OW, bo)
    alloc("out", int(np.prod(out_shape)), cfg.out_elem_bytes)
    dram = np.zeros(-(-cursor // 4096) * 4096, dtype=np.uint8)
    dram[regions["wgt"]:regions["wgt"] + wpk.nbytes] = wpk.view(np.uint8).reshape(-1)
    dram[regions["acc"]:regions["acc"] + bpk.nbytes] = bpk.astype("<i4").view(np.uint8).reshape(-1)
    wgt_el = regions["wgt"] // cfg.wgt_elem_bytes
    acc_el = regions["acc"] // cfg.acc_elem_bytes
    inp_el = regions["inp"] // cfg.inp_elem_bytes
    out_el = regions["out"] // cfg.out_elem_bytes

    uops: list = []
    kernels: dict = {}

    def kernel(key, make):
        if key not in kernels:
            body = make()
            kernels[key] = (len(uops), len(uops) + len(body))
            uops.extend(body)
        return kernels[key]

    def gemm_uops(tm_a, tcb_a, ibuf, wbuf, abuf):
        return [isa.Uop(dst=abuf + m * toh * OW,
                        src=ibuf + cbl * rin * Wp + kh * Wp + kw,
                        wgt=wbuf + (m * tcb_a + cbl) * kk + kh * g.KW + kw)
                for m in range(tm_a) for cbl in range(tcb_a)
                for kh in range(g.KH) for kw in range(g.KW)]

    body: list = []
    grp = tile = 0
    try:
        for n in range(g.N):
            for oh0 in range(0, OH, toh):
                toh_a = min(toh, OH - oh0)
                rin_a = (toh_a - 1) * g.sh + g.KH
                ih0 = oh0 * g.sh - g.pt
                r0, r1 = max(0, ih0), min(g.H, ih0 + rin_a)
                nrows = max(0, r1 - r0)
                rtop = min(max(0, -ih0), rin_a)
                rbot = rin_a - rtop - nrows
                for ob0 in range(0, OB, tm):
                    tm_a = min(tm, OB - ob0)
                    abuf = (tile % nbuf) * acc_cap
                    for m in range(tm_a):
                        body.append(isa.LoadStore(
                            mem_type=isa.MEM_ACC, sram_base=abuf + m * toh * OW,
                            dram_base=acc_el + ob0 + m, y_size=toh_a * OW, x_size=1, x_stride=0,
                            pop_next=int(m == 0 and tile >= nbuf)))
                    for cb0 in range(0, CB, tcb):
                        tcb_a = min(tcb, CB - cb0)
                        ibuf, wbuf = (grp % nbuf) * inp_cap, (grp % nbuf) * wgt_cap
                        loads = [isa.LoadStore(
                            mem_type=isa.MEM_INP, sram_base=ibuf + cbl * rin * Wp,
                            dram_base=inp_el + ((n * CB + cb0 + cbl) * g.H + r0) * g.W,
                            y_size=nrows, x_size=g.W, x_stride=g.W, y_pad_top=rtop,
                            y_pad_bottom=rbot, x_pad_left=g.pl, x_pad_right=g.xr)
                            for cbl in range(tcb_a)]
                        loads.append(isa.LoadStore(
                            mem_type=isa.MEM_WGT, sram_base=wbuf,
                            dram_base=wgt_el + (ob0 * CB + cb0) * kk, y_size=tm_a,
                            x_size=tcb_a * kk, x_stride=CB * kk))
                        if grp >= nbuf:
                            loads[0] = _with(loads[0], pop_next=1)
                        loads[-1] = _with(loads[-1], push_next=1)
                        body.extend(loads)
                        bgn, end = kernel(("gemm", tm_a, tcb_a, ibuf, wbuf, abuf),
                                          lambda: gemm_uops(tm_a, tcb_a, ibuf, wbuf, abuf))
                        body.append(isa.Gemm(
                            uop_bgn=bgn, uop_end=end, iter_out=toh_a, iter_in=OW,
                            dst_factor_out=OW if toh_a > 1 else 0, dst_factor_in=1,
                            src_factor_out=g.sh * Wp if toh_a > 1 else 0,
                            src_factor_in=g.sw if OW > 1 else 0, pop_prev=1, push_prev=1))
                        grp += 1
                    abgn, aend = kernel(("alu", abuf), lambda: [isa.Uop(dst=abuf)])
                    for k, (op, imm) in enumerate(ops):
                        body.append(isa.Alu(
                            alu_opcode=op, use_imm=1, imm=imm, uop_bgn=abgn, uop_end=aend,
                            iter_out=tm_a, iter_in=toh_a * OW,
                            dst_factor_out=toh * OW if tm_a > 1 else 0, dst_factor_in=1,
                            push_next=int(k == len(ops) - 1)))
                    for m in range(tm_a):
                        body.append(isa.LoadStore(
                            store=True, mem_type=isa.MEM_OUT, sram_base=abuf + m * toh * OW,
                            dram_base=out_el + ((n * OB + ob0 + m) * OH + oh0) * OW,
                            y_size=1, x_size=toh_a * OW, x_stride=toh_a * OW,
                            pop_prev=int(m == 0), push_prev=int(m == tm_a - 1)))
                    tile += 1
        # wait for the last min(tile, nbuf) stores, then FINISH
        for _ in range(min(tile, nbuf) - 1):
            body.append(isa.Alu(uop_bgn=0, uop_end=0, iter_out=0, iter_in=0, pop_next=1))
        body.append(isa.Finish(pop_next=1))
        if len(uops) > cfg.uop_depth:
            raise CodegenError(f"{name}: {len(uops)} uops exceed the uop buffer "
                               f"({cfg.uop_depth})")
        head = [isa.LoadStore(mem_type=isa.MEM_UOP, sram_base=0,
                              dram_base=regions["uop"] // 4, y_size=1, x_size=len(uops),
                              x_stride=len(uops))]
    except isa.IsaError as exc:
        raise CodegenError(f"{name}: a field does not fit the ISA: {exc}") from None
    ub = b"".join(u.encode() for u in uops)
    dram[regions["uop"]:regions["uop"] + len(ub)] = np.frombuffer(ub, dtype=np.uint8)
    notes = []
    if fold:
        notes.append(f"rounding constant 2^{e - 1} folded into the bias (exceeds the "
                     "16-bit ALU immediate)")
    tiling = dict(t, uops=len(uops), OH=OH, OW=OW, CB=CB, OB=OB)
    return Program(cfg, head + body, dram, regions["inp"], inp_shape, regions["out"], out_shape,
                   wgt_mode, int(shift_P or 0), tiling, notes)


def _with(insn, **kw):
    import dataclasses
    return dataclasses.replace(insn, **kw)


def _geom_conv(layer: QConv2d, x_shape) -> _ConvGeom:
    N, C, H, W = x_shape
    O, Cg, KH, KW = np.asarray(layer.weight).shape
    if Cg != C:
        raise CodegenError(f"{layer.name}: weight expects {Cg} input channels, input has {C}")
    sh, sw = ((layer.stride, layer.stride) if np.isscalar(layer.stride)
              else tuple(int(s) for s in layer.stride))
    if sh < 1 or sw < 1:
        raise CodegenError(f"{layer.name}: stride must be >= 1")
    pt, pl, pb, pr = _pads(layer.padding)
    return _ConvGeom(N, C, H, W, O, KH, KW, sh, sw, pt, pl, pb, pr)


def compile_layer(layer, x_shape, cfg: VTAConfig | None = None, nbuf: int = 2) -> Program:
    """Lower one layer for an input of shape ``x_shape`` (NCHW for conv, (N, K) for dense)."""
    cfg = cfg or load_config()
    if nbuf not in (1, 2):
        raise CodegenError("nbuf must be 1 or 2")
    if isinstance(layer, QDense):
        N, K = x_shape
        w = np.asarray(layer.weight)
        if w.ndim != 2 or w.shape[1] != K:
            raise CodegenError(f"{layer.name}: weight shape {w.shape} does not match input "
                               f"features {K}")
        g = _ConvGeom(1, K, N, 1, w.shape[0], 1, 1, 1, 1, 0, 0, 0, 0)
        return _lower(cfg, g, w.reshape(w.shape[0], K, 1, 1), layer.bias, layer.shift_e,
                      layer.relu, layer.wgt_mode, layer.shift_P, layer.name, nbuf)
    if isinstance(layer, QConv2d):
        if layer.groups != 1:
            raise CodegenError(f"{layer.name}: groups={layer.groups} is not lowered to VTA")
        return _lower(cfg, _geom_conv(layer, x_shape), np.asarray(layer.weight), layer.bias,
                      layer.shift_e, layer.relu, layer.wgt_mode, layer.shift_P, layer.name, nbuf)
    raise CodegenError(f"unsupported layer type {type(layer).__name__}")


def run_program(prog: Program, x_packed: np.ndarray, trace_gemm: bool = False,
                vectorize: bool = True, schedule="program") -> tuple[np.ndarray, Simulator]:
    """Write the packed input into the DRAM image, simulate, return the packed output."""
    if x_packed.shape != prog.inp_shape:
        raise CodegenError(f"packed input shape {x_packed.shape} != {prog.inp_shape}")
    sim = Simulator(prog.cfg, dram_bytes=prog.dram.size, wgt_mode=prog.wgt_mode,
                    shift_P=prog.shift_P, trace_gemm=trace_gemm, vectorize=vectorize,
                    schedule=schedule)
    sim.dram[:] = prog.dram
    sim.write_dram(prog.inp_byte, np.ascontiguousarray(x_packed, dtype=np.int8))
    sim.run(prog.stream())
    nbytes = int(np.prod(prog.out_shape))
    out = sim.read_dram(prog.out_byte, nbytes).view(np.int8).reshape(prog.out_shape)
    return out, sim


def _host(layer, x, reason: str) -> LayerResult:
    if isinstance(layer, QDense):
        y = reference_qdense(x, layer.weight, layer.bias, layer.shift_e, layer.relu,
                             layer.wgt_mode, layer.shift_P)
        kind = "dense"
    else:
        y = reference_qconv2d(x, layer.weight, layer.bias, layer.shift_e, layer.stride,
                              layer.padding, layer.groups, layer.relu, layer.wgt_mode,
                              layer.shift_P)
        kind = "conv2d"
    return LayerResult(y, None, [LayerReport(layer.name, kind, "host", reason)])


def run_layer(layer, x: np.ndarray, cfg: VTAConfig | None = None, nbuf: int = 2,
              trace_gemm: bool = False, vectorize: bool = True,
              schedule="program") -> LayerResult:
    """Run one quantised layer on the simulated accelerator (or on the host, reported)."""
    cfg = cfg or load_config()
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise CodegenError(f"{layer.name}: input must be int8, got {x.dtype}")
    if isinstance(layer, QConv2d) and layer.groups != 1:
        return _host(layer, x, f"groups={layer.groups} (grouped/depthwise conv) is not lowered "
                               "to VTA; computed by the NumPy reference on the host")
    prog = compile_layer(layer, x.shape, cfg, nbuf)
    if isinstance(layer, QDense):
        xp = layout.pack_activations(x.T[None, :, :, None], cfg.block_in)
        out, sim = run_program(prog, xp, trace_gemm, vectorize, schedule)
        y = layout.unpack_activations(out, layer.weight.shape[0])[0, :, :, 0].T
        kind = "dense"
    else:
        xp = layout.pack_activations(x, cfg.block_in)
        out, sim = run_program(prog, xp, trace_gemm, vectorize, schedule)
        y = layout.unpack_activations(out, layer.weight.shape[0])
        kind = "conv2d"
    rep = LayerReport(layer.name, kind, "vta", "", prog.tiling, prog.notes)
    return LayerResult(np.ascontiguousarray(y), sim.stats, [rep], prog, sim)
