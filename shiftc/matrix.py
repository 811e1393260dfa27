"""The cross-compile matrix: build one model for several targets, run what can run here, compare.

Every target is compiled; each one then says whether it can run here (``Target.can_run_here``:
x86 natively, arm under qemu-aarch64, cuda only where a GPU is present) and what its outputs are
compared with on the same synthetic input (``Target.comparison``): onnxruntime FP32 within the
matrix's tolerance, or another target's build bit for bit (vta: the x86 integer-only build with
power-of-two requantisers, which it matches exactly). The error is ``max |got - ref| / max(1, |ref|)``
over all outputs (so small values are compared absolutely, large ones relatively).

A row fails when the build fails, when it ran and the error exceeds its tolerance, or when a
requested target cannot be built or run here (its toolchain is missing, the aarch64 runtime is not
cached, no GPU): a matrix that checked nothing does not pass. Only targets named in ``allow_skip``
(``shiftc matrix --allow-skip cuda``) may instead be reported as skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

import numpy as np

from . import api, calibration_data, evaluate, frontend
from .core.errors import InputError, ShiftcError, ToolchainError


@dataclass
class MatrixRow:
    target: str
    built: bool
    build_note: str = ""
    build_s: float | None = None
    ran: bool = False
    run_note: str = ""
    run_s: float | None = None
    max_error: float | None = None
    size_bytes: int | None = None
    ok: bool = True
    compared_with: str = ""
    skipped: bool = False  # could not be built or run here, and the caller allowed that (ok stays True)

    def to_json(self) -> dict:
        return asdict(self)


def output_error(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    """``max |got - ref| / max(1, |ref|)`` over all outputs; a shape or count mismatch is infinite."""
    if len(got) != len(ref):
        return float("inf")
    worst = 0.0
    for g, r in zip(got, ref):
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        if g.shape != r.shape:
            return float("inf")
        if g.size:
            worst = max(worst, float((np.abs(g - r) / np.maximum(1.0, np.abs(r))).max()))
    return worst


def run_matrix(
    model: str | Path,
    target_names: Sequence[str],
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    tolerance: float = 1e-4,
    work_dir: str | Path | None = None,
    target_options: Mapping[str, dict] | None = None,
    progress: Callable[[str], None] | None = None,
    allow_skip: Collection[str] = (),
) -> list[MatrixRow]:
    """Compile ``model`` for each target into ``work_dir/<target>`` and check what runs here.

    A target that cannot be built or run here fails its row unless it is in ``allow_skip``."""
    from shiftc import targets

    step = progress or (lambda s: None)
    unknown = [t for t in [*target_names, *allow_skip] if t not in targets.REGISTRY]
    if unknown:
        raise InputError(f"unknown target(s) {unknown}; known targets: {', '.join(sorted(targets.REGISTRY))}")
    shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    loaded = frontend.load(model, shapes)
    sample = calibration_data.synthetic(loaded.inputs, n=1)[0]
    reference = evaluate.onnxruntime_outputs(loaded.proto, [sample])[0]
    references = _References(model, shapes, sample, reference)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="shiftc-matrix-"))
        references.work = Path(work_dir)
        rows = [_row(model, name, Path(work_dir), shapes, sample, references, tolerance, target_options, step) for name in target_names]
    for row in rows:
        _cannot_check(row, row.target in allow_skip)
    return rows


def _cannot_check(row: MatrixRow, allowed: bool) -> None:
    """A row that neither failed nor was checked here: skipped where allowed, else failed."""
    if not row.ok or row.ran:
        return
    if allowed:
        row.skipped = True
    else:
        row.ok = False
        note = "build_note" if not row.built else "run_note"
        setattr(row, note, f"{getattr(row, note)}; not checked (pass --allow-skip {row.target} to accept)")


def _row(model, name, work, shapes, sample, references, tolerance, target_options, step) -> MatrixRow:
    """Build, and where possible run and compare, one target (a row that could not be built or run
    here comes back ok and not ran; ``_cannot_check`` decides)."""
    from shiftc import targets

    row = MatrixRow(target=name, built=False)
    options = dict((target_options or {}).get(name, {}))
    tgt = targets.get(name, **options)
    comparison = tgt.comparison()
    row.compared_with = comparison.describe()
    missing = [t for t in tgt.missing_tools() if t.needed_for == "build"]
    if missing:
        row.build_note = "no toolchain: apt-get install " + " ".join(sorted({t.package for t in missing}))
        row.ran, row.run_note = False, "no (not built)"
        return row
    step(f"build {name}")
    t0 = time.perf_counter()
    try:
        cm = api.compile(model, name, input_shapes=shapes, output=work / name, **options)
    except ToolchainError as exc:  # cannot be built here (e.g. the aarch64 runtime is not cached)
        row.build_note, row.run_note = _one_line(exc), "no (not built)"
        return row
    except Exception as exc:  # noqa: BLE001 - any build failure is this row's result
        row.build_note, row.ok = _one_line(exc), False
        row.run_note = "no (build failed)"
        return row
    row.build_s = time.perf_counter() - t0
    row.built = True
    row.size_bytes = sum((work / name / f).stat().st_size for f in cm.meta["files"])
    step(f"run {name}")
    reason = tgt.can_run_here()
    if reason:
        row.run_note = f"no ({reason})"
        return row
    _run_and_compare(row, cm, tgt, sample, references, tolerance if comparison.tolerance is None else comparison.tolerance, step)
    return row


def _run_and_compare(row: MatrixRow, cm, tgt, sample, references, tolerance: float, step) -> None:
    t0 = time.perf_counter()
    try:
        outs = cm.run(sample)
    except ToolchainError as exc:
        row.run_note = f"no ({exc})"
        return
    except Exception as exc:  # noqa: BLE001
        row.run_note, row.ok = f"failed: {_one_line(exc)}", False
        return
    row.run_s = time.perf_counter() - t0
    row.ran = True
    row.run_note = "yes" + (f" ({tgt.emulator()})" if tgt.emulator() else "")
    try:
        reference = references.outputs(tgt.comparison(), step)
    except Exception as exc:  # noqa: BLE001 - a reference that does not build fails this row
        row.ok, row.run_note = False, f"{row.run_note}; the reference failed: {_one_line(exc)}"
        return
    row.max_error = output_error(list(outs.values()), reference)
    row.ok = row.max_error <= tolerance


class _References:
    """Reference outputs on the matrix's sample: onnxruntime's, and target builds made on demand
    (once per target and options, into ``work/reference-<target>-<n>``)."""

    def __init__(self, model, shapes, sample, onnxruntime_outputs: list):
        self.model, self.shapes, self.sample = model, shapes, sample
        self.known = {("onnxruntime", ()): onnxruntime_outputs}
        self.work: Path | None = None

    def outputs(self, comparison, step) -> list[np.ndarray]:
        key = (comparison.reference, tuple(sorted(comparison.options.items())))
        if key not in self.known:
            step(f"build reference {comparison.describe()}")
            out = self.work / f"reference-{comparison.reference}-{len(self.known)}"
            cm = api.compile(self.model, comparison.reference, input_shapes=self.shapes, output=out, **comparison.options)
            self.known[key] = list(cm.run(self.sample).values())
        return self.known[key]


def _one_line(exc: Exception) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return text if isinstance(exc, ShiftcError) else f"{type(exc).__name__}: {text}"
