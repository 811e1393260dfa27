"""Default CPU schedules for fused TIR PrimFuncs that have no tuning record.

Untuned TVM kernels are naive loop nests. These hand-written rules give every fused PrimFunc a
reasonable schedule without measuring anything:

- **reduction kernels** (conv2d, depthwise conv2d, matmul/dense, and any TE reduction such as the
  shift kernels): producers (padding, transposes, decodes) are inlined; the innermost spatial axis is
  split into a vector tile and the one before it into a small register tile; loop order is
  ``outer spatial (fused, parallel) / reduction / register tile (unrolled) / vector tile
  (vectorised)``; the initialisation is split out and vectorised; the epilogue (bias, activation,
  residual add) is computed per tile.
- **injective kernels** (elementwise, layout transforms): one fused loop, parallel outside,
  vectorised inside.
- **row reductions** (several reductions over the same rows: softmax, LayerNorm, Shiftmax,
  I-LayerNorm): TVM's ``dlight.cpu.Reduction`` rule.
- **int8/int16 GEMMs** of ``int8_gemm``: tiled and tensorized with the x86 dot-product intrinsic.

A rule that does not fit a function (e.g. an opaque block) leaves that function naive and says so in
the returned stats; nothing fails silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Loops longer than this stay unvectorised rather than emitting masked tails.
_MIN_VECTOR = 4
# Below this many scalar operations a kernel runs on one thread: waking the pool costs more than
# it saves (measured on the Fashion-MNIST ViT: parallel tiny kernels made it 1.6x slower than naive).
PARALLEL_MIN_WORK = 1 << 16


@dataclass
class ScheduleStats:
    """Which PrimFuncs got which default schedule (for the compile report)."""

    tensorized: list[str] = field(default_factory=list)  # int8 GEMMs on the dot-product intrinsic
    reduction: list[str] = field(default_factory=list)
    row_reduction: list[str] = field(default_factory=list)  # several reductions per row (dlight's rule)
    injective: list[str] = field(default_factory=list)
    naive: dict[str, str] = field(default_factory=dict)  # name -> why no rule applied

    def to_json(self) -> dict:
        return {"tensorized": len(self.tensorized), "reduction": len(self.reduction), "row_reduction": len(self.row_reduction),
                "injective": len(self.injective), "naive": dict(self.naive)}


def vector_lanes(target) -> int:
    """float32 lanes of the widest vector unit the target's CPU has (from its LLVM features)."""
    from shiftc.schedules.cpu_features import has_feature

    if has_feature(target, "avx512f"):
        return 16
    if has_feature(target, "avx2") or has_feature(target, "avx"):
        return 8
    if has_feature(target, "neon") or str(target.attrs.get("mtriple", "")).startswith("aarch64"):
        return 4
    return 4


def _largest_divisor(extent: int, candidates) -> int:
    for c in candidates:
        if c <= extent and extent % c == 0:
            return c
    return 1


def _iter_kinds(sch, block) -> str:
    """'S'/'R' per block iterator (other kinds are reported as 'O')."""
    from tvm.tirx import IterVar

    kinds = {IterVar.DataPar: "S", IterVar.CommReduce: "R"}
    return "".join(kinds.get(int(iv.iter_type), "O") for iv in sch.get(block).iter_vars)


