"""Relax op counts of a model before and after named pipeline stages (for ``shiftc inspect``)."""

from __future__ import annotations

from collections import Counter

from shiftc.errors import InputError
from shiftc.pipeline import STAGES, PassOptions, StageContext
from shiftc.report import StageReport

from .graph import op_counts

EXACT_NORM_STAGES = ("canonicalize", "fold_norm")


def counts_after(loaded, stage_names, options: PassOptions | None = None) -> tuple[Counter, Counter, list[StageReport]]:
    """Import ``loaded`` into Relax, count ops, apply ``stage_names`` in pipeline order, count again."""
    from shiftc import frontend

    known = {s.name: s for s in STAGES}
    unknown = [n for n in stage_names if n not in known]
    if unknown:
        raise InputError(f"unknown stage(s) {unknown}; known: {list(known)}")
    options = options or PassOptions()
    mod = frontend.to_relax(loaded)
    before = op_counts(mod)
    reports = []
    for stage in STAGES:
        if stage.name in stage_names:
            sr = StageReport(stage.name, stage.lossy)
            mod = stage.apply(mod, StageContext(options, [], loaded, sr))
            reports.append(sr)
    return before, op_counts(mod), reports
