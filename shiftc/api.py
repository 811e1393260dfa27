"""The Python API: ``compile()``, ``load()`` and ``CompiledModel``.

Nothing here prints; progress goes to ``logging`` and an optional ``progress(step)`` callback.
The frontend and the pass pipeline (ONNX, the Relax importer) are imported by the functions that
compile, so ``load`` and ``CompiledModel.run`` need only the target's runtime.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from . import __version__, artifact, calibration_data
from .core.errors import InputError
from .core import thread_pool
from .core.paths import check_output_folder
from .core.tensor_spec import TensorSpec
from .core.report import Report

log = logging.getLogger(__name__)


class CompiledModel:
    """A verified artifact folder, loaded and ready to run.

    ``threads``: TVM's CPU threads (``TVM_NUM_THREADS``); unset, shiftc's default applies (the
    physical cores this process may use) unless ``TVM_NUM_THREADS`` / ``OMP_NUM_THREADS`` is set.
    TVM's pool settings are process-wide environment variables, read when the pool starts:
    loading applies shiftc's defaults (``core.thread_pool``; docs/BENCHMARKS.md) to those unset."""

    def __init__(self, path: Path, meta: dict, owns_folder: bool = False, threads: int | None = None):
        from shiftc import targets

        thread_pool.configure(threads)  # before the target's runtime starts TVM's pool
        self.path = Path(path)
        self.meta = meta
        self.inputs = [TensorSpec.from_json(d) for d in meta["inputs"]]
        self.outputs = [TensorSpec.from_json(d) for d in meta["outputs"]]
        self.report = Report.from_json(meta.get("report", {}))
        self.target = targets.from_description(meta["target"])
        # a target that cannot run on every build host (cuda) opens its session on first run
        self._session = self.target.load(self.path, meta) if self.target.load_on_open else None
        if owns_folder:
            weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def run(self, *args: np.ndarray, allow_nonfinite: bool = False, **kwargs: np.ndarray) -> dict[str, np.ndarray]:
        """Run on positional arrays, one dict, or keyword arrays; returns outputs by name.

        Inputs holding NaN or Inf are refused (InputError) unless ``allow_nonfinite``: the integer
        kernels would turn them into confident-looking finite outputs."""
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            kwargs, args = dict(args[0]), ()
        arrays = self._order_inputs(args, kwargs)
        if not allow_nonfinite:
            for spec, x in zip(self.inputs, arrays):
                bad = calibration_data.nonfinite_count(x)
                if bad:
                    raise InputError(f"input {spec.name!r} holds {bad} NaN/Inf value(s); pass allow_nonfinite=True "
                                     "(shiftc run --allow-nonfinite) to run it anyway")
        if self._session is None:
            self._session = self.target.load(self.path, self.meta)
        outs = self._session.run(arrays)
        return {spec.name: out for spec, out in zip(self.outputs, outs)}

    def _order_inputs(self, args: Sequence, kwargs: Mapping) -> list[np.ndarray]:
        if args and kwargs:
            raise InputError("pass inputs either positionally or by name, not both")
        if kwargs:
            unknown = set(kwargs) - {s.name for s in self.inputs}
            missing = [s.name for s in self.inputs if s.name not in kwargs]
            if unknown or missing:
                raise InputError(f"inputs do not match the model: missing {missing}, unknown {sorted(unknown)}; expected {[s.name for s in self.inputs]}")
            args = [kwargs[s.name] for s in self.inputs]
        if len(args) != len(self.inputs):
            raise InputError(f"the model takes {len(self.inputs)} input(s) {[s.name for s in self.inputs]}, got {len(args)}")
        checked = []
        for spec, x in zip(self.inputs, args):
            x = np.asarray(x)
            if tuple(x.shape) != tuple(spec.shape) or str(x.dtype) != spec.dtype:
                raise InputError(
                    f"input {spec.name!r} expects {spec.dtype}{list(spec.shape)}, got {x.dtype}{list(x.shape)}"
                )
            checked.append(x)
        return checked

    def save(self, path: str | Path) -> Path:
        """Copy the artifact to ``path`` (atomically); returns the path."""
        path = Path(path)
        if path.absolute() != self.path.absolute():
            artifact.copy(self.path, path)
        return path