def _extent(sch, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if hasattr(ext, "value") else None


def _schedule_reduction(sch, block, lanes: int) -> None:
    kinds = _iter_kinds(sch, block)
    loops = sch.get_loops(block)
    if len(loops) != len(kinds) or "O" in kinds or "R" not in kinds:
        raise ValueError(f"reduction block with iterators {kinds!r} over {len(loops)} loops")
    spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
    reduce_ = [lp for lp, k in zip(loops, kinds) if k == "R"]
    if not spatial:
        raise ValueError("a full reduction to a scalar (no spatial axis)")
    sch.reorder(*spatial, *reduce_)

    # vector tile on the innermost spatial axis, register tile on the one before it
    inner_ext = _extent(sch, spatial[-1]) or 1
    vec = _largest_divisor(inner_ext, (2 * lanes, lanes, lanes // 2)) if inner_ext >= _MIN_VECTOR else 1
    v_outer, v_inner = sch.split(spatial[-1], [None, vec])
    outer = list(spatial[:-1])
    reg_inner = None
    if outer:
        reg_ext = _extent(sch, outer[-1]) or 1
        reg = _largest_divisor(reg_ext, (4, 2))
        if reg > 1:
            r_outer, reg_inner = sch.split(outer[-1], [None, reg])
            outer[-1] = r_outer
    order = [*outer, v_outer, *reduce_] + ([reg_inner] if reg_inner is not None else []) + [v_inner]
    sch.reorder(*order)
    par = sch.fuse(*outer, v_outer) if outer else v_outer
    if _work(sch, block) >= PARALLEL_MIN_WORK:
        sch.parallel(par)

    # epilogue (bias, activation, residual) per parallel iteration, vectorised
    for consumer in sch.get_consumers(block):
        sch.reverse_compute_at(consumer, par)
        c_loops = sch.get_loops(consumer)[1:]
        if c_loops:  # vectorised along the vector tile only: a fused row x column tile gathers
            ext = _extent(sch, c_loops[-1]) or 1
            v = _largest_divisor(ext, (2 * lanes, lanes, lanes // 2))
            if v >= _MIN_VECTOR:
                sch.vectorize(sch.split(c_loops[-1], [None, v])[1])

    # vectorise/unroll while the block still has its init (a complete reduction block), then split
    # the init out; its copy of the tile loops is vectorised on its own
    if vec >= _MIN_VECTOR:
        sch.vectorize(v_inner)
    if reg_inner is not None:
        sch.unroll(reg_inner)
    init = sch.decompose_reduction(block, reduce_[0])
    init_loops = sch.get_loops(init)
    if vec >= _MIN_VECTOR and sch.get(init_loops[-1]).kind != sch.get(v_inner).kind:
        sch.vectorize(init_loops[-1])


def _work(sch, block) -> int:
    """Iterations of the loop nest around a block (its scalar operation count)."""
    n = 1
    for loop in sch.get_loops(block):
        n *= _extent(sch, loop) or 1
    return n


def _gathers(stmt) -> bool:
    """Whether some read's innermost index does not follow the block's innermost iterator (a
    transpose): consecutive outputs then read from different rows."""
    import tvm

    if not stmt.iter_vars:
        return False
    last = stmt.iter_vars[-1].var
    for read in stmt.reads:
        if not any(v.same_as(last) for v in tvm.tirx.analysis.undefined_vars(read.region[-1].min)):
            return True
    return False


def _schedule_injective(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    narrow = (_extent(sch, loops[-1]) or 1) < _MIN_VECTOR and _gathers(sch.get(block))  # NCHW -> NHWC, 3 channels
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    ext = _extent(sch, fused) or 1
    # a vector across a narrow innermost axis would gather from several rows: scalar is faster
    v = _largest_divisor(ext, (2 * lanes, lanes, lanes // 2)) if ext >= _MIN_VECTOR and not narrow else 1
    parallel = ext >= PARALLEL_MIN_WORK
    if v >= _MIN_VECTOR:
        outer, inner = sch.split(fused, [None, v])
        if parallel:
            sch.parallel(outer)
        sch.vectorize(inner)
    elif parallel:
        sch.parallel(fused)


def schedule_func(func, lanes: int, target=None):
    """A scheduled copy of one PrimFunc and the rule used ('tensorized'/'reduction'/'injective')."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    kind = schedule_in_place(sch, lanes, target)
    return sch.mod["main"], kind


def schedule_in_place(sch, lanes: int, target=None) -> str:
    """Apply the default rules to the PrimFunc ``main`` of ``sch``; returns the rule used.

    With an x86 ``target``, an int8 GEMM kernel (``int8_gemm``) gets its tensorized schedule."""
    from . import int8_gemm
    from .cpu_padding import pad_to_tiles

    if target is not None and int8_gemm.schedule_in_place(sch, target):
        return "tensorized"
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks if "R" in _iter_kinds(sch, b)]
    if len(reductions) > 1:
        raise ValueError(f"{len(reductions)} reduction blocks")
    if reductions:
        name = sch.get(reductions[0]).name_hint
        kept = pad_to_tiles(sch, reductions[0], _iter_kinds(sch, reductions[0]), lanes)
        kept_names = {sch.get(b).name_hint for b in kept or ()}
        blocks = sch.get_child_blocks(root)
        main = sch.get_sblock(name)
        for b in blocks:
            if not sch.get(b).same_as(sch.get(main)) and sch.get(b).name_hint not in kept_names:
                try:
                    sch.compute_inline(b)
                except Exception:  # noqa: BLE001 - an epilogue; folded below
                    pass
        for b in kept_names:
            _schedule_injective(sch, sch.get_sblock(b), lanes)
        # chain epilogues: fold later elementwise blocks into the first consumer
        rest = [b for b in sch.get_child_blocks(root)
                if not sch.get(b).same_as(sch.get(main)) and sch.get(b).name_hint not in kept_names]
        for b in reversed(rest[1:]):
            sch.reverse_compute_inline(b)
        _schedule_reduction(sch, main, lanes)
        return "reduction"
    for b in blocks[:-1]:
        sch.compute_inline(b)
    for b in sch.get_child_blocks(root):
        _schedule_injective(sch, b, lanes)
    return "injective"


def default_schedule(func, lanes: int, target):
    """The default schedule of one PrimFunc: (``s_tir.Schedule``, rule name). The hand-written
    rules first, then TVM's CPU rule for several reductions over the same rows (softmax,
    LayerNorm, Shiftmax, I-LayerNorm: rows in parallel, every block per row). Raises with the
    first rule's reason when none applies. Tuning seeds its records from this too."""
    from tvm import s_tir
    from tvm.s_tir import dlight

    sch = s_tir.Schedule(func)
    try:
        return sch, schedule_in_place(sch, lanes, target)
    except Exception as exc:  # noqa: BLE001 - try the row-reduction rule
        try:
            rows = dlight.cpu.Reduction().apply(func, target, False)
        except Exception:  # noqa: BLE001 - its preconditions did not hold
            rows = None
        if rows is None:
            raise exc
        return rows, "row_reduction"


def apply_default_schedules(mod, target):
    """Schedule every PrimFunc of ``mod`` not marked ``tirx.is_scheduled``; returns (mod, stats)."""
    import tvm

    lanes = vector_lanes(target)
    stats = ScheduleStats()
    updates = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
            continue
        try:
            sch, kind = default_schedule(func, lanes, target)
        except Exception as exc:  # noqa: BLE001 - the function stays naive and the report says why
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            stats.naive[gv.name_hint] = why
            log.info("default schedule: %s stays naive (%s)", gv.name_hint, why)
            continue
        getattr(stats, kind).append(gv.name_hint)
        updates[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    for gv, func in updates.items():
        mod[gv] = func
    return mod, stats
