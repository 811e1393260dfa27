"""The pass pipeline between frontend and targets, and the final build.

Passes live in ``shiftc.passes``; each is a pure Relax -> Relax rewrite. A ``Stage`` wraps one for
the pipeline: when it runs (from ``PassOptions``), and whether it is lossy. After every lossy stage
the pipeline measures the whole model's output error against onnxruntime FP32 on the calibration
samples and records it in the report, so a lossy rewrite is never silent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import click

from .errors import InputError
from .report import Report, StageReport

log = logging.getLogger(__name__)


def option(default, help: str, cli: str | None = None, **click_kwargs):
    """A PassOptions field that the CLI exposes as ``--<name>`` (see cli.compile_cmd)."""
    return field(default=default, metadata={"help": help, "cli": cli, "click": click_kwargs})


@dataclass
class PassOptions:
    """Options of the Relax passes. Every field becomes a ``shiftc compile`` flag."""

    canonicalize: bool = option(True, "Rewrite written-out LayerNorm/GELU/L2-norm into one op each (exact).", cli="--canonicalize/--no-canonicalize")
    fold_norm: bool = option(True, "Fold BatchNorm into convs and per-channel affines into their consumers (exact).", cli="--fold-norm/--no-fold-norm")
    norm: str = option("ln", "LayerNorm kernel: 'ln' keeps it; 'l1' uses mean|x-mu| (lossy, error reported).", type=click.Choice(["ln", "l1"]))

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "PassOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InputError(f"unknown compile option(s) {unknown}; known: {sorted(names)}")
        return cls(**kwargs)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class StageContext:
    """What a stage may use: options, calibration samples, the loaded ONNX model, its report."""

    options: PassOptions
    samples: list
    loaded: object
    report: StageReport


@dataclass(frozen=True)
class Stage:
    name: str
    enabled: Callable[[PassOptions], bool]
    apply: Callable[[object, StageContext], object]
    lossy: bool = False


# In data-flow order; each pass module appends its stage via ``register``.
STAGES: list[Stage] = []


def register(stage: Stage) -> Stage:
    STAGES.append(stage)
    return stage


def run(mod, loaded, options: PassOptions, samples, report: Report, step: Callable[[str], None], timings: dict):
    """Apply the enabled stages in order; measure the model's error after each lossy one."""
    from . import evaluate

    import shiftc.passes  # noqa: F401  (registers the stages)

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

    CPU (LLVM) targets go through ``schedules.prepare``: fusion, the tuning database ``db`` (None:
    the one shipped for the target, if any) and default CPU schedules, recorded in ``report`` (a
    ``schedules.ScheduleReport``). A target with its own ``schedule`` hook (cuda) uses that instead.
    """
    import tvm

    from shiftc import schedules
    from shiftc.errors import InputError
    from shiftc.targets import Target

    tvm_target = target.tvm_target()
    if type(target).schedule is Target.schedule and schedules.is_cpu(tvm_target):
        mod = schedules.prepare(mod, tvm_target, db, report)
        with tvm_target, tvm.transform.PassContext(opt_level=3):
            return tvm.compile(mod, target=tvm_target, relax_pipeline=schedules.lowering_pipeline(tvm_target))
    if db is not None:
        raise InputError(f"--db (tuning databases) is supported for CPU targets only, not {target.name!r}")
    if report is not None:
        report.notes.append(f"scheduled by the {target.name} target's own hook")
    mod = target.schedule(mod)
    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target=tvm_target)
