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

    # shift pass (passes/shift_stage.py)
    shift_bits: int | None = option(None, "Encode conv/matmul weights as b-bit power-of-two codes (3, 4 or 5); off if unset.", type=int)
    shift_zero: str = option("free", "Zero handling of shift codes: 'free' (DenseShift, no zero code) or 'with-zero' (DeepShift).")
    shift_terms: int = option(1, "Power-of-two terms per weight (1 = PoT, 2-3 = multi-term APoT/BCQ).", type=int)
    shift_skip: str = option("", "Layers to keep FP32: comma list of 'first', 'last', layer names or regexes (e.g. 'first,last,matmul_.*').")
    accuracy_budget: float | None = option(None, "Choose bits/terms per layer so the model output's relative L2 error stays within this budget.", type=float)

    # integerize (passes/integerize_stage.py)
    integer_only: bool = option(False, "Integer-only graph: int8 calibrated arithmetic between an input quantiser and an output dequantiser (lossy, error reported).", cli="--integer-only/--no-integer-only")
    calibration_method: str = option("minmax", "Activation range observer for --integer-only.", type=click.Choice(["minmax", "percentile", "mse"]))
    calibration_samples: int | None = option(None, "Use only the first N calibration samples (1 = one-sample PTQ); default all.", type=int)
    gelu: str = option("shift", "Integer GELU: 'shift' (I-ViT ShiftGELU, row max) or 'lambda' (shiftc's elementwise lambda-ShiftGELU).", type=click.Choice(["shift", "lambda"]))
    upsample: str = option("keep", "With --integer-only: keep bilinear resize (stays float), or replace it by integer 'nearest' upsampling (changes the model, reported).", type=click.Choice(["keep", "nearest"]))
    l2norm: str = option("keep", "With --integer-only: keep L2 normalisation (stays float), or 'remove' it (changes the model, reported).", type=click.Choice(["keep", "remove"]))
    requant: str = option("dyadic", "Requantiser scales: 'dyadic' (m * 2^-e) or 'pow2' (every scale a power of two: shift-only, for VTA).", type=click.Choice(["dyadic", "pow2"]))
    float_fallback: bool = option(False, "With --integer-only, keep ops that have no integer form in float (each one reported) instead of failing.", cli="--float-fallback/--no-float-fallback")

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
