"""Default GPU schedules: every kernel gets DLight's rule-based thread binding.

Relax ops are legalized to TIR and fused first (DLight schedules PrimFuncs, and fusion decides
which ones exist); then ``ApplyDefaultSchedule`` tries each rule in order on every PrimFunc not
yet marked scheduled: Matmul, GEMV, Reduction, GeneralReduction, and Fallback (flatten + bind to
blocks/threads), so nothing reaches codegen without a GPU thread binding. Kernels that another
schedule already handled (``tirx.is_scheduled``) are left alone.
"""

from __future__ import annotations


def default_rules():
    from tvm.s_tir import dlight as dl

    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]


def schedule_for_gpu(mod, target):
    """Legalize + fuse the Relax module, then apply ``default_rules`` under ``target``."""
    import tvm
    from tvm import relax
    from tvm.s_tir import dlight as dl

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
