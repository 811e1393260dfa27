"""A pipeline stage: one pass module, when it runs, and what it may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .options import PassOptions
from .report import StageReport


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