def load(path: str | Path, expect: str | None = None, public_key=None, threads: int | None = None) -> CompiledModel:
    """Open an artifact folder; every file's sha256 is checked before any code is loaded and, with
    ``expect`` (an artifact id: ``shiftc.artifact.artifact_id``), that it is exactly that artifact;
    with ``public_key`` (Ed25519 PEM file, PEM bytes or key object; needs ``shiftc[sign]``), that
    its ``meta.json.sig`` is that key's signature of the artifact id (``shiftc sign``).
    ``threads``: TVM's CPU threads for this process (``CompiledModel``; default: the physical
    cores this process may use, or ``TVM_NUM_THREADS`` / ``OMP_NUM_THREADS`` when set)."""
    if threads is not None and threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    meta = artifact.verify(Path(path), expect=expect, public_key=public_key)
    return CompiledModel(Path(path), meta, threads=threads)


def _holding_output_lock(fn):
    """Hold ``output``'s writer lock (``artifact.writer_lock``) for the whole compile and publish,
    so a second concurrent compile to the same folder fails at once instead of one result being lost."""

    @functools.wraps(fn)
    def wrapper(*args, output=None, **kwargs):
        if output is None:
            return fn(*args, **kwargs)
        check_output_folder(output, "artifact folder")  # a clear cause before the lock file is tried
        with artifact.writer_lock(Path(output)):
            return fn(*args, output=output, **kwargs)

    return wrapper


@_holding_output_lock
def compile(  # noqa: A001 - the public name users expect
    model,
    target: str = "x86",
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: str | Path | Iterable[Mapping[str, np.ndarray]] | None = None,
    output: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    db: str | Path | None = None,
    **options,
) -> CompiledModel:
    """Compile an ONNX model (path or ``onnx.ModelProto``) for ``target``.

    ``options`` holds target options (e.g. ``cpu``; each target's ``option_specs``) and pass options (see ``pipeline.PassOptions``).
    With ``output`` the artifact is written there; otherwise it lives in a temporary folder until
    ``save()`` is called. ``db`` is a tuning-database folder (``shiftc tune``); without it the
    database shipped for the target is used when one matches.
    """
    from shiftc.schedules import ScheduleReport

    from . import pipeline

    step = progress or (lambda s: None)
    tgt, loaded, mod, report, timings, pass_options = _through_passes(model, target, input_shapes, calibration, step, options)

    step("build")
    t0 = time.perf_counter()
    sched = ScheduleReport()
    executable = pipeline.build(mod, tgt, db=db, report=sched)
    timings["build"] = time.perf_counter() - t0
    sr = report.stage("schedule")
    sr.summary = sched.to_json()
    sr.notes = list(sched.notes)

    sources = _sources(model, calibration, db)
    report.model = sources["model"]["name"]
    if isinstance(calibration, (str, Path)):
        report.calibration = sources["calibration"]["name"]
    meta = {
        "shiftc_version": __version__,
        "tvm_version": _tvm_version(),
        "target": tgt.describe(),
        "inputs": [s.to_json() for s in loaded.inputs],
        "outputs": [s.to_json() for s in loaded.outputs],
        "options": pass_options.to_json(),
        "sources": sources,
        "report": report.to_dict(),
    }
    dest = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="shiftc-")) / "artifact"
    step("export")
    with artifact.staging(dest, locked=output is not None) as tmp:  # compile() holds output's lock
        tgt.build(executable, tmp)
        report.sizes = _sizes(model, loaded, tmp)
        meta["report"] = report.to_dict()
        artifact.write_meta(tmp, meta)
    model_out = CompiledModel(dest, artifact.verify(dest), owns_folder=output is None)
    model_out.timings_s = timings
    if output is None:
        # the temporary parent goes too
        weakref.finalize(model_out, shutil.rmtree, str(dest.parent), True)
    log.info("compiled for %s in %.1fs", target, sum(timings.values()))
    return model_out


def _sizes(model, loaded, folder: Path) -> dict:
    """The FP32 ONNX model's size (the .onnx file; a ModelProto: its serialised size) and the
    compiled files' (the artifact without its meta.json), in bytes."""
    onnx_bytes = Path(model).stat().st_size if isinstance(model, (str, Path)) else getattr(model, "ByteSize", loaded.proto.ByteSize)()
    files = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return {"onnx_model_bytes": onnx_bytes, "artifact_files_bytes": files}


