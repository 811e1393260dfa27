"""Relax op counts of a model before and after named pipeline stages (for ``shiftc inspect``)."""

from __future__ import annotations

from collections import Counter

from .core.errors import InputError
from .core.report import StageReport
from .passes.graph import op_counts
from .pipeline import STAGES, PassOptions, StageContext

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


def integer_form(op: str) -> bool:
    """Whether the integeriser has a rewrite rule for Relax op ``op`` (it may still decline a
    particular call, e.g. a multiply by a constant that varies along two axes; ``compile --integer-only`` is definitive)."""
    from .passes.integerize import has_integer_form

    base = op.split(":")[0]  # op_counts names a call_tir by its kernel (call_tir:maximum) and drops "relax."
    return has_integer_form(base if base.startswith("relax.") else f"relax.{base}")


def rewrite_candidates(loaded) -> dict:
    """What the shift and integer passes would rewrite, after the exact passes (canonicalize,
    fold_norm): every shift candidate layer, and every Relax op with or without an integer form."""
    from shiftc import frontend

    from .passes import canonicalize, fold_norm, shift

    mod = frontend.to_relax(loaded)
    for stage in (canonicalize, fold_norm):
        mod = stage.apply(mod, StageContext(PassOptions(), [], loaded, StageReport(stage.__name__)))
    layers = [
        {"layer": l.name, "op": l.op, "weight_shape": list(l.weight.shape), "macs": l.macs}
        for l in shift.find_layers(mod)
    ]
    counts = op_counts(mod)
    return {
        "shift": layers,
        "integer": {op: {"count": n, "integer_form": integer_form(op)} for op, n in sorted(counts.items())},
    }
