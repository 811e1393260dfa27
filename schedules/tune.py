"""MetaSchedule tuning of a Relax module into a database folder.

The recipe (measured on this machine; docs/SCHEDULES.md):

- tasks come from ``lower.fuse`` (the same lowering builds use, so records match at build time);
- candidates are built by ``build_candidate``, not MetaSchedule's default builder, whose workers
  first import ``tvm.s_tir.tensor_intrin`` (40-60 s) and so hit the 30 s build timeout on every trial;
- every task gets trials (round-robin): an untuned CPU kernel has no fallback in MetaSchedule;
- before searching, each task's default schedule (``schedules.cpu``) is measured and committed, so
  the database never holds anything slower than an untuned build and the search starts from it.

Measurements run on this host (``LocalRunner``) or on boards behind a TVM RPC tracker
(``rpc_runner``); a board joins with ``python -m tvm.exec.rpc_server --tracker=HOST:PORT --key=KEY``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from shiftc.core.errors import InputError

log = logging.getLogger(__name__)


def build_candidate(mod, target, _params=None):
    """MetaSchedule build function: like the default, minus the tensor_intrin import."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def local_builder(max_workers: int | None = None):
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(f_build=build_candidate, max_workers=max_workers, timeout_sec=120.0)


def evaluator_config():
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)


def local_runner():
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.LocalRunner(timeout_sec=60.0, evaluator_config=evaluator_config())


def parse_tracker(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"bad --rpc-tracker {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def rpc_runner(tracker: str, key: str, timeout_sec: float = 60.0):
    """A MetaSchedule ``RPCRunner`` measuring on the devices registered under ``key``."""
    from tvm.s_tir import meta_schedule as ms

    host, port = parse_tracker(tracker)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_timeout_sec=int(timeout_sec))
    try:
        n = config.count_num_servers(allow_missing=False)
    except Exception as exc:  # noqa: BLE001 - tracker unreachable or key unknown
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
        raise InputError(f"RPC tracker {tracker} has no device for key {key!r}: {first}") from None
    log.info("RPC tracker %s: %d device(s) under key %r", tracker, n, key)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator_config(), max_workers=max(1, n))


@dataclass
class TaskResult:
    name: str
    weight: int
    default_ms: float | None = None  # the default CPU schedule, measured by the same runner
    best_ms: float | None = None  # the best record in the database after tuning
    trials: int = 0
    errors: int = 0


@dataclass
class TuneResult:
    db_dir: str
    runner: str
    tasks: list[TaskResult] = field(default_factory=list)
    isa_key: str | None = None  # the target's shipped-database key (``database.target_key``)

    def to_json(self) -> dict:
        return {"db": self.db_dir, "runner": self.runner, "isa_key": self.isa_key, "tasks": [t.__dict__ for t in self.tasks]}


def _progress_callback(results: list[TaskResult], planned: int, progress):
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    from tvm.ir.utils import derived_object

    @derived_object
    class _Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            task = results[task_id]
            for b, r in zip(builder_results, runner_results):
                task.trials += 1
                if b.error_msg is not None or r.error_msg is not None or not r.run_secs:
                    task.errors += 1
                    continue
                ms_ = 1e3 * sum(float(s) for s in r.run_secs) / len(r.run_secs)
                task.best_ms = ms_ if task.best_ms is None else min(task.best_ms, ms_)
            if progress is not None:
                progress(task, sum(t.trials for t in results), planned)

    return _Progress()


def _measure(mods, target, builder, runner) -> list[list[float] | None]:
    """Build and run whole PrimFunc modules once; run_secs per module (None on failure)."""
    from tvm.s_tir import meta_schedule as ms

    built = builder.build([ms.builder.BuilderInput(m, target) for m in mods])
    inputs, where = [], []
    for i, (m, b) in enumerate(zip(mods, built)):
        if b.error_msg is None:
            inputs.append(ms.runner.RunnerInput(b.artifact_path, _device_type(target), ms.arg_info.ArgInfo.from_prim_func(m["main"])))
            where.append(i)
        else:
            log.warning("default schedule failed to build: %s", b.error_msg.strip().splitlines()[-1][:200])
    out: list[list[float] | None] = [None] * len(mods)
    for i, fut in zip(where, runner.run(inputs)):
        res = fut.result()
        if res.error_msg is None and res.run_secs:
            out[i] = [float(s) for s in res.run_secs]
        else:
            log.warning("default schedule failed to run: %s", (res.error_msg or "no result").strip().splitlines()[-1][:200])
    return out


def _device_type(target) -> str:
    return "cpu" if target.kind.name == "llvm" else target.kind.name


