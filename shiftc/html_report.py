"""A self-contained HTML page of an artifact's compile report (``shiftc report``).

One file, no external URLs: plots are matplotlib PNGs inlined as base64 ``data:`` URIs, CSS is
inline. Sections: header (model, target, options, artifact id, versions), measured errors of the
lossy stages, per-layer shift errors and bits per weight, integerize per-op errors and calibration
scales, schedule sources, size breakdown, and an optional ``shiftc matrix --json-out`` result. A
section without data says so in one line. Every string taken from ``meta.json`` (or the matrix
file) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from . import artifact
from .core.units import human_bytes, human_seconds, percent

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #1d2330; line-height: 1.4; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; border-bottom: 1px solid #ccd; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d8dbe4; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f7; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; word-break: break-all; } .none { color: #777; font-style: italic; }
img { max-width: 100%; display: block; margin: 8px 0; } .bad { color: #b00020; font-weight: bold; }
"""
ONLOAD = (
    "window.addEventListener('load', function () {"
    " var n = 0; document.querySelectorAll('img').forEach(function (i) {"
    " if (i.complete && i.naturalWidth > 0) n++; });"
    " document.body.setAttribute('data-loaded', String(n)); });"
)
ERROR_KEYS = ("rel_l2", "err", "error", "max_abs", "cosine")
CALIBRATION_KEYS = ("scale", "threshold", "min", "max", "range", "amax", "zero_point")


# ---------------------------------------------------------------- formatting


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def cell(value) -> str:
    """A table cell: numbers right-aligned (floats to 4 significant digits), the rest escaped."""
    if isinstance(value, bool) or value is None:
        return f"<td>{esc('-' if value is None else value)}</td>"
    if isinstance(value, float):
        return f'<td class="n">{value:.4g}</td>'
    if isinstance(value, int):
        return f'<td class="n">{value}</td>'
    if isinstance(value, (list, dict)):
        value = json.dumps(value, sort_keys=True)
    return f"<td>{esc(value)}</td>"


def table(headers: list[str] | None, rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers or [])
    body = "".join("<tr>" + "".join(v if isinstance(v, Raw) else cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


class Raw(str):
    """Already-safe HTML for a table cell."""


def none(text: str) -> str:
    return f'<p class="none">{esc(text)}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


# ---------------------------------------------------------------- plots


def png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(fig, alt: str) -> str:
    return f'<img src="{png_data_uri(fig)}" alt="{esc(alt)}">'


def _figure(n_bars: int, height: float = 3.2):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(min(14.0, max(6.0, 0.22 * n_bars + 2)), height))
    return fig, fig.add_subplot(1, 1, 1)


def bar_plot(labels: list[str], series: dict[str, list[float]], ylabel: str, title: str):
    """Grouped bars, one group per label, one bar per series (None drawn as 0)."""
    import numpy as np

    fig, ax = _figure(len(labels) * max(1, len(series)))
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [0.0 if v is None else v for v in values], width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90 if len(labels) > 8 else 0, fontsize=7 if len(labels) > 20 else 9)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------- sections


def stages_of(meta: dict) -> dict[str, dict]:
    return {s.get("name", ""): s for s in meta.get("report", {}).get("stages", [])}


def header(meta: dict, aid: str, folder: Path) -> str:
    report, target = meta.get("report", {}), meta.get("target", {})
    options = {k: v for k, v in sorted(meta.get("options", {}).items()) if v not in (None, "", False)}
    io_specs = [f"{s.get('name')}: {s.get('dtype')}{s.get('shape')}" for s in meta.get("inputs", []) + meta.get("outputs", [])]
    rows = [
        ["model", report.get("model", "-")],
        ["artifact", str(folder)],
        ["artifact id", Raw(f"<td><code>{esc(aid)}</code></td>")],
        ["target", f"{target.get('name', '-')} {json.dumps(target.get('options', {}), sort_keys=True)}"],
        ["options", ", ".join(f"{k}={v}" for k, v in options.items()) or "(defaults)"],
        ["inputs / outputs", "; ".join(io_specs)],
        ["calibration / error data", report.get("calibration") or "-"],
        ["shiftc", meta.get("shiftc_version", "-")],
        ["TVM", meta.get("tvm_version", "-")],
    ]
    title = f"shiftc report: {Path(str(report.get('model', 'model'))).name} on {target.get('name', '?')}"
    return f'<header id="header"><h1>{esc(title)}</h1>{table(None, rows)}</header>'


