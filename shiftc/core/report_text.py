"""The compile report in words: one short description per stage and the columns of its per-layer
table, in human units. Plain strings (``shiftc compile`` draws them with rich); ``verbose`` adds the
details that do not fit 80 columns (every column, every summary field, every note)."""

from __future__ import annotations

from .units import human_bytes, human_count, percent

NAME_KEYS = ("onnx_node", "node", "value", "layer")  # how a row names its layer, best first (an empty one: the next)
STAGE_COLUMNS = {  # the columns a stage's table shows without --verbose (after the name)
    "shift": ("op", "weight_shape", "bits", "terms", "macs", "output_rel_l2", "packed_bytes"),
    "integerize": ("op", "weights", "bits", "scale"),
    "vta": ("op", "placement", "layer"),
}
ROW_UNITS = {"integerize": "ops", "vta": "ops"}  # what one row of a stage is (default: layers)
HEADERS = {"onnx_node": "ONNX node", "node": "ONNX node", "weight_shape": "weight", "macs": "MACs",
           "output_rel_l2": "out err", "weight_rel_l2": "w err", "packed_bytes": "packed", "shift_adds": "shift-adds"}
NAME_WIDTH = 30  # a longer layer name keeps its tail (the distinctive part) without --verbose
DEFAULT_COLUMNS = 6  # a stage without STAGE_COLUMNS shows its first ones
ERROR_WORDS = (("rel_l2", "rel L2"), ("cosine", "cosine"), ("max_abs", "max abs"), ("top1_agreement", "top-1 agreement"))


def header(key: str) -> str:
    return HEADERS.get(key, key.replace("_", " "))


def cell(key: str, value) -> str:
    """One table cell or summary value, in the unit its key implies."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("bytes") and isinstance(value, (int, float)):
        return human_bytes(value)
    if key.endswith("rel_l2") or key.endswith("agreement"):
        return percent(value)
    if key in ("macs", "shift_adds") or key.startswith("macs_"):
        return human_count(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        if value and all(isinstance(d, int) for d in value):
            return "x".join(map(str, value))
        return ", ".join(cell(key, v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(k, v)}" for k, v in value.items())
    return str(value)


def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


def phrase(key: str, value) -> str | None:
    """A summary field as words (``ops changed: permute_dims 1 -> 0``); None for an empty one (an empty
    list, zero counts only) or one too nested for a line (a list of records: see ``--json``)."""
    if _empty(value) or (type(value) is int and value == 0):
        return None
    label = key.replace("_", " ")
    if isinstance(value, dict):
        values = list(value.values())
        if all(isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v) for v in values):
            return f"{label}: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in value.items())
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            nonzero = {k: v for k, v in value.items() if v}
            return f"{label}: " + ", ".join(f"{k} {v}" for k, v in nonzero.items()) if nonzero else None
        if all(isinstance(v, (str, int, float, bool)) for v in values):
            return f"{label}: {cell(key, value)}"
        return f"{label}: {len(value)} entries (see --json)"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return f"{label}: {len(value)} entries (see --json)"
    return f"{label} {cell(key, value)}"


def error_line(error: dict) -> str:
    """A lossy stage's measured error against onnxruntime FP32."""
    parts = [f"{words} {error[k]:.4f}" if k == "cosine" else f"{words} {cell(k, error[k])}" for k, words in ERROR_WORDS if k in error]
    parts += [f"{k.replace('_', ' ')} {cell(k, v)}" for k, v in error.items() if k not in dict(ERROR_WORDS) and k != "samples"]
    samples = f" on {error['samples']} samples" if "samples" in error else ""
    return f"error vs onnxruntime FP32{samples}: " + ", ".join(parts)


def _simplify(s: dict) -> tuple[list[str], set]:
    before, after = s.get("nodes_before"), s.get("nodes_after")
    nodes = f"{before} -> {after} ONNX nodes" if s.get("applied") else f"{after} ONNX nodes, unchanged"
    return [nodes + (f" ({s['reason']})" if s.get("reason") else "")], {"nodes_before", "nodes_after", "applied", "reason"}


def _shift(s: dict) -> tuple[list[str], set]:
    words = [f"{s.get('rewritten')} of {s.get('layers')} layers rewritten ({s.get('mode', '')}), "
             f"{cell('', s.get('bits_per_weight'))} bits/weight"]
    if s.get("fp32_weight_bytes") is not None:
        words.append(f"weights {human_bytes(s['fp32_weight_bytes'])} -> {human_bytes(s.get('packed_weight_bytes'))}"
                     f" ({cell('', s.get('weight_compression'))}x smaller)")
    if s.get("macs_total"):
        words.append(f"{human_count(s.get('macs_to_shift_add'))} of {human_count(s['macs_total'])} MACs as shift-adds")
    if s.get("skipped"):
        words.append("kept FP32: " + ", ".join(s["skipped"]))
    keys = {"rewritten", "layers", "mode", "bits_per_weight", "fp32_weight_bytes", "packed_weight_bytes",
            "weight_compression", "macs_total", "macs_to_shift_add", "skipped", "measured_on_samples"}
    return words, keys