def seed_default_schedules(contexts, results, target, builder, runner, database) -> None:
    """Measure each task's default CPU schedule and commit it as a tuning record."""
    from tvm.s_tir import meta_schedule as ms

    from . import cpu

    lanes = cpu.vector_lanes(target)
    schedules, index = [], []
    for i, ctx in enumerate(contexts):
        try:
            sch, _ = cpu.default_schedule(ctx.mod["main"], lanes, target)
        except Exception as exc:  # noqa: BLE001 - no default for this kernel; the search covers it
            log.info("no default schedule for %s: %s", results[i].name, str(exc).splitlines()[0][:120])
            continue
        schedules.append(sch)
        index.append(i)
    secs = _measure([s.mod for s in schedules], target, builder, runner)
    for i, sch, run_secs in zip(index, schedules, secs):
        if run_secs is None:
            continue
        workload = database.commit_workload(contexts[i].mod)
        args = ms.arg_info.ArgInfo.from_prim_func(contexts[i].mod["main"])
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, run_secs, target, args))
        results[i].default_ms = 1e3 * sum(run_secs) / len(run_secs)


def _quiet_meta_schedule_logger() -> None:
    quiet = logging.getLogger("tvm.s_tir.meta_schedule")
    # MetaSchedule's console handler writes to stdout at its logger's level, and its own config
    # leaves that level at DEBUG after a first tune in the process: per-round tables go to its log
    # files only, and stdout stays clean (`shiftc tune --json`)
    quiet.setLevel(logging.WARNING)
    # MetaSchedule re-lists the handlers already on its logger by name when it configures logging;
    # handlers left from an earlier tune in this process (or unnamed ones) break that: start afresh.
    for handler in list(quiet.handlers):
        quiet.removeHandler(handler)
        handler.close()


def extract_tasks(mod, target, lowering=None):
    """The tuning tasks (fused PrimFuncs) of a Relax module for a target, lowered as ``lower.fuse``
    does with ``lowering`` (a ``lower.Lowering``; pass the target's, as a build does)."""
    from tvm.s_tir import meta_schedule as ms

    from .lower import fuse

    return ms.relax_integration.extract_tasks(fuse(mod, target, lowering), target)


def tune(
    mod,
    target,
    trials: int,
    db_dir: str | Path,
    runner=None,
    progress: Callable[[TaskResult, int, int], None] | None = None,
    seed: int = 0,
    population: int = 128,
    lowering=None,
) -> TuneResult:
    """Tune every kernel of the Relax module ``mod`` for ``target`` with about ``trials`` trials in
    total (at least one round per task) and store the records in the database folder ``db_dir``.

    ``progress(task, trials_done, trials_planned)`` is called after every measured batch.
    ``population``: evolutionary-search population (MetaSchedule's default is 512; smaller searches
    cost far less CPU per round, which matters more than search breadth for small budgets).
    ``lowering``: the target's ``lower.Lowering`` (None: ``lower.plain_lowering(target)``), so the
    tasks are the kernels a build of that target looks up."""
    from tvm.s_tir import meta_schedule as ms

    from . import database as dbmod
    from .intrinsics import import_tensor_intrinsics
    from .lower import plain_lowering

    if trials < 1:
        raise InputError(f"--trials must be at least 1, got {trials}")
    db_dir = Path(db_dir)
    import_tensor_intrinsics(target)
    _quiet_meta_schedule_logger()
    lowering = lowering or plain_lowering(target)
    extracted = extract_tasks(mod, target, lowering)
    if not extracted:
        raise InputError("the model has no kernels to tune")
    work_dir = db_dir / "logs"
    work_dir.mkdir(parents=True, exist_ok=True)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted,
        work_dir=str(work_dir),
        strategy=ms.search_strategy.EvolutionarySearch(
            population_size=population, init_min_unmeasured=max(8, population // 8), genetic_num_iters=3
        ),
        num_threads=1,
        seed=seed,
    )
    results = [TaskResult(c.task_name, int(w)) for c, w in zip(contexts, weights)]
    database = dbmod.open_folder(db_dir, create=True)
    builder = local_builder()
    runner_name = "local"
    if runner is None:
        runner = local_runner()
    else:
        runner_name = type(runner).__name__
    if lowering.cpu:
        seed_default_schedules(contexts, results, target, builder, runner, database)
    per_task = max(1, math.ceil(trials / len(contexts)))
    ms.tune.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(work_dir),
        max_trials_global=per_task * len(contexts),
        max_trials_per_task=per_task,
        num_trials_per_iter=min(per_task, 16),
        builder=builder,
        runner=runner,
        database=database,
        measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), _progress_callback(results, per_task * len(contexts), progress)],
        task_scheduler="round-robin",
    )
    for ctx, res in zip(contexts, results):
        top = database.get_top_k(database.commit_workload(ctx.mod), 1)
        if top:
            res.best_ms = 1e3 * sum(float(s) for s in top[0].run_secs) / len(top[0].run_secs)
    return TuneResult(str(db_dir), runner_name, results, dbmod.target_key(target))
