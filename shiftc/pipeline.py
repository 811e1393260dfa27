"""The pass pipeline between frontend and targets, and the final build.

Passes live in ``shiftc.passes``; each is a pure Relax -> Relax rewrite. A ``Stage``
(``shiftc.core.stage``) wraps one for the pipeline: when it runs (from ``PassOptions``), and
whether it is lossy. ``STAGES`` below is the one ordered list of them. After every lossy stage
the pipeline measures the whole model's output error against onnxruntime FP32 on the calibration
samples and records it in the report, so a lossy rewrite is never silent.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Callable

from .core.options import PassOptions
from .core.report import Report
from .core.stage import Stage, StageContext
from .passes import canonicalize, fold_norm, integerize_stage, ln_to_l1, shift_stage, smooth_quant

__all__ = ["PassOptions", "STAGES", "Stage", "StageContext", "Prepared", "build", "prepare", "run"]

# In data-flow order.
STAGES: list[Stage] = [canonicalize.STAGE, fold_norm.STAGE, ln_to_l1.STAGE, smooth_quant.STAGE, shift_stage.STAGE, integerize_stage.STAGE]

log = logging.getLogger(__name__)


def run(mod, loaded, options: PassOptions, samples, report: Report, step: Callable[[str], None], timings: dict):
    """Apply the enabled stages in order; measure the model's error after each lossy one."""
    from . import evaluate

    reference = None
    for stage in STAGES:
        if not stage.enabled(options):
            continue
        step(stage.name)
        t0 = time.perf_counter()
        sr = report.stage(stage.name, stage.lossy)
        mod = stage.apply(mod, StageContext(options, samples, loaded, sr))
        if stage.lossy:
            if reference is None:
                reference = evaluate.onnxruntime_outputs(loaded.proto, samples)
            got = evaluate.relax_outputs(mod, loaded.inputs, samples)
            sr.error = evaluate.compare(reference, got, [o.name for o in loaded.outputs])
            log.info("%s: model output error %s", stage.name, sr.error)
        timings[stage.name] = time.perf_counter() - t0
    return mod


@dataclass
class Prepared:
    """What ``build`` compiles: the scheduled Relax ``module`` and the Relax ``relax_pipeline`` that
    ``tvm.compile`` finishes it with before TIR codegen (a pass, or ``"default"``: TVM's default
    pipeline, which ``tvm.compile`` resolves for the target). ``cpu``: prepared by
    ``schedules.prepare`` (compiled inside the TVM target's scope)."""

    module: object
    relax_pipeline: object
    tvm_target: object
    cpu: bool
    report: object = None  # the compile report (``core.report.Report``) where a caller attaches it

    def finished(self):
        """The module after the Relax pipeline, as TIR codegen receives it: its PrimFuncs are the
        executable's kernels (what the integer-only float-op scan reads). CPU builds only."""
        import tvm

        if not self.cpu:
            raise ValueError("finished(): only for modules prepared by shiftc.schedules (CPU targets)")
        with self.tvm_target, tvm.transform.PassContext(opt_level=3):
            return self.relax_pipeline(self.module)

    def compile(self):
        """The Relax executable (``tvm.compile``)."""
        import tvm

        scope = self.tvm_target if self.cpu else contextlib.nullcontext()
        with scope, tvm.transform.PassContext(opt_level=3):
            return tvm.compile(self.module, target=self.tvm_target, relax_pipeline=self.relax_pipeline)


def prepare(mod, target, db=None, report=None) -> Prepared:
    """Schedule a Relax module for a target: the ``Prepared`` module ``build`` compiles.

    A target with a ``lowering()`` (CPU targets) goes through ``schedules.prepare`` with it: fusion,
    the tuning database ``db`` (None: the one shipped for the target, if any) and default CPU
    schedules, recorded in ``report`` (a ``schedules.ScheduleReport``); its pipeline finishes the
    prepared module without a second fusion. A target whose lowering is None schedules its own
    kernels (``target.schedule``, cuda) and keeps TVM's default pipeline.
    """
    from shiftc import schedules
    from shiftc.core.errors import InputError

    tvm_target = target.tvm_target()
    lowering = target.lowering()
    if lowering is not None:
        mod = schedules.prepare(mod, tvm_target, db, report, lowering)
        return Prepared(mod, schedules.lowering_pipeline(tvm_target), tvm_target, cpu=True)
    if db is not None:
        raise InputError(f"--db (tuning databases) is supported for CPU targets only, not {target.name!r}")
    if report is not None:
        report.notes.append(f"scheduled by the {target.name} target's own hook")
    return Prepared(target.schedule(mod), "default", tvm_target, cpu=False)


def build(mod, target, db=None, report=None):
    """Schedule and compile a Relax module for a target into a Relax executable:
    ``prepare(mod, target, db, report).compile()``."""
    return prepare(mod, target, db, report).compile()
