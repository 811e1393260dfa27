"""Tune the benchmark models and write the databases shiftc ships (not run in CI).

    python benchmarks/tune_models.py --cpu cascadelake --cpu x86-64-v3 --rounds 1   # keys x86-64-v4-vnni, x86-64-v3
    python benchmarks/tune_models.py --model mobilenetv2=path.onnx --cpu x86-64-v3

For every model and CPU it runs ``shiftc.schedules.tune`` (default schedules measured and seeded
first, then ``--rounds`` trials per kernel) and copies the two database files into
``schedules/databases/<key>/<model>/``, where ``key`` is the CPU's ISA level
(``shiftc.schedules.database.target_key``: ``x86-64-v4-vnni``, ``x86-64-v4``, ``x86-64-v3``, ...);
builds for every CPU with that level find them, and CPUs of higher levels fall back to them. Tune with the
level's own LLVM CPU (``--cpu x86-64-v3``, ...) so the schedules fit every CPU of the key; records
with tensor intrinsics outside the key are refused. Budgets are kept
small on purpose: the build machine has 2 shared cores. The per-kernel table (default vs tuned ms)
is written next to the database as ``tuning.json``.

The models are compiled through the same frontend + pass pipeline as ``shiftc compile`` with
default options, so the fused kernels (and their structural hashes) are the ones a build looks up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import find_models, model_for_batch, shift_variants  # noqa: E402


def relax_module(path: Path, shapes: dict, options: dict | None = None):
    """The Relax module ``shiftc.compile`` hands to ``build`` with these pass options (synthetic
    calibration: integer kernels' tuning keys do not depend on the calibration data)."""
    from shiftc import calibration_data, frontend, pipeline
    from shiftc.core.report import Report

    loaded = frontend.load(str(path), shapes)
    mod = frontend.to_relax(loaded)
    samples = calibration_data.synthetic(loaded.inputs)
    return pipeline.run(mod, loaded, pipeline.PassOptions(**(options or {})), samples, Report(), lambda s: None, {})


def main(argv=None) -> int:
    from shiftc import targets

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH.onnx")
    ap.add_argument("--all", action="store_true", help="with --model: also the models found in examples/")
    ap.add_argument("--cpu", action="append", default=None, help="LLVM CPU (repeatable; default: x86-64-v3 and this host's)")
    ap.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1])
    ap.add_argument("--rounds", type=int, default=1, help="search trials per kernel after the seeded default")
    ap.add_argument("--only", default=None, help="comma-separated model names to tune")
    variants = {"fp32": {}, **shift_variants()}
    ap.add_argument("--variant", action="append", default=None, choices=sorted(variants),
                    help="pass options to tune for, as in benchmarks/run.py (repeatable; default fp32)")
    args = ap.parse_args(argv)
    cpus = args.cpu or ["x86-64-v3", targets.get("x86").cpu]

    for spec in find_models(args):
        if args.only and spec.name not in args.only.split(","):
            continue
        for batch in args.batches:
            path, shapes = model_for_batch(spec, batch)
            if path is None:
                print(f"{spec.name} b{batch}: skipped ({shapes})")
                continue
            for variant in args.variant or ["fp32"]:
                name = spec.name if batch == 1 else f"{spec.name}-b{batch}"
                name = name if variant == "fp32" else f"{name}-{variant}"
                _tune(relax_module(path, shapes, variants[variant]), name, cpus, args.rounds)
    return 0


def _tune(mod, name: str, cpus: list[str], rounds: int) -> None:
    """Tune ``mod`` for each CPU and write ``schedules/databases/<ISA key>/<name>/``."""
    from shiftc import targets
    from shiftc.schedules import database, tune

    for cpu in cpus:
        x86 = targets.get("x86", cpu=cpu)
        target, lowering = x86.tvm_target(), x86.lowering()  # the kernels an x86 build looks up
        key = database.target_key(target)
        if database.level(key) is None:
            raise SystemExit(f"--cpu {cpu}: no ISA key ({key}); shipped databases need one of {[lv.key for lv in database.LEVELS]}")
        dest = database.SHIPPED / key / name
        with tempfile.TemporaryDirectory(prefix="shiftc-tune-") as tmp:
            t0 = time.time()
            n_tasks = len(tune.extract_tasks(mod, target, lowering))
            result = tune.tune(mod, target, rounds * n_tasks, Path(tmp) / "db", lowering=lowering)
            bad = database.check_records(Path(tmp) / "db", database.level(key).features)
            if bad:  # a lower key's CPUs could not replay these (see database's docstring)
                raise SystemExit(f"{name} [{cpu}]: records use {bad}, beyond key {key}; not written")
            dest.mkdir(parents=True, exist_ok=True)
            for f in (database.WORKLOAD, database.RECORDS):
                shutil.copy(Path(tmp) / "db" / f, dest / f)
        summary = result.to_json()
        summary.update(model=name, cpu=cpu, key=key, seconds=round(time.time() - t0, 1), rounds=rounds)
        summary.pop("db")
        (dest / "tuning.json").write_text(json.dumps(summary, indent=1) + "\n")
        default = sum(t.default_ms or 0 for t in result.tasks)
        best = sum(t.best_ms or 0 for t in result.tasks)
        print(f"{name} [{cpu}]: {n_tasks} kernels, sum default {default:.2f} ms -> tuned {best:.2f} ms ({time.time() - t0:.0f}s) -> {dest}")

if __name__ == "__main__":
    sys.exit(main())
