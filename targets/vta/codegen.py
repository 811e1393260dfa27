"""Lower quantised Dense / Conv2d layers to a VTA instruction stream and its DRAM image.

Both layers become one kind of GEMM program (:mod:`.geometry`: "conv as a GEMM over (kh, kw,
cin) blocks", no im2col): for every output pixel (a BATCH=1 GEMM row) and every output-channel
block, the GEMM loop nest accumulates ``inp[pixel + (kh, kw) offset, cin block] @
W[oc block, cin block, kh, kw]^T`` over uops that enumerate (oc block, cin block, kh, kw);
``iter_out`` walks output rows and ``iter_in`` output columns (strides become the src loop
factors).  :mod:`.stream` emits the tiles and their dependency tokens.

Requantisation is the accelerator arithmetic of docs/NUMERICS.md §5 (the NumPy truth is
:func:`shiftc.reference.accelerator.qconv2d`): the bias is loaded into the accumulators (for
``e >= 16`` the rounding constant ``2**(e-1)`` is folded into it), then the ALU runs
``ADD 2**(e-1)`` (imm, e in 1..15), ``SHR e``, ``MAX -128`` (or ``MAX 0`` for ReLU),
``MIN 127``; STORE keeps the low 8 bits, which after the clamp is exactly the int8 result
``clamp((acc + 2**(e-1)) >> e)`` (round half up).

Grouped / depthwise convolutions (``groups > 1``) are not lowered: the partition leaves them on
the host.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftc.reference.accelerator import integer_weights
from shiftc.reference.shift import conv_padding

from . import isa, layout
from .config import VTAConfig, load_config
from .geometry import ConvGeom
from .simulator import Simulator
from .stream import Emitter, Plan


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
    shift_e: int | np.ndarray      # one shift, or one per output channel
    relu: bool = False
    wgt_mode: str = "int8"
    shift_P: int | None = None
    name: str = "dense"
    out_bits: int = 8              # 16 / 32: saturate wider, stored as 2 / 4 byte planes


@dataclass(frozen=True, eq=False)
class QConv2d:
    """Quantised NCHW convolution, weights (O, C/groups, KH, KW); see :class:`QDense`."""

    weight: np.ndarray
    bias: np.ndarray | None
    shift_e: int | np.ndarray
    stride: int | tuple = 1
    padding: int | tuple = 0
    groups: int = 1
    relu: bool = False
    wgt_mode: str = "int8"
    shift_P: int | None = None
    name: str = "conv2d"
    out_bits: int = 8


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
    out_bits: int = 8      # the output is out_bits // 8 byte planes of out_shape, low byte first

    def stream(self) -> bytes:
        return isa.encode_stream(self.insns)


def _requant_ops(e, relu: bool, out_bits: int = 8) -> tuple[list, object, dict]:
    """ALU (opcode, imm) sequence, the rounding constant(s) folded into the bias, and the
    per-channel vector operands (name -> one int32 per channel) that some ops read.

    ``e``: one shift, or an array with one shift per output channel; a negative ``e`` is a left
    shift by ``-e`` (scale ratio > 1).  Per-channel or left shifts fold every channel's rounding
    constant ``2**(e_c-1)`` into its bias (exact) and run one SHR whose amounts come from
    accumulator rows (imm = the vector's name), not from the immediate.  A left shift is
    preceded by a per-channel clamp to ``[(lo >> k) - 1, (hi >> k) + 1]``: it cannot overflow
    int32 then, and the final saturation gives ``sat(z << k)`` exactly."""
    ops, fold, vectors = [], 0, {}
    e_arr = np.asarray(e, dtype=np.int64)
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    if (e_arr.ndim and np.unique(e_arr).size > 1) or np.any(e_arr < 0):
        fold = np.where(e_arr >= 1, np.left_shift(np.int64(1), np.maximum(e_arr - 1, 0)), 0)
        if np.any(e_arr < 0):
            k = np.maximum(-e_arr, 0)
            vectors["lo"] = np.where(e_arr < 0, (lo >> k) - 1, -(1 << 31))
            vectors["hi"] = np.where(e_arr < 0, (hi >> k) + 1, (1 << 31) - 1)
            ops += [(isa.ALU_MAX, "lo"), (isa.ALU_MIN, "hi")]
        vectors["shr"] = e_arr
        ops.append((isa.ALU_SHR, "shr"))
    else:
        e = int(e_arr.reshape(-1)[0]) if e_arr.size else 0
        if e >= 1:
            rnd = 1 << (e - 1)
            if rnd <= (1 << 15) - 1:
                ops.append((isa.ALU_ADD, rnd))
            else:
                fold = rnd  # does not fit the 16-bit immediate: pre-add it through the bias
            ops.append((isa.ALU_SHR, e))
    if relu or out_bits < 32:
        ops.append((isa.ALU_MAX, 0 if relu else lo))
    if out_bits < 32:
        ops.append((isa.ALU_MIN, hi))
    return ops, fold, vectors


def _choose_tiling(cfg: VTAConfig, g: ConvGeom, CB: int, OB: int, nbuf: int,
                   acc_reserved: int = 0) -> dict:
    """Pick (oc blocks, cin blocks, output rows) per tile minimising estimated DRAM cycles.

    ``acc_reserved`` accumulator rows (per-channel shift amounts) are kept out of the buffers."""
    inp_cap, wgt_cap, acc_cap = (cfg.inp_depth // nbuf, cfg.wgt_depth // nbuf,
                                 (cfg.acc_depth - acc_reserved) // nbuf)
    kk = g.KH * g.KW
    # worst case: one uop kernel per (edge tm, edge tcb) x inp/wgt parity x acc parity
    uop_cap = (cfg.uop_depth - 2 * nbuf - nbuf * acc_reserved) // (4 * nbuf * nbuf)
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


def _check_shift_e(name: str, e, O: int, out_bits: int) -> np.ndarray:
    """The requantiser's shift(s) as int64, checked against what the ALU can run."""
    e_arr = np.asarray(e, dtype=np.int64)
    if e_arr.ndim not in (0, 1) or (e_arr.ndim == 1 and e_arr.size not in (1, O)):
        raise CodegenError(f"{name}: shift_e must be one int or one per output ({O})")
    if np.any(e_arr < -30) or np.any(e_arr > 31):
        raise CodegenError(f"{name}: shift_e={e} outside [-30, 31] (the SHR amount must be a "
                           "defined 32-bit shift)")
    if out_bits not in (8, 16, 32):
        raise CodegenError(f"{name}: out_bits must be 8, 16 or 32, got {out_bits}")
    if out_bits == 32 and np.any(e_arr < 0):
        raise CodegenError(f"{name}: a left shift (negative shift_e) needs out_bits <= 16 "
                           "(its pre-clamp must fit int32)")
    return e_arr


def _layer_weights(cfg: VTAConfig, name: str, w: np.ndarray, wgt_mode: str,
                   shift_P: int | None) -> np.ndarray:
    """The integer weights (int64) after the checks of the shift core (``P - p`` in range)."""
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
        return integer_weights(w, wgt_mode, shift_P)
    except (TypeError, ValueError) as exc:
        raise CodegenError(f"{name}: {exc}") from None


def _bias_vector(name: str, bias, O: int) -> np.ndarray:
    bias = (np.zeros(O, dtype=np.int64) if bias is None
            else np.asarray(bias).astype(np.int64).reshape(-1))
    if bias.shape != (O,):
        raise CodegenError(f"{name}: bias has {bias.size} values for {O} outputs")
    return bias


def _check_geometry(name: str, g: ConvGeom) -> None:
    """Padding and loop factors must fit their ISA fields."""
    if max(g.pt, g.pb, g.pl, g.xr) > 15:
        raise CodegenError(f"{name}: padding above 15 does not fit the 4-bit LOAD pad fields")
    if g.OH < 1 or g.OW < 1:
        raise CodegenError(f"{name}: empty output")
    for what, v, lim in (("output width", g.OW, 2047), ("row stride sh*Wp", g.sh * g.Wp, 2047),
                         ("column stride", g.sw, 2047)):
        if v > lim:
            raise CodegenError(f"{name}: {what} {v} exceeds the 11-bit loop factor field")


def _place(regions: list) -> tuple[dict, int]:
    """Byte offsets of consecutive DRAM regions ``(name, nbytes, align)`` (aligned to at least
    64 bytes) and the end of the last one."""
    offsets, cursor = {}, 0
    for name, nbytes, align in regions:
        step = max(align, 64)
        cursor = -(-cursor // step) * step
        offsets[name] = cursor
        cursor += nbytes
    return offsets, cursor


def _dram_image(cfg: VTAConfig, g: ConvGeom, w: np.ndarray, bias_acc: np.ndarray, vectors: dict,
                nbytes: int) -> tuple[np.ndarray, dict, tuple, tuple]:
    """DRAM image ``uops | wgt | bias (acc) | vectors (acc) | inp | out``: the image, the byte
    offset of each region, the packed input shape and the blocked output shape."""
    bi, bo = cfg.block_in, cfg.block_out
    wpk = layout.pack_weights(np.asarray(w).astype(np.int8), bo, bi)       # OB,CB,KH,KW,bo,bi
    bpk = layout.pack_bias(bias_acc.astype(np.int32), bo)                   # OB, bo
    vpk = {key: layout.pack_bias(np.broadcast_to(v, (g.O,)).astype(np.int32), bo)  # OB, bo
           for key, v in vectors.items()}
    inp_shape = (g.N, layout.ceil_div(g.C, bi), g.H, g.W, bi)
    out_shape = (g.N, layout.ceil_div(g.O, bo), g.OH, g.OW, bo)
    regions, end = _place(
        [("uop", cfg.uop_depth * 4, 4), ("wgt", wpk.nbytes, cfg.wgt_elem_bytes),
         ("acc", bpk.nbytes, cfg.acc_elem_bytes)]
        + [("vec_" + key, v.nbytes, cfg.acc_elem_bytes) for key, v in vpk.items()]
        + [("inp", int(np.prod(inp_shape)), cfg.inp_elem_bytes),
           ("out", nbytes * int(np.prod(out_shape)), cfg.out_elem_bytes)])
    dram = np.zeros(-(-end // 4096) * 4096, dtype=np.uint8)
    blobs = [("wgt", wpk.view(np.uint8)), ("acc", bpk.astype("<i4").view(np.uint8))]
    blobs += [("vec_" + key, v.astype("<i4").view(np.uint8)) for key, v in vpk.items()]
    for region, blob in blobs:
        dram[regions[region]:regions[region] + blob.nbytes] = blob.reshape(-1)
    return dram, regions, inp_shape, out_shape


def _plan(cfg: VTAConfig, g: ConvGeom, t: dict, ops: list, vectors: dict, nbytes: int,
          regions: dict, out_shape: tuple) -> Plan:
    """Buffer halves, reserved acc rows and DRAM element bases for the emitter."""
    nbuf, OB = t["nbuf"], out_shape[1]
    acc_cap = (cfg.acc_depth - OB * len(vectors)) // nbuf
    # acc rows after the buffers hold the per-channel vector operands, OB rows each
    vec_base = {key: nbuf * acc_cap + j * OB for j, key in enumerate(vectors)}
    elem = dict(uop=4, wgt=cfg.wgt_elem_bytes, acc=cfg.acc_elem_bytes, inp=cfg.inp_elem_bytes,
                out=cfg.out_elem_bytes)
    dram_el = {r: off // elem.get(r, cfg.acc_elem_bytes) for r, off in regions.items()}
    return Plan(g, layout.ceil_div(g.C, cfg.block_in), OB, t["tm"], t["tcb"], t["toh"], t["rin"],
                nbuf, cfg.inp_depth // nbuf, cfg.wgt_depth // nbuf, acc_cap, ops, nbytes,
                vec_base, dram_el, int(np.prod(out_shape)) // cfg.out_elem_bytes)


def _emit(cfg: VTAConfig, name: str, plan: Plan) -> tuple[list, list]:
    """The instruction stream (a uop LOAD first) and the uops it loads."""
    em = Emitter(plan)
    try:
        body = em.layer()
        if len(em.uops) > cfg.uop_depth:
            raise CodegenError(f"{name}: {len(em.uops)} uops exceed the uop buffer "
                               f"({cfg.uop_depth})")
        head = [isa.LoadStore(mem_type=isa.MEM_UOP, sram_base=0, dram_base=plan.dram_el["uop"],
                              y_size=1, x_size=len(em.uops), x_stride=len(em.uops))]
    except isa.IsaError as exc:
        raise CodegenError(f"{name}: a field does not fit the ISA: {exc}") from None
    return head + body, em.uops


def _requant_notes(e, fold, vectors: dict) -> list:
    notes = []
    if vectors:
        notes.append("per-channel shifts: rounding constants folded into the bias, SHR by "
                     "accumulator-row amounts")
    if "lo" in vectors:
        notes.append("left shifts on some channels: per-channel pre-clamp (MAX/MIN from "
                     "accumulator rows) before the shift")
    elif np.any(fold):
        notes.append(f"rounding constant 2^{e - 1} folded into the bias (exceeds the "
                     "16-bit ALU immediate)")
    return notes


def _lower(cfg: VTAConfig, g: ConvGeom, w: np.ndarray, bias: np.ndarray | None, e,
           relu: bool, wgt_mode: str, shift_P: int | None, name: str, nbuf: int,
           out_bits: int = 8) -> Program:
    e_arr = _check_shift_e(name, e, g.O, out_bits)
    nbytes = out_bits // 8
    notes = []
    if nbytes > 1 and nbuf != 1:
        # SHR 8 between byte-plane STOREs rewrites the accumulator in place; with one acc
        # buffer the store->compute tokens stay in order (see the token comment in stream.py)
        nbuf = 1
        notes.append(f"{out_bits}-bit output: {nbytes} byte-plane STOREs, single-buffered")
    W_int = _layer_weights(cfg, name, w, wgt_mode, shift_P)
    bias = _bias_vector(name, bias, g.O)
    ops, fold, vectors = _requant_ops(e_arr, relu, out_bits)
    _check_headroom(W_int, bias, fold, name)
    bias_acc = bias + fold
    if np.any(np.abs(bias_acc) > (1 << 31) - 1):
        raise CodegenError(f"{name}: bias (+ rounding constant) does not fit int32")
    _check_geometry(name, g)
    CB, OB = layout.ceil_div(g.C, cfg.block_in), layout.ceil_div(g.O, cfg.block_out)
    t = _choose_tiling(cfg, g, CB, OB, nbuf, OB * len(vectors))
    dram, regions, inp_shape, out_shape = _dram_image(cfg, g, w, bias_acc, vectors, nbytes)
    insns, uops = _emit(cfg, name, _plan(cfg, g, t, ops, vectors, nbytes, regions, out_shape))
    ub = b"".join(u.encode() for u in uops)
    dram[regions["uop"]:regions["uop"] + len(ub)] = np.frombuffer(ub, dtype=np.uint8)
    tiling = dict(t, uops=len(uops), OH=g.OH, OW=g.OW, CB=CB, OB=OB)
    return Program(cfg, insns, dram, regions["inp"], inp_shape, regions["out"], out_shape,
                   wgt_mode, int(shift_P or 0), tiling, notes + _requant_notes(e, fold, vectors),
                   out_bits)


def _geom_conv(layer: QConv2d, x_shape) -> ConvGeom:
    N, C, H, W = x_shape
    O, Cg, KH, KW = np.asarray(layer.weight).shape
    if Cg != C:
        raise CodegenError(f"{layer.name}: weight expects {Cg} input channels, input has {C}")
    sh, sw = ((layer.stride, layer.stride) if np.isscalar(layer.stride)
              else tuple(int(s) for s in layer.stride))
    if sh < 1 or sw < 1:
        raise CodegenError(f"{layer.name}: stride must be >= 1")
    pt, pl, pb, pr = conv_padding(layer.padding)
    return ConvGeom(N, C, H, W, O, KH, KW, sh, sw, pt, pl, pb, pr)


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
        g = ConvGeom(1, K, N, 1, w.shape[0], 1, 1, 1, 1, 0, 0, 0, 0)
        return _lower(cfg, g, w.reshape(w.shape[0], K, 1, 1), layer.bias, layer.shift_e,
                      layer.relu, layer.wgt_mode, layer.shift_P, layer.name, nbuf,
                      layer.out_bits)
    if isinstance(layer, QConv2d):
        if layer.groups != 1:
            raise CodegenError(f"{layer.name}: groups={layer.groups} is not lowered to VTA")
        return _lower(cfg, _geom_conv(layer, x_shape), np.asarray(layer.weight), layer.bias,
                      layer.shift_e, layer.relu, layer.wgt_mode, layer.shift_P, layer.name, nbuf,
                      layer.out_bits)
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
    return read_output(prog, sim.dram), sim


def read_output(prog: Program, dram: np.ndarray) -> np.ndarray:
    """The blocked output from a DRAM image: byte planes (low byte first) -> int8/16/32."""
    size = int(np.prod(prog.out_shape))
    nbytes = prog.out_bits // 8
    planes = dram[prog.out_byte:prog.out_byte + nbytes * size].reshape(nbytes, size)
    word = np.ascontiguousarray(planes.T).view(f"<i{nbytes}").reshape(prog.out_shape)
    return word.astype(f"int{prog.out_bits}")