def _integerize(s: dict) -> tuple[list[str], set]:
    ops = s.get("integer_ops") or {}
    words = [f"{sum(ops.values())} integer ops ({cell('', ops)}), {s.get('float_ops', 0)} float"]
    words += [f"{k} {s[k]}" for k in ("calibration", "requant") if s.get(k)]
    return words, {"integer_ops", "float_ops", "calibration", "requant"}


def _schedule(s: dict) -> tuple[list[str], set]:
    tuned = s.get("tuned") or []
    words = [f"{len(tuned)} kernels tuned" + (f" (database {s['database']})" if s.get("database") else " (no database)")]
    default = {k: v for k, v in (s.get("default") or {}).items() if isinstance(v, int) and v}
    naive = (s.get("default") or {}).get("naive") or {}
    if default or naive:
        words.append("default schedules: " + ", ".join(f"{k} {v}" for k, v in {**default, "naive": len(naive)}.items() if v))
    return words, {"tuned", "database", "default", "notes"}


DESCRIBE = {"simplify": _simplify, "shift": _shift, "integerize": _integerize, "schedule": _schedule}
QUIET_NOTES = {"schedule"}  # notes that restate the summary: --verbose only


def describe(stage, verbose: bool = False) -> list[str]:
    """What ``stage`` (a ``StageReport``) did, as lines: its summary (then its measured error, then its notes)."""
    summary = stage.summary or {}
    words, used = DESCRIBE[stage.name](summary) if stage.name in DESCRIBE else ([], set())
    if verbose or stage.name not in DESCRIBE:  # a described stage's other fields: --verbose
        words += [p for k, v in summary.items() if k not in used for p in [phrase(k, v)] if p]
    lines = ["; ".join(words) or "no change"]
    if stage.error:
        lines.append(error_line(stage.error))
    if verbose or stage.name not in QUIET_NOTES:
        lines += [f"note: {n}" for n in stage.notes]
    elif stage.notes:
        lines.append(f"{len(stage.notes)} note(s): shown with -v")
    return lines


def row_table(name: str, rows: list[dict], verbose: bool = False) -> tuple[list[str], list[list[str]], list[str], set[str]]:
    """A stage's per-layer rows as (column headers, cells, lines under the table, the headers of the
    numeric columns). A column with one value in every row becomes a line under the table; without
    ``verbose``, long names keep their tail and only the stage's main columns show (the line under
    the table names the others)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    name_key = next((k for k in NAME_KEYS if k in keys), None)
    const = {k: rows[0].get(k) for k in keys if len(rows) > 1 and all(k in r and r[k] == rows[0][k] for r in rows)}
    wanted = [k for k in keys if k != name_key and k not in const]
    main = [k for k in STAGE_COLUMNS.get(name, ()) if k in wanted]
    wanted = main + [k for k in wanted if k not in main]  # the stage's main columns first
    if not verbose:
        shown = main if name in STAGE_COLUMNS else wanted[:DEFAULT_COLUMNS]
        hidden, wanted = [k for k in wanted if k not in shown], shown
    cols = ([name_key] if name_key else []) + wanted
    cells = [[_name_cell(r, verbose) if k == name_key else cell(k, r.get(k)) for k in cols] for r in rows]
    below = ["every row: " + "; ".join(f"{header(k)} {cell(k, v)}" for k, v in const.items())] if const else []
    if not verbose and hidden:
        below.append("more columns with -v: " + ", ".join(header(k) for k in hidden))
    numeric = {header(k) for k in cols if all(isinstance(r.get(k), (int, float, type(None))) for r in rows)}
    return [header(k) for k in cols], cells, below, numeric


def short_name(text: str, width: int = NAME_WIDTH) -> str:
    """A layer or kernel name cut to ``width`` characters, keeping its tail (the distinctive part)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _name_cell(row: dict, verbose: bool) -> str:
    """The row's best name: its ONNX node's if it has one (not shiftc's own value), else its value's."""
    text = cell("", next((row[k] for k in NAME_KEYS if row.get(k) not in (None, "")), None))
    return text if verbose else short_name(text)
