"""The pass pipeline between frontend and targets, and the final build.

Passes live in ``shiftc.passes``; each is a pure Relax -> Relax rewrite. A ``Stage``
(``shiftc.core.stage``) wraps one for the pipeline: when it runs (from ``PassOptions``), and
whether it is lossy. ``STAGES`` below is the one ordered list of them. After every lossy stage
the pipeline measures the whole model's output error against onnxruntime FP32 on the calibration
samples and records it in the report, so a lossy rewrite is never silent.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from .core.options import PassOptions
from .core.report import Report
from .core.stage import Stage, StageContext
from .passes import canonicalize, fold_norm, integerize_stage, ln_to_l1, shift_stage

__all__ = ["PassOptions", "STAGES", "Stage", "StageContext", "build", "run"]

# In data-flow order.
STAGES: list[Stage] = [canonicalize.STAGE, fold_norm.STAGE, ln_to_l1.STAGE, shift_stage.STAGE, integerize_stage.STAGE]

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
            sr.error = evaluate.compare(reference, evaluate.relax_outputs(mod, loaded.inputs, samples))
            log.info("%s: model output error %s", stage.name, sr.error)
        timings[stage.name] = time.perf_counter() - t0
    return mod


def build(mod, target, db=None, report=None):
    """Schedule and compile a Relax module for a target into a Relax executable.

    A target with a ``lowering()`` (CPU targets) goes through ``schedules.prepare`` with it: fusion,
    the tuning database ``db`` (None: the one shipped for the target, if any) and default CPU
    schedules, recorded in ``report`` (a ``schedules.ScheduleReport``). A target whose lowering is
    None schedules its own kernels (``target.schedule``, cuda).
    """
    import tvm

    from shiftc import schedules
    from shiftc.core.errors import InputError

    tvm_target = target.tvm_target()
    lowering = target.lowering()
    if lowering is not None:
        mod = schedules.prepare(mod, tvm_target, db, report, lowering)
        with tvm_target, tvm.transform.PassContext(opt_level=3):
            return tvm.compile(mod, target=tvm_target, relax_pipeline=schedules.lowering_pipeline(tvm_target))
    if db is not None:
        raise InputError(f"--db (tuning databases) is supported for CPU targets only, not {target.name!r}")
    if report is not None:
        report.notes.append(f"scheduled by the {target.name} target's own hook")
    mod = target.schedule(mod)
    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target=tvm_target)