def stage_errors(stages: dict[str, dict]) -> str:
    lossy = [(n, s) for n, s in stages.items() if s.get("lossy")]
    if not lossy:
        return section("errors", "Measured error vs FP32", none("No lossy stage in this build (FP32): nothing measured."))
    measured = [(n, s.get("error") or {}) for n, s in lossy]
    rows = [[n, Raw(f'<td class="n">{percent(e.get("rel_l2"), 2)}</td>'), e.get("cosine"), e.get("max_abs"),
             percent(e.get("top1_agreement"), 2) if "top1_agreement" in e else "-", e.get("samples")] for n, e in measured]
    fig = bar_plot([n for n, _ in measured], {"relative L2 error (%)": [100 * e.get("rel_l2", 0) for _, e in measured]},
                   "relative L2 (%)", "model output error vs FP32 after each lossy stage (cumulative)")
    body = img(fig, "stage-level error") + table(["stage", "rel. L2", "cosine", "max |diff|", "top-1 agreement", "samples"], rows)
    return section("errors", "Measured error vs FP32", body)


def _weights(row: dict) -> int | None:
    shape = row.get("weight_shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        return None
    n = 1
    for d in shape:
        n *= d
    return n


def shift_layers(stages: dict[str, dict]) -> str:
    rows = (stages.get("shift") or {}).get("rows") or []
    if not rows:
        return section("shift", "Shift pass: per-layer error and bits", none("No shift pass in this build: no per-layer shift data."))
    labels = [str(r.get("layer", i)) for i, r in enumerate(rows)]
    errors = bar_plot(labels, {"weight rel. L2 (%)": [100 * r.get("weight_rel_l2", 0) for r in rows],
                               "output rel. L2 (%)": [100 * r.get("output_rel_l2", 0) for r in rows]},
                      "relative L2 (%)", "shift: per-layer weight and output error")
    stored = [None if not _weights(r) else 8 * r.get("packed_bytes", 0) / _weights(r) for r in rows]
    bits = bar_plot(labels, {"code bits x terms": [r.get("bits", 0) * r.get("terms", 1) for r in rows],
                             "stored bits / weight (packed, with scales)": stored},
                    "bits per weight", "shift: bits per weight per layer")
    table_rows = [[r.get("layer"), r.get("op"), r.get("weight_shape"), r.get("bits"), r.get("terms"),
                   None if b is None else round(b, 2), r.get("macs"), Raw(f'<td class="n">{percent(r.get("weight_rel_l2"), 2)}</td>'),
                   Raw(f'<td class="n">{percent(r.get("output_rel_l2"), 2)}</td>'), human_bytes(r.get("packed_bytes"))]
                  for r, b in zip(rows, stored)]
    summary = (stages["shift"].get("summary") or {})
    line = (f"<p>{esc(summary.get('rewritten', len(rows)))} layers rewritten, {esc(summary.get('bits_per_weight', '-'))} "
            f"bits per weight overall, weight compression {esc(summary.get('weight_compression', '-'))}x; "
            f"errors measured in {esc(human_seconds(summary.get('measure_s')))}.</p>")
    notes = "".join(f"<p class=none>{esc(n)}</p>" for n in stages["shift"].get("notes") or [])
    headers = ["layer", "op", "weight shape", "bits", "terms", "stored bits/weight", "MACs", "weight err", "output err", "packed"]
    return section("shift", "Shift pass: per-layer error and bits",
                   line + img(errors, "shift per-layer error") + img(bits, "bits per weight") + table(headers, table_rows) + notes)


def _error_key(row: dict) -> str | None:
    return next((k for k in row if any(t in k for t in ERROR_KEYS) and isinstance(row[k], (int, float))), None)


def integerize_ops(stages: dict[str, dict]) -> str:
    stage = stages.get("integerize")
    if not stage:
        return section("integerize", "Integerize: per-op rows", none("No integerize pass in this build."))
    rows = stage.get("rows") or []
    summary = stage.get("summary") or {}
    body = table(None, [[k, v] for k, v in sorted(summary.items())])
    with_error = [r for r in rows if _error_key(r)]
    if with_error:
        key = _error_key(with_error[0])
        labels = [f"{r.get('op')} {r.get('value', i)}" for i, r in enumerate(with_error)]
        body += img(bar_plot(labels, {key: [float(r.get(key) or 0) for r in with_error]}, key, f"integerize: per-op {key}"),
                    "integerize per-op error")
    else:
        body += none(f"The {len(rows)} integerize rows carry no per-op error (only the stage-level error above).")
    if rows:
        keys = sorted({k for r in rows for k in r})
        body += table(keys, [[r.get(k) for k in keys] for r in rows])
    return section("integerize", "Integerize: per-op rows", body)


def calibration(stages: dict[str, dict]) -> str:
    stage = stages.get("integerize")
    rows = [r for r in (stage or {}).get("rows") or [] if any(k in r for k in CALIBRATION_KEYS)]
    if not rows:
        text = "No calibration in this build." if not stage else "Calibration ranges (scales/thresholds per value) were not recorded in the report."
        return section("calibration", "Calibration ranges", none(text))
    keys = [k for k in CALIBRATION_KEYS if any(k in r for r in rows)]
    body = f"<p>{esc((stage.get('summary') or {}).get('calibration', ''))}</p>"
    body += table(["value", "op", *keys], [[r.get("value"), r.get("op"), *[r.get(k) for k in keys]] for r in rows])
    unrecorded = len(stage.get("rows") or []) - len(rows)
    if unrecorded:
        body += none(f"{unrecorded} other integerize values have no scale or threshold recorded in the report.")
    return section("calibration", "Calibration ranges", body)


def schedule(stages: dict[str, dict]) -> str:
    stage = stages.get("schedule")
    summary = (stage or {}).get("summary") or {}
    if not summary:
        return section("schedule", "Schedule sources", none("No schedule report recorded for this build."))
    default = summary.get("default") or {}
    naive = default.get("naive") or {}
    counts = {k: v for k, v in default.items() if k != "naive" and isinstance(v, int)}
    tuned = summary.get("tuned") or []
    rows = [["tuned (from the database)", len(tuned), ", ".join(map(str, tuned)) or "-"]]
    rows += [[f"default: {k}", v, ""] for k, v in sorted(counts.items())]
    rows += [["naive (no rule applied)", len(naive), "; ".join(f"{k}: {v}" for k, v in sorted(naive.items())) or "-"]]
    body = table(None, [["database", summary.get("database") or "none"]]
                 + [[f"tuned from {k}", f"{v} kernel(s)"] for k, v in (summary.get("tuned_from") or {}).items()])
    body += table(["source", "kernels", "which / why"], rows)
    body += "".join(f"<p class=none>{esc(n)}</p>" for n in summary.get("notes") or [])
    return section("schedule", "Schedule sources", body)


def sizes(meta: dict, folder: Path) -> str:
    files = sorted((meta.get("files") or {}).items())
    rows, total = [], 0
    for name, digest in [("meta.json", None), *files]:
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        total += size or 0
        rows.append([name, Raw(f'<td class="n">{human_bytes(size)}</td>'), Raw(f"<td><code>{esc(digest or '(the artifact id)')}</code></td>")])
    rows.append(["total", Raw(f'<td class="n">{human_bytes(total)}</td>'), ""])
    body = table(["file", "size", "sha256"], rows)
    shift = stages_of(meta).get("shift", {}).get("summary") or {}
    if "packed_weight_bytes" in shift:
        body += table(["weights", "stored"], [
            ["FP32 weights of the shift-rewritten layers", human_bytes(shift.get("fp32_weight_bytes"))],
            ["stored as packed shift codes", human_bytes(shift.get("packed_weight_bytes"))],
            ["compression", f"{shift.get('weight_compression', '-')}x"]])
    else:
        body += none("Weights are stored as FP32 inside the compiled module (no packed shift weights in this build).")
    recorded = (meta.get("report") or {}).get("sizes") or {}
    if recorded:
        body += table(["report size", "bytes"], [[k, human_bytes(v)] for k, v in sorted(recorded.items())])
    return section("sizes", "Size breakdown", body)


def matrix(result: dict | None) -> str:
    if not result:
        return section("matrix", "Cross-target matrix", none("No matrix result given (shiftc report --matrix FILE, from shiftc matrix --json-out)."))
    rows = [[r.get("target"), r.get("built"), r.get("build_note") or "", r.get("ran"), r.get("run_note") or "",
             r.get("compared_with") or "", "-" if r.get("max_error") is None else f"{r['max_error']:.2e}",
             Raw("<td>yes</td>" if r.get("ok") else '<td class="bad">no</td>'), human_bytes(r.get("size_bytes")),
             human_seconds(r.get("build_s")), human_seconds(r.get("run_s"))] for r in result.get("rows") or []]
    head = (f"<p>{esc(result.get('model', ''))}: tolerance {esc(result.get('tolerance', '-'))}, "
            f"{'all ok' if result.get('ok') else 'FAILED'}</p>")
    headers = ["target", "built", "build note", "ran", "run note", "compared with", "max error", "ok", "size", "build", "run"]
    return section("matrix", "Cross-target matrix", head + table(headers, rows))


# ---------------------------------------------------------------- the page


def build(folder: str | Path, matrix_result: dict | None = None) -> str:
    """The HTML page for the artifact in ``folder`` (its meta.json; the files' sizes from disk)."""
    folder = Path(folder)
    meta = artifact.read_meta(folder)
    stages = stages_of(meta)
    parts = [header(meta, artifact.artifact_id(folder), folder), stage_errors(stages), shift_layers(stages),
             integerize_ops(stages), calibration(stages), schedule(stages), sizes(meta, folder), matrix(matrix_result)]
    title = esc(f"shiftc report: {meta.get('report', {}).get('model', '')}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style><script>{ONLOAD}</script></head><body>{''.join(parts)}</body></html>\n")


def write(folder: str | Path, output: str | Path, matrix_file: str | Path | None = None) -> Path:
    """Write ``build(folder)`` to ``output``; ``matrix_file``: a ``shiftc matrix --json-out`` file."""
    result = json.loads(Path(matrix_file).read_text()) if matrix_file else None
    output = Path(output)
    output.write_text(build(folder, result), encoding="utf-8")
    return output
