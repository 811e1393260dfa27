"""The pass pipeline between frontend and targets, and the final build.

Each stage is a pure Relax -> Relax rewrite from ``shiftc.passes``; the pipeline decides which
stages run from ``PassOptions`` and records what each did in the report.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from .errors import InputError
from .report import Report


@dataclass
class PassOptions:
    """Options of the Relax passes (each later pass adds its fields here)."""

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "PassOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InputError(f"unknown compile option(s) {unknown}; known: {sorted(names)}")
        return cls(**kwargs)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def run(mod, loaded, options: PassOptions, calibration, report: Report, step: Callable[[str], None], timings: dict):
    """Apply the enabled passes in data-flow order."""
    return mod


def build(mod, target):
    """Compile a Relax module for a target into a Relax executable."""
    import tvm

    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target=target.tvm_target())
