"""From a Relax module to fused, scheduled TIR: the step between passes and targets.

``fuse`` is the one lowering that both tuning and building use, so that the PrimFuncs MetaSchedule
tunes are structurally the very ones a later build looks up in a database:

    DecomposeOpsForInference -> [CPU: integer lowerings, shift kernel schedules, ConvTranspose
    as phase convs (``conv_transpose``), conv2d to NHWC/HWIO, its permutes of constants folded in NumPy (``fold_permute``),
    int8_dot: int8 pointwise convs/matmuls to the dot-product intrinsic's GEMM] -> library dispatch -> LegalizeOps -> AnnotateTIROpPattern -> FoldConstant
    -> FuseOps -> FuseTIR -> DeadCodeElimination

Which of the bracketed steps run is the target's choice, handed over as a ``Lowering`` (each target
declares its own, ``Target.lowering()``); this layer never looks at a target's name or triple.

The CPU integer lowerings turn integer shift kernels into their int dot-product form where that
form was measured faster (``shift_dot``) and requantisers / residual adds into Relax ops
(``int_relax``), so that both take the conv's layout and fuse into its kernel.

``prepare`` then applies a tuning database (a user's, else the shipped one for the target) and, on
CPU targets, the default schedules of ``shiftc.schedules.cpu`` to every PrimFunc left untuned.
``LOWER`` is the Relax pipeline that finishes a prepared module (no second fusion).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Channel-last activations and HWIO weights: the output-channel axis is contiguous in the output
# and in the weights, so CPU schedules vectorise over channels (also for depthwise convolutions).
# conv2d_transpose stays NCHW/IOHW, the only layout TVM legalises it in: without an entry it would
# inherit NHWC from a conv before it and reach the VM unlowered.
CPU_CONV_LAYOUT = {"relax.nn.conv2d": ["NHWC", "HWIO"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}

# The compile report's statement of which form float shift layers run in.
FLOAT_FORM_NOTES = {
    "dot": "float shift kernels run as FP32 conv/matmul over their power-of-two weights, decoded once while "
           "compiling (the artifact holds the decoded FP32 weights; target option float_shift_form)",
    "shift": "float shift kernels run as shift-add kernels over the packed codes, decoded on every call",
}


@dataclass
class ScheduleReport:
    """What ``prepare`` did, for the compile report."""

    database: str | None = None
    tuned: list[str] = field(default_factory=list)
    default: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tuned_from: dict = field(default_factory=dict)  # database label -> kernels it tuned, in fallback order

    def to_json(self) -> dict:
        return {"database": self.database, "tuned": sorted(self.tuned), "tuned_from": self.tuned_from,
                "default": self.default, "notes": self.notes}


@dataclass(frozen=True)
class Lowering:
    """The lowering steps a target asks for (``Target.lowering()`` declares them).

    ``cpu``: the CPU steps before fusion (integer elementwise ops as Relax ops, shift kernel
    schedules, conv2d to NHWC/HWIO) and the default CPU schedules after it (``prepare``; tuning
    seeds them too). ``shift_form``: ``"dot"`` runs integer shift kernels as their equal int dot
    product, ``"shift"`` as shift-add kernels (with ``cpu``). ``int8_dot``: int8 pointwise convs /
    matmuls go to the x86 dot-product intrinsic's GEMM (with ``cpu``; the pass itself asks LLVM
    whether the target's CPU has such an instruction). ``float_shift_form``: ``"dot"`` runs float
    shift kernels as FP32 conv/matmul over their codes decoded while compiling (``shift_float_dot``),
    ``"shift"`` as shift-add kernels that decode on every call (with ``cpu``).
    """

    cpu: bool = True
    shift_form: str = "shift"
    int8_dot: bool = False
    float_shift_form: str = "shift"

    def __post_init__(self):
        for name in ("shift_form", "float_shift_form"):
            if getattr(self, name) not in ("dot", "shift"):
                raise ValueError(f"{name} must be 'dot' or 'shift', got {getattr(self, name)!r}")

    @property
    def shift_as_dot(self) -> bool:
        """Whether integer shift kernels run as their int dot product."""
        return self.cpu and self.shift_form == "dot"

    @property
    def float_shift_as_dot(self) -> bool:
        """Whether float shift kernels run as FP32 conv/matmul over weights decoded at compile time."""
        return self.cpu and self.float_shift_form == "dot"


def is_cpu(target) -> bool:
    return target.kind.name == "llvm"


def plain_lowering(target) -> Lowering:
    """The lowering for a caller that names only a TVM target (tests, scripts): every CPU step on an
    LLVM target, in the shift-add form (what a never-measured target gets); none on other kinds."""
    return Lowering(cpu=is_cpu(target), shift_form="shift", int8_dot=is_cpu(target))


def fuse(mod, target, lowering: Lowering | None = None):
    """Lower Relax ops to fused TIR PrimFuncs (no schedules yet), with the steps ``lowering`` asks for
    (None: ``plain_lowering(target)``)."""
    import tvm
    from tvm import relax
    from tvm.relax import pipeline as relax_pipeline

    from .conv_transpose import ConvTransposeToPhases
    from .fold_permute import FoldConstantPermute
    from .int8_gemm import UseInt8DotIntrinsic
    from .clamp_fold import FoldClamps
    from .int_relax import LowerIntElementwise
    from .mulhi import UseMulhi
    from .shift_dot import LowerShiftToDot
    from .shift_float_dot import LowerShiftFloatToDot
    from .shift_schedule import ScheduleShiftKernels

    lowering = lowering or plain_lowering(target)
    seq = [relax.transform.DecomposeOpsForInference()]
    if lowering.cpu:
        if lowering.shift_as_dot:
            seq.append(LowerShiftToDot())
        if lowering.float_shift_as_dot:
            seq.append(LowerShiftFloatToDot())
        seq += [LowerIntElementwise(), FoldClamps(), ScheduleShiftKernels(target), ConvTransposeToPhases(),
                relax.transform.ConvertLayout(CPU_CONV_LAYOUT), FoldConstantPermute(), UseMulhi()]
        if lowering.int8_dot:  # int8 pointwise convs/matmuls onto the dot-product intrinsic
            seq += [relax.transform.FoldConstant(), UseInt8DotIntrinsic(target)]
    seq += [
        *relax_pipeline.library_dispatch_passes(target),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(seq)(mod)


def primfunc_names(mod) -> list[str]:
    import tvm

    return sorted(gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def scheduled_names(mod) -> set[str]:
    import tvm

    return {
        gv.name_hint
        for gv, f in mod.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs.get("tirx.is_scheduled", False)
    }


def prepare(mod, target, db=None, report: ScheduleReport | None = None, lowering: Lowering | None = None):
    """Fuse (with ``lowering``, see ``fuse``), apply the tuning database ``db`` (a folder; None: the
    shipped one, if any), then give every PrimFunc still unscheduled a default CPU schedule when
    ``lowering.cpu``. Returns the prepared module."""
    from . import cpu
    from .shift_dot import has_shift_int
    from .shift_float_dot import has_shift_float

    report = report if report is not None else ScheduleReport()
    lowering = lowering or plain_lowering(target)
    if lowering.shift_as_dot and has_shift_int(mod):
        report.notes.append("integer shift kernels run as their equal int dot product (the form measured faster here)")
    if has_shift_float(mod):
        report.notes.append(FLOAT_FORM_NOTES[lowering.float_shift_form if lowering.cpu else "shift"])
    mod = fuse(mod, target, lowering)
    mod = _apply_databases(mod, target, db, report)
    if lowering.cpu:
        mod, stats = cpu.apply_default_schedules(mod, target)
        report.default = stats.to_json()
        if stats.naive:
            report.notes.append(f"{len(stats.naive)} kernel(s) left naive (no default rule fits): {sorted(stats.naive)}")
    else:
        report.notes.append(f"no default CPU schedules for target kind {target.kind.name!r}")
    return mod


def _apply_databases(mod, target, db, report: ScheduleReport):
    """Apply the tuning database ``db`` (a folder), else the shipped ones of the target's ISA keys
    one after the other, most specific first (``database.resolve``): a later key only sees the
    kernels still unscheduled. Records what each tuned in ``report``."""
    import tvm
    from tvm import relax

    from . import database

    sources, notes = database.resolve(db, target)
    report.notes.extend(notes)
    if not sources:
        return mod
    from .intrinsics import import_tensor_intrinsics

    import_tensor_intrinsics(target)  # records may replay tensorize steps
    before = scheduled_names(mod)
    for src in sources:
        done = scheduled_names(mod)
        with target, src.database, tvm.transform.PassContext(opt_level=3):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        report.tuned_from[src.label] = len(scheduled_names(mod) - done)
    report.database = database.describe(sources)
    report.tuned = sorted(scheduled_names(mod) - before)
    total = len(primfunc_names(mod))
    log.info("tuning database %s: %d of %d kernels tuned", report.database, len(report.tuned), total)
    if db is None:
        used = ", ".join(f"{k} ({n})" for k, n in report.tuned_from.items())
        report.notes.append(f"shipped tuning database for key {database.target_key(target)}: {len(report.tuned)} of "
                            f"{total} kernels tuned, from {used}" + ("" if report.tuned else "; kernels use default schedules"))
    return mod


def lowering_pipeline(target):
    """The Relax pipeline that finishes a prepared (already fused and scheduled) module: the
    dataflow-lowering and finalisation passes of TVM's default pipeline, without a second fusion."""
    import tvm
    from tvm import relax

    passes = [
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]

    @tvm.transform.module_pass(opt_level=0, name="shiftc.FinishPrepared")
    def _finish(mod, _ctx):
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _finish
