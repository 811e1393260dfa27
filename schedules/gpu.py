"""Default GPU schedules: every kernel gets DLight's rule-based thread binding.

Relax ops are legalized to TIR and fused first (DLight schedules PrimFuncs, and fusion decides
which ones exist); then ``ApplyDefaultSchedule`` tries each rule in order on every PrimFunc not
yet marked scheduled: Matmul, GEMV, Reduction, GeneralReduction, and Fallback (flatten + bind to
blocks/threads), so nothing reaches codegen without a GPU thread binding. Kernels that another
schedule already handled (``tirx.is_scheduled``) are left alone.
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl


def default_rules():
    return [_DeclineShiftKernels(dl.gpu.Matmul()), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]


def _uses_shifts(func) -> bool:
    """Whether a PrimFunc's body shifts (``<<`` / ``>>`` in its TVMScript)."""
    text = func.script()
    return " << " in text or " >> " in text


class _DeclineShiftKernels(dl.ScheduleRule):
    """A DLight rule that passes on shift kernels, so the next rules in the list handle them.

    Measured with TVM 0.27: DLight's Matmul rule vectorizes the shift matmul's per-weight
    ``Select``s, and the CUDA codegen then emits ``int2 v = make_ushort2(...)``, which nvcc rejects
    ("no suitable user-defined conversion from ushort2 to int2").
    """

    def __init__(self, rule):
        self.rule = rule

    def apply(self, func, target, tunable):
        return None if _uses_shifts(func) else self.rule.apply(func, target, tunable)

    def is_target_available(self, target) -> bool:
        return self.rule.is_target_available(target)


def schedule_for_gpu(mod, target):
    """Legalize + fuse the Relax module, then apply ``default_rules`` under ``target``."""
    import tvm
    from tvm import relax

    seq = tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            dl.ApplyDefaultSchedule(*default_rules()),
        ]
    )
    with target, tvm.transform.PassContext(opt_level=3):
        return seq(mod)
