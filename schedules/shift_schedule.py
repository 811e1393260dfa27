"""Default CPU schedules for the shift kernels (used where no tuned schedule is applied).

The kernels are plain TE (``shiftc.kernels.shift``), so MetaSchedule can tune them too; this
module gives untuned builds a reasonable loop nest instead of the naive one, and the module pass
``ScheduleShiftKernels(target)`` (``shiftc.ScheduleShiftKernels``) applies it to every shift kernel:

* the reduction block ``shift_acc``/``dot_acc``: the innermost spatial axis (output width for
  conv2d, output features for matmul) is split by a vector width that divides it and vectorised;
  for conv2d the output channels are register-tiled by 4 (unrolled), so every activation load
  feeds 4 accumulators; reduction loops sit between the outer tiles and the register tile;
* the per-channel ``shift_scale`` is computed right after each tile (its accumulators stay
  small and local after buffer compaction);
* outer spatial loops are fused and run in parallel, as is padding; the code stage is inlined
  into the decode stage (one serial O(weights) pass: small code, no temporary code buffer).
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from shiftc.core.contract import KIND, ShiftKernel, kernel_kind

ACC_BLOCKS = ("shift_acc", "dot_acc")
VECTOR = (16, 8, 4, 2)


def _divisor(n: int, options=VECTOR) -> int:
    return next((v for v in options if n % v == 0 and n >= v), 1)


def _parallel_stage(sch, block):
    loops = sch.get_loops(block)
    if loops:
        sch.parallel(sch.fuse(*loops[: max(1, len(loops) - 1)]) if len(loops) > 1 else loops[0])


def schedule_cpu(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """The default CPU schedule of one shift kernel PrimFunc (see module docstring)."""
    sch = s_tir.Schedule(func)
    names = _block_names(sch)
    acc_name = next(n for n in names if n in ACC_BLOCKS)
    acc = sch.get_sblock(acc_name)
    n_red = sum(1 for iv in sch.get(acc).iter_vars if iv.iter_type == 2)  # CommReduce
    loops = sch.get_loops(acc)
    spatial, red = loops[: len(loops) - n_red], loops[len(loops) - n_red :]
    is_conv = n_red >= 3  # conv2d reduces over (t,) ic, r, s; matmul over (t,) k
    extents = [int(sch.get(lp).extent) for lp in spatial]
    vec = _divisor(extents[-1])
    last_o, last_i = sch.split(spatial[-1], [None, vec])
    tile = []
    outer = list(spatial[:-1])
    if is_conv:
        depthwise = n_red >= 3 and int(sch.get(red[-3]).extent) == 1  # one input channel per group
        ot = 1 if depthwise else _divisor(extents[1], (4, 2))
        oo, oi = sch.split(spatial[1], [None, ot])
        outer = [spatial[0], oo, spatial[2]]
        tile = [oi]
    sch.reorder(*outer, last_o, *red, *tile, last_i)
    if "shift_scale" in names:
        sch.reverse_compute_at(sch.get_sblock("shift_scale"), last_o)
        sloops = sch.get_loops(sch.get_sblock("shift_scale"))
        if vec > 1:
            sch.vectorize(sloops[-1])
    if vec > 1:
        sch.vectorize(last_i)
    for t in tile:
        sch.unroll(t)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    sch.parallel(fused)
    sch.decompose_reduction(acc, red[0])
    for name in names:
        if name == "shift_code":  # read codes inside the decode stage: no temporary code buffer
            sch.compute_inline(sch.get_sblock(name))
        elif name == "shift_pad":
            _parallel_stage(sch, sch.get_sblock(name))
    return sch.mod["main"]


def _block_names(sch) -> list[str]:
    return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]


@tvm.transform.module_pass(opt_level=0, name="shiftc.ScheduleShiftKernels")
class ScheduleShiftKernels:
    """Give every shift kernel PrimFunc (``ShiftKernel`` kinds of ``shiftc.core.contract``) its
    default CPU schedule; llvm targets only, other modules pass through unchanged."""

    def __init__(self, target: tvm.target.Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if self.target.kind.name != "llvm":
            return mod
        out = tvm.IRModule(mod.functions, attrs=mod.attrs, global_infos=mod.global_infos)
        for gv, func in list(mod.functions.items()):
            kind = kernel_kind(func) if isinstance(func, tvm.tirx.PrimFunc) else None
            if kind in ShiftKernel.KINDS:  # other shiftc kernels carry a kind too
                scheduled = schedule_cpu(func.with_attr("global_symbol", gv.name_hint))
                out[gv] = scheduled.with_attr(KIND, kind).with_attr("tirx.is_scheduled", True)
        return out
