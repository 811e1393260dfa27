"""The ``shiftc`` command line (click + rich).

Exit codes: 0 ok, 1 internal error, 2 usage or bad input, 3 unsupported model, 4 missing toolchain,
5 a check failed (``shiftc matrix``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from .core import report_text
from .core.errors import EXIT_CODES, CheckFailedError, InputError, ShiftcError
from .core.units import human_bytes, human_seconds

out = Console()
err = Console(stderr=True)
# True in shiftc's own process (the console script, ``python -m shiftc.cli``; ``program``), False when
# the commands run inside another program's process (click's CliRunner, an embedding application).
_OWN_PROCESS = False


JSON_SCHEMA_VERSION = 1  # of every --json document (docs/schema/<command>.schema.json; docs/json.md)


def _json(doc: dict) -> str:
    """A --json document: ``schema_version`` first, then the command's fields."""
    return json.dumps({"schema_version": JSON_SCHEMA_VERSION, **doc}, indent=2)


def _fail(code: int, message: str):
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def handle_errors(fn):
    """Turn shiftc errors into one line and an exit code; anything else is an internal error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except ShiftcError as exc:
            if debug:
                raise
            _fail(exc.exit_code, str(exc))
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug: still one line unless --debug
            if debug:
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            _fail(1, f"internal error ({type(exc).__name__}: {first}); rerun with --debug for the trace")

    return wrapper


def _silence_native_stderr():
    """Point file descriptor 2 at /dev/null, so C++ log lines from TVM (``LOG(WARNING)`` goes straight
    to std::cerr; TVM 0.27 has no level setting) never add a line to shiftc's one-line errors.
    Python's ``sys.stderr`` keeps the real stderr through a duplicate descriptor. Returns the undo,
    which only an in-process caller (click's CliRunner, whose stderr is not fd 2) needs: a real
    process keeps fd 2 silenced to its exit, when the TVM objects that an error's trace kept alive
    are destroyed (and warn). No gc.collect() here: it costs 0.2 s a call in a process holding TVM."""
    try:
        sys.stderr.flush()
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    saved = os.dup(2)
    if real:
        sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding, errors=sys.stderr.errors)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)

    def restore():
        os.dup2(saved, 2)
        os.close(saved)

    return None if real else restore


def _progress(enabled: bool):
    """A rich status line for long steps (on stderr, so --json output stays clean)."""
    if not enabled:
        return None, lambda s: None
    status = err.status("starting")
    return status, lambda s: status.update(f"[bold]{s}[/] ...")


class OneLineErrorGroup(click.Group):
    """click's own usage errors (unknown option, bad value, missing argument) as one ``error:`` line
    with exit 2, like shiftc's, instead of click's three (usage, hint, error)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:  # click >= 8.2  # bare `shiftc`: the help, as click prints it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(exc.exit_code, exc.format_message() + hint)
        except click.ClickException as exc:
            _fail(exc.exit_code, exc.format_message())
        except click.exceptions.Abort:
            _fail(1, "aborted")
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full Python/TVM traces instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.version_option(package_name="shiftc")
@click.pass_context
def main(ctx, debug: bool, verbose: bool):
    """shiftc: compile ONNX models into shift/add and integer-only kernels with Apache TVM."""
    if not (debug or verbose):
        undo = _silence_native_stderr()
        if undo:
            ctx.call_on_close(undo)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    if ctx.invoked_subcommand == "compile":  # before its target options import TVM
        _import_tvm_without_torch()


def pass_option_flags(fn):
    """Add one ``--flag`` per ``PassOptions`` field (fields declare their help and click type)."""
    import dataclasses

    from .core.options import PassOptions

    for f in reversed(dataclasses.fields(PassOptions)):
        flag = f.metadata.get("cli") or "--" + f.name.replace("_", "-")
        kwargs = {}
        if f.metadata.get("choices"):
            kwargs["type"] = click.Choice(f.metadata["choices"])
        elif f.metadata.get("type"):
            kwargs["type"] = f.metadata["type"]
        if isinstance(f.default, bool):
            kwargs.setdefault("is_flag", True)
        fn = click.option(flag, f.name, default=f.default, show_default=True, help=f.metadata.get("help"), **kwargs)(fn)
    return fn


class TargetOptionsCommand(click.Command):
    """A command that also takes every registered target's options (``--cpu``, ``--arch``, ``--nbuf``,
    ...: each target's ``option_specs``). They are built from ``targets.REGISTRY`` when the command
    parses its arguments or prints its help, so a target registered later brings its own."""

    def get_params(self, ctx):
        params = super().get_params(ctx)  # self.params, then --help
        key = f"shiftc.target_options.{self.name}"
        if key not in ctx.meta:
            ctx.meta[key] = target_option_flags(self.params)
        return [*params[: len(self.params)], *ctx.meta[key], *params[len(self.params) :]]


METAVARS = {str: "TEXT", int: "INTEGER", float: "FLOAT"}


def target_option_flags(taken) -> list[click.Option]:
    """One ``--flag`` per target option name; its help lists what each declaring target means by it.
    Values stay text here: the chosen target converts and checks them (``targets.parse_options``)."""
    from . import targets

    own = {n for p in taken for n in (p.name, *p.opts)}
    flags = []
    for name, declared in targets.option_specs().items():
        flag = declared[0][1].flag
        if name in own or flag in own:
            raise click.ClickException(f"target option {flag} of {declared[0][0]!r} clashes with a shiftc option")
        by_help: dict[str, list[str]] = {}
        for tgt, spec in declared:
            by_help.setdefault(spec.describe(), []).append(tgt)
        text = ". ".join(f"{', '.join(tgts)}: {h}" for h, tgts in by_help.items())
        types = {METAVARS.get(spec.type, "VALUE") for _, spec in declared}
        metavar = types.pop() if len(types) == 1 else "VALUE"
        flags.append(click.Option([flag, name], default=None, metavar=metavar, help=f"Target option. {text}."))
    return flags


def pop_target_flags(kwargs: dict) -> dict[str, str]:
    """Take the target options out of a command's keyword arguments; the ones given, as text."""
    from . import targets

    given = {name: kwargs.pop(name, None) for name in targets.option_specs()}
    return {k: v for k, v in given.items() if v is not None}


@main.command("compile", cls=TargetOptionsCommand)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-t", "--target", default="x86", show_default=True, help="Target name (see `shiftc targets`).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Artifact folder to write.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DxDx..", help="Pin an input's dynamic dims.")
@click.option("--calibrate", type=click.Path(path_type=Path), help="Calibration samples: .npz or a folder of .npy/.npz.")
@click.option("--db", type=click.Path(path_type=Path), default=None, help="Tuning database folder from `shiftc tune` (default: the one shipped for the target, if any).")
@pass_option_flags
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the HTML report (as `shiftc report`) to this file.")
@click.option("-v", "--verbose", "verbose", is_flag=True, help="Show every report column, summary field and note.")
@handle_errors
def compile_cmd(model, target, output, input_shapes, calibrate, db, as_json, report_file, verbose, **pass_options):
    """Compile MODEL (ONNX) for a target into an artifact folder.

    Target options (--cpu, --arch, --nbuf, ...) apply to the targets that declare them."""
    from . import api, frontend, targets
    from .artifact import artifact_id

    target_options = targets.parse_options(target, pop_target_flags(pass_options))
    shapes = dict(frontend.parse_shape(s) for s in input_shapes)
    # only the flags the user gave: a target may require options (see Target.required_options)
    ctx = click.get_current_context()
    pass_options = {k: v for k, v in pass_options.items() if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    status, step = _progress(not as_json and err.is_terminal)
    if status:
        status.start()
    try:
        cm = api.compile(
            model, target, input_shapes=shapes, calibration=calibrate, output=output, progress=step, db=db,
            **target_options, **pass_options,
        )
    finally:
        if status:
            status.stop()
    result = {
        "artifact": str(output),
        "target": cm.meta["target"],
        "inputs": cm.meta["inputs"],
        "outputs": cm.meta["outputs"],
        "files": cm.meta["files"],
        "report": cm.meta["report"],
        "timings_s": cm.timings_s,
        "artifact_id": artifact_id(output),
    }
    if report_file:
        from . import html_report

        result["report_html"] = str(html_report.write(output, report_file))
    if as_json:
        click.echo(_json(result))
        return
    _print_compiled(model, output, cm, result["artifact_id"], _verbose(verbose))


def _verbose(flag: bool) -> bool:
    """A command's own -v, or the group's (``shiftc -v compile ...``)."""
    return flag or click.get_current_context().find_root().params.get("verbose", False)


def _table(*columns: str, numeric=()) -> Table:
    """A table that fits 80 columns: no vertical rules, numbers right-aligned, cells on one line."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for c in columns:
        table.add_column(c, justify="right" if c in numeric else "left", no_wrap=True, overflow="ellipsis", min_width=len(c))
    return table


def _show(title: str, table: Table, below=()) -> None:
    """A table under its title (a line of its own, so a long title wraps instead of the table), then notes."""
    out.print(f"[bold]{escape(title)}[/]", highlight=False)
    out.print(table, highlight=False)
    for line in below:
        out.print(Padding(escape(line), (0, 0, 0, 2), expand=False), highlight=False)


def _print_compiled(model, output, cm, artifact_id: str, verbose: bool) -> None:
    """What compile built: artifact, inputs/outputs, each stage's per-layer table, then what every stage did."""
    size = sum((output / f).stat().st_size for f in cm.meta["files"])
    out.print(f"[green]compiled[/] {escape(str(model))} -> {escape(str(output))}", highlight=False)
    out.print(f"  target {cm.target.name}, {human_bytes(size)}, built in {human_seconds(sum(cm.timings_s.values()))}", highlight=False)
    out.print(f"  artifact id {artifact_id}", soft_wrap=True)
    for spec in cm.inputs:
        out.print(f"  input  {spec.name}: {spec.dtype}{list(spec.shape)}", highlight=False)
    for spec in cm.outputs:
        out.print(f"  output {spec.name}: {spec.dtype}{list(spec.shape)}", highlight=False)
    for stage in cm.report.stages:
        if stage.rows:
            _print_rows(stage, verbose)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for stage in cm.report.stages:
        for i, line in enumerate(report_text.describe(stage, verbose)):
            grid.add_row(stage.name if i == 0 else "", escape(line))
    out.print(grid, highlight=False)
    if any(stage.lossy for stage in cm.report.stages):
        synthetic = cm.report.calibration.startswith("synthetic")
        style = "[bold yellow]" if synthetic else ""
        out.print(f"{style}calibration / error measurement data: {escape(cm.report.calibration)}" + (" -- pass --calibrate with real inputs" if synthetic else ""))


def _print_rows(stage, verbose: bool) -> None:
    """A stage's per-layer rows as a table, the columns that hold one value for all as lines under it."""
    headers, cells, below, numeric = report_text.row_table(stage.name, stage.rows, verbose)
    table = _table(*headers, numeric=numeric)
    for r in cells:
        table.add_row(*(escape(c) for c in r))
    _show(f"{stage.name}: {len(stage.rows)} {report_text.ROW_UNITS.get(stage.name, 'layers')}", table, below)


@main.command("run")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("-i", "--input", "input_path", required=True, type=click.Path(path_type=Path), help=".npy (one input) or .npz keyed by input name.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), help="Write outputs to this .npz.")
@click.option("--expect", metavar="ID", help="Refuse the artifact unless its id (sha256 of meta.json, printed by compile) is ID.")
@click.option("--allow-nonfinite", is_flag=True, help="Run inputs that hold NaN or Inf (refused by default).")
@click.option("--threads", type=click.IntRange(1), default=None, help="TVM runtime threads (sets TVM_NUM_THREADS; default: "
              "TVM_NUM_THREADS or OMP_NUM_THREADS if set, else the physical cores this process may use; docs/BENCHMARKS.md).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@handle_errors
def run_cmd(artifact, input_path, output_path, expect, allow_nonfinite, threads, as_json):
    """Run a compiled ARTIFACT on inputs from a file."""
    import numpy as np

    _import_tvm_for_run(artifact)
    from . import api, calibration_data
    from .core.paths import check_output_file

    if output_path:
        check_output_file(output_path, "--output")
    cm = api.load(artifact, expect=expect, threads=threads)
    outs = cm.run(calibration_data.read_arrays(input_path, cm.inputs), allow_nonfinite=allow_nonfinite)
    if output_path:
        try:
            np.savez(output_path, **outs)
        except OSError as exc:
            raise InputError(f"cannot write --output {output_path}: {exc.strerror or exc}") from None
    summary = {
        name: {
            "shape": list(v.shape),
            "dtype": str(v.dtype),
            "min": float(v.min()),
            "max": float(v.max()),
            "argmax": int(np.argmax(v.reshape(v.shape[0], -1)[0])) if v.size else None,
        }
        for name, v in outs.items()
    }
    if as_json:
        click.echo(_json({"artifact": str(artifact), "outputs": summary}))
        return
    for name, s in summary.items():
        out.print(f"{name}: {s['dtype']}{s['shape']} min {s['min']:.4g} max {s['max']:.4g} argmax[0] {s['argmax']}")
    if output_path:
        out.print(f"wrote {output_path}")


@main.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="ARTIFACT...")
@click.option("--against", multiple=True, type=click.Choice(["onnxruntime"]), help="Also time onnxruntime FP32 (and int8 with --calibrate) on the source model, same shapes.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), help="The artifacts' source ONNX model (for --against: an artifact keeps only its sha256).")
@click.option("--calibrate", type=click.Path(path_type=Path), help="Calibration samples for onnxruntime int8 (.npz or folder, as for compile); without them int8 is skipped.")
@click.option("-i", "--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), help="Time on these inputs (.npy/.npz, as for run; default: synthetic N(0,1)).")
@click.option("--batch", "batch_list", metavar="B[,B...]", help="Batch sizes to time; each needs an ARTIFACT compiled for it (default: every ARTIFACT's batch).")
@click.option("--threads", type=click.IntRange(1), default=None, help="Threads of every runtime: TVM_NUM_THREADS, onnxruntime intra-op threads [default: the physical cores this process may use, shiftc's and onnxruntime's default].")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True, help="Rounds: each variant runs once per round, in a fresh process, the order rotated.")
@click.option("--calls", type=click.IntRange(1), default=50, show_default=True, help="Timed calls per variant per round.")
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True, help="Untimed calls before them.")
@click.option("--busy-core", is_flag=True, help="Keep one core busy (a pinned busy-loop process) during the timed calls.")
@click.option("--json", "as_json", is_flag=True, help="Print the results, machine, versions and git revision as JSON.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write that JSON to this file.")
@handle_errors
def bench_cmd(artifacts, against, onnx_path, calibrate, input_path, batch_list, threads, repeats, calls, warmup, busy_core, as_json, json_out):
    """Latency (median, p90), throughput and peak RSS of ARTIFACT(s), each at the batch it was
    compiled for, every variant in its own process (docs/BENCHMARKS.md)."""
    import tempfile

    from . import bench
    from .bench import variants
    from .core import thread_pool
    from .core.paths import check_output_file

    if json_out:
        check_output_file(json_out, "--json-out")
    batches = _int_list(batch_list, "--batch") if batch_list else None
    threads = threads or thread_pool.physical_cores()
    settings = {"threads": threads, "rounds": repeats, "calls": calls, "warmup": warmup, "busy_core": busy_core}
    status, step = _progress(not as_json and err.is_terminal)
    if status:
        status.start()
    try:
        with tempfile.TemporaryDirectory(prefix="shiftc-bench-") as tmp:
            groups, notes = variants.artifact_variants(list(artifacts), Path(tmp), batches=batches, against=against,
                                                       onnx=onnx_path, calibrate=calibrate, inputs=input_path)
            rows = [row for group in groups.values() for row in bench.run_rounds(
                group, threads=threads, rounds=repeats, calls=calls, warmup=warmup, busy=busy_core, progress=step)]
    finally:
        if status:
            status.stop()
    doc = bench.document(rows, settings, notes)
    if json_out:
        json_out.write_text(_json(doc) + "\n")
    if as_json:
        click.echo(_json(doc))
    else:
        _print_bench(doc)
    if any(r["error"] for r in rows):
        raise CheckFailedError("a variant failed: " + next(f"{r['name']}: {r['error']}" for r in rows if r["error"]))


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{flag} takes comma-separated numbers of at least 1, got {text!r}")
    return values


def _print_bench(doc: dict) -> None:
    s, cpu = doc["settings"], doc["machine"]["cpu"]
    numbers = ("batch", "median", "p90", "x ORT", "per s", "peak RSS", "max |d|")
    table = _table("batch", "variant", *numbers[1:], numeric=numbers)
    table.collapse_padding = True  # eight columns: two blanks between them
    for r in doc["results"]:
        base = next((b.get("median_ms") for b in doc["results"] if b["name"] == "onnxruntime fp32" and b["batch"] == r["batch"]), None)
        ratio = r["median_ms"] / base if base and r.get("median_ms") else None
        ms = lambda v: human_seconds(None if v is None else v / 1e3)  # noqa: E731
        table.add_row(str(r["batch"]), escape(report_text.short_name(r["name"], 18)), ms(r.get("median_ms")), ms(r.get("p90_ms")),
                      "-" if ratio is None else f"{ratio:.2f}", "-" if r.get("throughput_per_s") is None else f"{r['throughput_per_s']:.0f}",
                      human_bytes(None if r.get("peak_rss_mb") is None else r["peak_rss_mb"] * 1e6),
                      "-" if r["max_abs_diff_vs_first"] is None else f"{r['max_abs_diff_vs_first']:.1e}")
    below = []
    for r in doc["results"]:
        if r["error"] or r["note"]:
            below.append(f"{r['name']} (batch {r['batch']}): " + (f"failed: {r['error']}" if r["error"] else r["note"]))
    _show(f"shiftc bench: {s['threads']} thread(s), {s['rounds']} rounds x {s['calls']} calls"
          + (", one core busy" if s["busy_core"] else ""), table, below)
    isa = ", ".join(cpu["isa"]) if cpu["isa"] is not None else "ISA flags unknown"
    out.print(f"CPU {cpu['model']} (LLVM {cpu['llvm_cpu']}; {isa}). per s: samples per second at the median; "
              "max |d|: max |difference| from the batch's first row.", highlight=False)
    for note in doc["notes"]:
        out.print(f"note: {escape(note)}", highlight=False)


def _import_tvm_for_run(artifact: Path):
    """In shiftc's own process, import TVM with only what running ARTIFACT needs: torch hidden
    (``_import_tvm_without_torch``) and, when the artifact's target runs on TVM's runtime alone
    (``Target.loads_on_tvm_runtime``), without TVM's compiler library (``TVM_USE_RUNTIME_LIB=1``)."""
    if not _OWN_PROCESS or "tvm" in sys.modules or "torch" in sys.modules:
        return
    from . import targets
    from .artifact import read_meta

    try:
        runtime_only = targets.target_class(read_meta(artifact)["target"]["name"]).loads_on_tvm_runtime
    except (ShiftcError, KeyError, TypeError):
        runtime_only = False  # not a loadable artifact: api.load gives the cause
    _import_tvm_without_torch(runtime_only)


def _import_tvm_without_torch(runtime_only: bool = False):
    """In shiftc's own process, import TVM with torch hidden: tvm_ffi imports it, when installed, only
    for optional interop with torch tensors (every use guarded by ImportError; shiftc hands TVM
    NumPy arrays only), and the import costs seconds. ``runtime_only``: without TVM's compiler
    library (``TVM_USE_RUNTIME_LIB=1``). torch stays importable afterwards (``--shift-reconstruct``
    imports it); a process that embeds shiftc, or has TVM or torch imported already, is left as it is."""
    if not _OWN_PROCESS or "tvm" in sys.modules or "torch" in sys.modules:
        return
    saved = os.environ.get("TVM_USE_RUNTIME_LIB")
    if runtime_only:
        os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    sys.modules["torch"] = None  # `import torch` raises ImportError: tvm_ffi's no-torch path
    try:
        import tvm  # noqa: F401
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
        if saved is None:
            os.environ.pop("TVM_USE_RUNTIME_LIB", None)
        else:
            os.environ["TVM_USE_RUNTIME_LIB"] = saved


@main.command("sign")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--key", "key", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Ed25519 private key, PEM (`openssl genpkey -algorithm ed25519 -out KEY.pem`).")
@click.option("--expect", metavar="ID", help="Sign only if the artifact's id is ID.")
@handle_errors
def sign_cmd(artifact, key, expect):
    """Sign ARTIFACT's id with an Ed25519 key into ARTIFACT/meta.json.sig (needs shiftc[sign])."""
    from . import artifact as art

    path = art.sign(artifact, key, expect=expect)
    out.print(f"signed {art.artifact_id(artifact)} -> {path}", soft_wrap=True, highlight=False)


@main.command("verify")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--expect", metavar="ID", help="Refuse the artifact unless its id (sha256 of meta.json) is ID.")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path), help="Ed25519 public key, PEM: refuse the artifact unless it signed its id (`shiftc sign`).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@handle_errors
def verify_cmd(artifact, expect, public_key, as_json):
    """Check ARTIFACT as loading it would (every file, optionally its id and signature); loads no code."""
    from . import artifact as art

    art.verify(artifact, expect=expect, public_key=public_key)
    if as_json:
        click.echo(_json({"artifact": str(artifact), "artifact_id": art.artifact_id(artifact), "ok": True,
                          "signature_checked": public_key is not None}))
        return
    signed = ", signature ok" if public_key else ""
    out.print(f"ok {art.artifact_id(artifact)}{signed}", soft_wrap=True, highlight=False)


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DxDx..", help="Pin an input's dynamic dims.")
@click.option("--after", "after", default="", metavar="STAGE,..", help="Also count Relax ops before/after these pipeline stages.")
@click.option("--passes", "norm_passes", is_flag=True, help="Same as --after canonicalize,fold_norm.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@handle_errors
def inspect_cmd(model, input_shapes, after, norm_passes, as_json):
    """Op histogram, multiply-accumulates per op type, and rewrite candidates of MODEL."""
    from . import frontend, model_stats

    loaded = frontend.load(model, dict(frontend.parse_shape(s) for s in input_shapes))
    stats = model_stats.analyse(loaded.graph)
    result = stats.to_json()
    result["simplify"] = loaded.simplified
    result["inputs"] = [s.to_json() for s in loaded.inputs]
    result["outputs"] = [s.to_json() for s in loaded.outputs]
    from shiftc.op_report import rewrite_candidates

    result["rewrites"] = rewrite_candidates(loaded)
    stages = [s for s in after.split(",") if s.strip()] or (["canonicalize", "fold_norm"] if norm_passes else [])
    if stages:
        from shiftc.op_report import counts_after

        before, after_counts, reports = counts_after(loaded, [s.strip() for s in stages])
        result["relax_ops"] = {"stages": stages, "before": dict(before), "after": dict(after_counts),
                               "notes": [n for r in reports for n in r.notes]}
    if as_json:
        click.echo(_json(result))
        return
    table = _table("op", "count", "MACs", numeric=("count", "MACs"))
    macs = stats.macs_by_op
    for op, n in sorted(stats.ops.items(), key=lambda kv: -kv[1]):
        table.add_row(escape(op), str(n), f"{macs[op]:,}" if op in macs else "-")
    _show(f"{model.name}: ONNX ops", table, [f"total multiply-accumulates: {stats.total_macs:,}"])
    _print_rewrites(result["rewrites"])
    if stages:
        _print_relax_counts(result["relax_ops"])


def _print_rewrites(rewrites: dict):
    shift_rows = rewrites["shift"]
    table = _table("layer", "op", "weight", "MACs", numeric=("MACs",))
    for r in shift_rows:
        table.add_row(escape(r["layer"]), r["op"], "x".join(map(str, r["weight_shape"])), f"{r['macs']:,}")
    _show(f"shift pass: {len(shift_rows)} layer(s) would become shift-add kernels", table)
    missing = {op: v["count"] for op, v in rewrites["integer"].items() if not v["integer_form"]}
    if missing:
        listing = ", ".join(f"{op} x{n}" for op, n in missing.items())
        out.print(f"integer pass: no integer form for {listing} (--integer-only would refuse them)")
    else:
        out.print("integer pass: every Relax op has an integer form")


def _print_relax_counts(counts: dict):
    table = _table("op", "before", "after", numeric=("before", "after"))
    before, after = counts["before"], counts["after"]
    for op in sorted(set(before) | set(after), key=lambda o: (-before.get(o, 0), o)):
        b, a = before.get(op, 0), after.get(op, 0)
        style = "" if a == b else "bold"
        table.add_row(escape(op), str(b), str(a), style=style)
    _show("Relax ops before / after " + ", ".join(counts["stages"]), table, [f"note: {n}" for n in counts["notes"]])


@main.command("tune", cls=TargetOptionsCommand)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-t", "--target", default="x86", show_default=True, help="Target name (see `shiftc targets`).")
@click.option("--trials", type=int, required=True, help="Total measurement trials (every kernel gets at least one round).")
@click.option("--db", type=click.Path(path_type=Path), required=True, help="Database folder to create or extend.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DxDx..", help="Pin an input's dynamic dims.")
@click.option("--rpc-tracker", default=None, metavar="HOST:PORT", help="Measure on devices behind a TVM RPC tracker.")
@click.option("--rpc-key", default=None, help="Device key at the RPC tracker (with --rpc-tracker).")
@click.option("--calibrate", type=click.Path(path_type=Path), help="Calibration samples (with lossy pass options), as for compile.")
@pass_option_flags
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@handle_errors
def tune_cmd(model, target, trials, db, input_shapes, rpc_tracker, rpc_key, calibrate, as_json, **pass_options):
    """Tune MODEL's kernels with MetaSchedule into a database folder for `shiftc compile --db`.

    Takes compile's pass options (e.g. --shift-bits 4 --integer-only) and tunes the kernels that
    compile with the same options builds. Boards join a tracker with:
    python -m tvm.exec.rpc_server --tracker=HOST:PORT --key=KEY
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import api, frontend, targets
    from .schedules import tune as tuning

    target_options = targets.parse_options(target, pop_target_flags(pass_options))
    if (rpc_tracker is None) != (rpc_key is None):
        raise InputError("--rpc-tracker and --rpc-key go together")
    ctx = click.get_current_context()
    pass_options = {k: v for k, v in pass_options.items() if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    runner = tuning.rpc_runner(rpc_tracker, rpc_key) if rpc_tracker else None
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
                  TimeElapsedColumn(), console=err, disable=as_json or not err.is_terminal) as bar:
        job = bar.add_task("tuning", total=None, best="")

        def progress(task, done, planned):
            best = f"{task.name}: best {task.best_ms:.3f} ms" if task.best_ms is not None else task.name
            bar.update(job, completed=done, total=planned, best=best)

        result = api.tune(model, target, trials=trials, db=db, input_shapes=dict(frontend.parse_shape(s) for s in input_shapes),
                          calibration=calibrate, runner=runner, progress=progress, **target_options, **pass_options)
    if as_json:
        click.echo(_json(result.to_json()))
        return
    _print_tuned(model, db, result, _verbose(False))


def _print_tuned(model: Path, db: Path, result, verbose: bool) -> None:
    numbers = ("weight", "default", "tuned", "trials")
    table = _table("kernel", *numbers, numeric=numbers)
    for t in result.tasks:
        fmt = lambda ms: "-" if ms is None else human_seconds(ms / 1e3)  # noqa: E731
        table.add_row(escape(t.name if verbose else report_text.short_name(t.name)), str(t.weight), fmt(t.default_ms), fmt(t.best_ms),
                      f"{t.trials} ({t.errors} failed)" if t.errors else str(t.trials))
    _show(f"{model.name}: tuned into {db} ({result.runner} runner; ISA key {result.isa_key})", table)


@main.command("targets")
@click.argument("names", nargs=-1, metavar="[TARGET]...")
@click.option("--apt", is_flag=True, help="Print the Debian packages the targets need, one per line "
              "(without TARGETs: every target's but cuda's, as scripts/setup.sh installs them).")
@click.option("--missing", is_flag=True, help="With --apt: only the packages of tools not found on PATH.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@click.option("--prefetch", is_flag=True, help="Download the aarch64 TVM runtime the arm target needs into its cache "
              "now (scripts/setup.sh does), so that compiles never download; does nothing when it is cached.")
@click.option("-v", "--verbose", "verbose", is_flag=True, help="Show each target's description in full.")
@handle_errors
def targets_cmd(names, apt, missing, as_json, prefetch, verbose):
    """List targets (all, or the TARGETs named) and whether each one's toolchain is present."""
    from . import targets

    if missing and not apt:
        raise InputError("--missing goes with --apt")
    if prefetch:
        from .targets import aarch64_runtime

        click.echo(f"aarch64 TVM runtime cached in {aarch64_runtime.prefetch()}")
        return
    if apt:
        for package in targets.apt_packages(list(names), missing_only=missing):
            click.echo(package)
        return
    rows = []
    for name in sorted(names or targets.REGISTRY):
        cls, tgt = targets.target_class(name), targets.get(name)
        missing = tgt.missing_tools()
        rows.append({
            "name": name,
            "summary": cls.summary,
            "ready": not missing,
            "tools": [{"program": t.program, "package": t.package, "present": t.path() is not None} for t in tgt.tools],
            "install": " ".join(sorted({t.package for t in missing})),
            "notes": tgt.notes(),
        })
    if as_json:
        click.echo(_json({"targets": rows}))
        return
    _print_targets(rows, _verbose(verbose))


def _print_targets(rows: list[dict], verbose: bool) -> None:
    """One line per target (its description cut to fit; -v: in full), its notes and missing packages below."""
    table = _table("target", "toolchain", "description")
    if verbose:
        table.columns[2].no_wrap, table.columns[2].overflow = False, "fold"
    below = []
    for r in rows:
        table.add_row(r["name"], "[green]ready[/]" if r["ready"] else "[red]missing[/]", escape(r["summary"]))
        if not r["ready"]:
            below.append(f"{r['name']}: apt-get install {r['install']}")
        below += [f"{r['name']}: {n}" for n in r["notes"]]
    _show("shiftc targets", table, below)


@main.command("matrix", cls=TargetOptionsCommand)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--targets", "target_list", default="x86,arm,cuda", show_default=True, help="Comma-separated targets.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DxDx..", help="Pin an input's dynamic dims.")
@click.option("--tolerance", default=1e-4, show_default=True, help="Max allowed error vs onnxruntime (max |d| / max(1,|ref|)); a target with its own comparison (vta: bit for bit) keeps it.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Keep the artifacts in this folder (one per target).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON result to this file.")
@click.option("--allow-skip", "allow_skip", multiple=True, metavar="TARGET[,TARGET]",
              help="Report these targets as skipped, not failed, when they cannot be built or run here (e.g. cuda without a GPU).")
@handle_errors
def matrix_cmd(model, target_list, input_shapes, tolerance, keep, as_json, json_out, allow_skip, **flags):
    """Compile MODEL for several targets, run what can run here, compare each with its reference
    (onnxruntime FP32 within the tolerance; vta: the x86 integer build, bit for bit).

    Target options (--cpu, ...) go to every listed target that declares them. Exits 5 when a build
    fails, an output differs from its reference beyond its tolerance, or a listed target cannot be
    built or run here (missing toolchain, no GPU) and is not named in --allow-skip.
    """
    from . import frontend, matrix, targets
    from .core.paths import check_output_file, check_output_folder

    names = [t.strip() for t in target_list.split(",") if t.strip()]
    if not names:
        raise InputError("--targets is empty")
    if json_out:
        check_output_file(json_out, "--json-out")
    if keep:
        check_output_folder(keep, "--keep folder")
    target_options = targets.options_for(names, pop_target_flags(flags))
    status, step = _progress(not as_json and err.is_terminal)
    if status:
        status.start()
    try:
        shapes = dict(frontend.parse_shape(s) for s in input_shapes)
        skippable = [t.strip() for spec in allow_skip for t in spec.split(",") if t.strip()]
        rows = matrix.run_matrix(model, names, input_shapes=shapes, tolerance=tolerance, work_dir=keep,
                                 target_options=target_options, progress=step, allow_skip=skippable)
    finally:
        if status:
            status.stop()
    ok = all(r.ok for r in rows)
    skipped = [r.target for r in rows if r.skipped]
    result = {"model": str(model), "tolerance": tolerance, "ok": ok, "skipped": skipped, "rows": [r.to_json() for r in rows]}
    if json_out:
        json_out.write_text(_json(result) + "\n")
    if as_json:
        click.echo(_json(result))
    else:
        _print_matrix(model, tolerance, rows)
        note = f" ({', '.join(skipped)} skipped: allowed by --allow-skip)" if skipped else ""
        out.print(f"[green]matrix ok[/]{note}" if ok else "[red]matrix FAILED[/]")
    if not ok:
        failed = ", ".join(r.target for r in rows if not r.ok)
        raise CheckFailedError(f"matrix failed for {failed}")


def _print_matrix(model: Path, tolerance: float, rows) -> None:
    """One line per target; what each was compared with, and why a build or run did not happen, under the table."""
    numbers = ("max error", "size", "build", "run")
    table = _table("target", "built", "ran", "max error", "ok", *numbers[1:], numeric=numbers)
    below, compared = [], {}
    for r in rows:
        built = "[green]yes[/]" if r.built else "[red]FAILED[/]" if not r.ok else "[yellow]no[/]"
        ran_word, _, why = r.run_note.partition(" ")
        ran = ran_word if r.ok or r.ran else f"[red]{ran_word}[/]"
        verdict = "[yellow]skipped[/]" if r.skipped else "[green]yes[/]" if r.ok else "[red]no[/]"
        err_cell = "-" if r.max_error is None else (f"{r.max_error:.2e}" if r.ok else f"[red]{r.max_error:.2e}[/]")
        table.add_row(r.target, built, ran, err_cell, verdict, human_bytes(r.size_bytes), human_seconds(r.build_s), human_seconds(r.run_s))
        below += [f"{r.target} {step}: {note}" for step, note in (("build", r.build_note), ("run", why and r.run_note)) if note]
        if r.compared_with:
            compared.setdefault(r.compared_with, []).append(r.target)
    below += [f"compared with {what}: {', '.join(names)}" for what, names in compared.items()]
    _show(f"shiftc matrix: {model.name} (tolerance {tolerance:g})", table, below)


@main.command("report")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write.")
@click.option("--matrix", "matrix_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Also show a `shiftc matrix --json-out` result.")
@handle_errors
def report_cmd(artifact, output, matrix_file):
    """Write ARTIFACT's compile report as one self-contained HTML page (plots inlined)."""
    from . import html_report

    path = html_report.write(artifact, output, matrix_file)
    out.print(f"[green]report[/] {artifact} -> {path} ({human_bytes(path.stat().st_size)})", highlight=False)


@main.command("finetune")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Fine-tuned ONNX model to write.")
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Unlabelled inputs: .npy (N, ...) or .npz (the array named after the model input).")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), help="Class labels .npy (N,): adds cross-entropy to the distillation.")
@click.option("--shift-bits", type=click.IntRange(2, 8), default=4, show_default=True, help="Bits per shift code.")
@click.option("--shift-terms", type=click.IntRange(1, 3), default=1, show_default=True, help="Shift terms per weight.")
@click.option("--shift-zero", type=click.Choice(["free", "with-zero"]), default="free", show_default=True, help="Zero-free (DenseShift) or with-zero (DeepShift) codes.")
@click.option("--form", type=click.Choice(["dense", "ps"]), default="dense", show_default=True, help="DenseShift sign-scale latents, or DeepShift-PS (shift and sign latents).")
@click.option("--attention", type=click.Choice(["softmax", "shiftadd"]), default="softmax", show_default=True,
              help="Keep the softmax attention, or replace it by ShiftAddViT add-only attention (MODEL must be a torch .pt module).")
@click.option("--steps", type=click.IntRange(1), help="Training steps (default: one epoch).")
@click.option("--epochs", type=float, help="Training epochs over --data (ignored with --steps).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), help="Stop after this long; the learning-rate schedule ends on time.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True, help="Adam learning rate (cosine decay).")
@click.option("--loss", type=click.Choice(["auto", "kl", "cosine"]), default="auto", show_default=True, help="Distillation loss: KL on logits, cosine on embeddings.")
@click.option("--keep-multiply", type=click.IntRange(0), default=0, show_default=True, help="Keep this many layers, the most sensitive (measured), as float multiplications.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint file [default: OUTPUT with .ckpt].")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint.")
@click.option("--integer-only", is_flag=True, help="Integer-only QAT: train through the integer program of `shiftc compile --integer-only` "
              "(activation thresholds frozen from the data and recorded in OUTPUT).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@handle_errors
def finetune_cmd(model, output, data, labels, shift_bits, shift_terms, shift_zero, form, attention, steps, epochs,
                 max_minutes, batch_size, lr, loss, keep_multiply, checkpoint, resume, integer_only, as_json):
    """Fine-tune MODEL (ONNX, or a whole torch module saved with torch.save as .pt/.pth) to shift
    codes by distillation from itself; write OUTPUT ONNX whose weights lie on the code grid
    (`shiftc compile --shift-bits` encodes them losslessly); with --integer-only, through the
    integer program that `shiftc compile --integer-only` builds."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from . import finetune

    bar = Progress(TextColumn("[bold]fine-tune[/]"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), console=err,
                   disable=as_json or not err.is_terminal)
    task = bar.add_task("fine-tune", total=1.0, loss=float("nan"))

    def on_step(e):
        bar.update(task, completed=e["progress"], loss=e["loss"])

    with bar:
        res = finetune(model, data, labels, output, bits=shift_bits, terms=shift_terms, zero=shift_zero, form=form,
                       steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, keep_multiply=keep_multiply,
                       max_seconds=max_minutes * 60 if max_minutes else None,
                       checkpoint=checkpoint or output.with_suffix(".ckpt"), resume=resume, integer_only=integer_only,
                       attention=attention, callback=on_step)
    losses = res.history.loss
    result = {"output": str(output), "steps": len(losses), "first_loss": losses[0] if losses else None,
              "final_loss": losses[-1] if losses else None, "shifted": res.shifted, "multiply": res.multiply,
              "not_mapped": res.not_mapped, "sensitivity": res.sensitivity, "attention": res.attention,
              "attention_modules": res.attention_modules, "integer_only": integer_only, "device": res.device,
              "seconds": round(res.seconds, 1)}
    if as_json:
        click.echo(_json(result))
        return
    replaced = f", {len(res.attention_modules)} attention module(s) add-only" if res.attention_modules else ""
    out.print(f"[green]fine-tuned[/] {model} -> {output}: {len(res.shifted)} shift layer(s), {len(res.multiply)} kept as multiply"
              f"{replaced}, {len(losses)} steps on {res.device}, loss {result['first_loss']:.4g} -> {result['final_loss']:.4g}",
              highlight=False)


main.epilog = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items())


def program():
    """The ``shiftc`` console script and ``python -m shiftc.cli``: ``main`` in shiftc's own process."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    main()


if __name__ == "__main__":
    program()