def _through_passes(model, target, input_shapes, calibration, step, options: dict):
    """Target, loaded model, the Relax module after the pass pipeline and the target's own lowering
    (``Target.lower``), report, timings, pass options: what compile, tune and prepare all start from."""
    from shiftc import targets

    from . import frontend, pipeline

    timings: dict[str, float] = {}
    own = targets.target_class(target).option_names()
    tgt = targets.get(target, **{k: options.pop(k) for k in list(options) if k in own})
    foreign = sorted(set(options) & set(targets.option_specs()))
    if foreign:
        raise InputError(f"target {target!r} does not take option(s) {foreign}; its options: {sorted(own)}")
    for key, value in tgt.required_options().items():
        if options.get(key, value) != value:
            raise InputError(f"target {target!r} needs {key}={value!r}; got {key}={options[key]!r}")
        options[key] = value
    pass_options = pipeline.PassOptions.from_kwargs(options)
    tgt.require_tools()

    t0 = time.perf_counter()
    step("load")
    loaded = frontend.load(model, {k: tuple(v) for k, v in (input_shapes or {}).items()})
    mod = frontend.to_relax(loaded)
    timings["frontend"] = time.perf_counter() - t0

    report = Report(model=str(model) if isinstance(model, (str, Path)) else "<ModelProto>")
    report.stage("simplify").summary = dict(loaded.simplified)
    samples, report.calibration = _samples(calibration, loaded)
    mod = pipeline.run(mod, loaded, pass_options, samples, report, step, timings)
    t0 = time.perf_counter()
    mod = tgt.lower(mod, report)
    timings["lower"] = time.perf_counter() - t0
    return tgt, loaded, mod, report, timings, pass_options


def tune(
    model,
    target: str = "x86",
    *,
    trials: int,
    db: str | Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: str | Path | Iterable[Mapping[str, np.ndarray]] | None = None,
    runner=None,
    progress: Callable | None = None,
    **options,
):
    """Tune the kernels ``compile`` would build for the same model, target and pass options
    (shift, integer-only, ...) into the database folder ``db``; returns ``schedules.tune.TuneResult``."""
    from shiftc.schedules import tune as tuning

    tgt, _, mod, *_ = _through_passes(model, target, input_shapes, calibration, lambda s: None, options)
    return tuning.tune(mod, tgt.tvm_target(), trials, db, runner=runner, progress=progress, lowering=tgt.lowering())


def prepare(
    model,
    target: str = "x86",
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: str | Path | Iterable[Mapping[str, np.ndarray]] | None = None,
    db: str | Path | None = None,
    **options,
) -> pipeline.Prepared:
    """What ``compile`` builds for the same arguments, scheduled but not compiled: a
    ``pipeline.Prepared`` (its ``finished()`` module holds every kernel of the executable, its
    ``report`` the passes' report), for checks of the build such as the integer-only float scan."""
    from shiftc.schedules import ScheduleReport

    from . import pipeline

    tgt, _, mod, report, *_ = _through_passes(model, target, input_shapes, calibration, lambda s: None, options)
    prepared = pipeline.prepare(mod, tgt, db=db, report=ScheduleReport())
    prepared.report = report
    return prepared


def _samples(calibration, loaded) -> tuple[list, str]:
    """Calibration samples from a path, an iterable of input dicts, or synthetic stand-ins."""
    if calibration is None:
        return calibration_data.synthetic(loaded.inputs), "synthetic N(0,1) inputs (no calibration data given)"
    if isinstance(calibration, (str, Path)):
        return calibration_data.load(calibration, loaded.inputs), str(calibration)
    samples = [calibration_data.from_arrays(dict(s), loaded.inputs)[0] for s in calibration]
    if not samples:
        raise InputError("calibration data is empty")
    return samples, f"{len(samples)} samples given through the API"


def _sources(model, calibration, db) -> dict:
    """What the compile read, for meta.json: base names and sha256 digests of the model file, the
    calibration file or folder and the ``--db`` records -- never paths or times, so the same inputs
    compiled from another folder give the same artifact bytes. Samples passed as arrays through the
    API are recorded as such (the report counts them); no calibration data: None."""
    from shiftc.schedules import database

    if isinstance(model, (str, Path)):
        m = {"name": Path(model).name, "sha256": artifact.sha256(Path(model))}
    else:
        m = {"name": "<ModelProto>", "sha256": hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()}
    if isinstance(calibration, (str, Path)):
        cal = {"name": Path(calibration).resolve().name, "sha256": _calibration_digest(Path(calibration))}
    else:
        cal = None if calibration is None else {"name": "<arrays>"}
    dbs = None if db is None else {"name": Path(db).resolve().name, "sha256": database.records_digest(db)}
    return {"model": m, "calibration": cal, "database": dbs}


def _calibration_digest(path: Path) -> str:
    """sha256 of a calibration .npz/.npy file; for a folder, over the names and digests of the
    .npy/.npz files in it (the ones ``calibration_data.load`` reads), in name order."""
    if not path.is_dir():
        return artifact.sha256(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
    lines = "".join(f"{p.name} {artifact.sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _tvm_version() -> str:
    import tvm

    return tvm.__version__
