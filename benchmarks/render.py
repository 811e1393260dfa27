"""Tables of a benchmark run (``benchmarks/results/*.json``) as Markdown, and the README's copy.

The README's speed tables sit between ``README_BEGIN`` (which names the JSON they come from) and
``README_END``; ``python benchmarks/run.py --render RUN.json --readme`` rewrites that block and
tests/test_benchmarks.py checks that it is exactly what ``readme_markdown`` renders from the named
JSON. Two record formats: ``shiftc-bench/1`` (``shiftc.bench.document``: one process per variant)
and the older in-process runs, which have no ``schema`` key (rendered as they were then).
"""

from __future__ import annotations

import re
from pathlib import Path

README_BEGIN = "<!-- benchmark tables: python benchmarks/run.py --render {json} --readme (generated; do not edit) -->"
README_END = "<!-- end of benchmark tables -->"
_BLOCK = re.compile(re.escape(README_BEGIN).replace(r"\{json\}", r"(?P<json>\S+)") + r"\n(?P<body>.*?)" + re.escape(README_END), re.S)
SHIFTC_VARIANTS = ("tvm_fp32", "int8", "shift_float", "shift_int8")
GOAL_VS_ORT_INT8 = 0.8  # issue 7: shiftc latency <= 0.8x onnxruntime int8


def _fmt(v, f: str) -> str:
    return "-" if v is None else format(v, f)


# ---------------------------------------------------------------- shiftc-bench/1


def _setting(r: dict) -> tuple:
    return (r["model"], r["batch"], r["threads"], "one core busy" if r["busy_core"] else "idle")


def _header(doc: dict) -> str:
    s, m = doc["settings"], doc["machine"]
    cpu, pk, git = m["cpu"], m["packages"], m["git"] or {}
    rev = f"shiftc {git['commit'][:10]}{'+changes' if git.get('dirty') else ''}" if git.get("commit") else "shiftc (no git revision)"
    versions = ", ".join(f"{k} {v}" for k, v in pk.items() if v and k != "shiftc")
    isa = ", ".join(cpu["isa"]) if cpu["isa"] is not None else "ISA flags unknown"
    return (f"Run of {doc['created'][:10]}: every variant in its own process, {s['rounds']} rounds (variant order rotated "
            f"each round) x {s['calls']} timed calls after {s['warmup']} warm-up calls; medians of all timed calls. "
            f"CPU {cpu['model']} (LLVM {cpu['llvm_cpu']}; {isa}), {len(cpu['usable_cpus'])} usable cores. "
            f"'one core busy': a busy-loop process pinned to one core during the timed calls. {rev}; {versions}.")


def _variants(results: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["name"] for r in results))


def _cell(row: dict | None, base: float | None) -> str:
    if row is None:
        return "-"
    if row.get("error"):
        return "failed" if "not available" not in row["error"] else "n/a"
    ratio = f" ({row['median_ms'] / base:.2f}×)" if base else ""
    return f"{row['median_ms']:.2f}{ratio}"


def pivot_markdown(doc: dict) -> str:
    """One row per model, batch, threads and load; per variant the median ms and its ratio to
    onnxruntime FP32 in the same setting."""
    results, names = doc["results"], _variants(doc["results"])
    lines = ["| model | batch | threads | load | " + " | ".join(names) + " |", "|---|---:|---:|---|" + "---:|" * len(names)]
    for key in dict.fromkeys(_setting(r) for r in results):
        rows = {r["name"]: r for r in results if _setting(r) == key}
        base = (rows.get("ort_fp32") or {}).get("median_ms")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(_cell(rows.get(n), base) for n in names) + " |")
    return "\n".join(lines) + "\n"


def goal_markdown(doc: dict) -> str:
    """shiftc's variants against onnxruntime int8 in the same setting (the goal: <= 0.8)."""
    results = doc["results"]
    ours = [n for n in _variants(results) if n in SHIFTC_VARIANTS]
    lines = [f"Latency / onnxruntime int8 QDQ, same setting (goal: <= {GOAL_VS_ORT_INT8}):", "",
             "| model | batch | threads | load | " + " | ".join(ours) + " |", "|---|---:|---:|---|" + "---:|" * len(ours)]
    for key in dict.fromkeys(_setting(r) for r in results):
        ms = {r["name"]: r.get("median_ms") for r in results if _setting(r) == key and not r.get("error")}
        base = ms.get("ort_int8")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | "
                     + " | ".join("-" if not (base and ms.get(n)) else f"{ms[n] / base:.2f}" for n in ours) + " |")
    return "\n".join(lines) + "\n"


def details_markdown(doc: dict) -> str:
    """Every row: latency spread, throughput, memory, size, output difference, notes and errors."""
    lines = ["| model | batch | threads | load | variant | median ms | p90 ms | min ms | samples/s | peak RSS MB | size MB | max abs diff | note |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["results"]:
        m, b, t, load = _setting(r)
        note = f"**{r['error']}**" if r.get("error") else r.get("note", "")
        lines.append(f"| {m} | {b} | {t} | {load} | {r['name']} | {_fmt(r.get('median_ms'), '.2f')} | {_fmt(r.get('p90_ms'), '.2f')} "
                     f"| {_fmt(r.get('min_ms'), '.2f')} | {_fmt(r.get('throughput_per_s'), '.1f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} "
                     f"| {_fmt(r.get('size_mb'), '.2f')} | {_fmt(r.get('max_abs_diff_vs_first'), '.1e')} | {note} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- GEMM kernels (both formats)


def kernel_markdown(rows: list[dict], cpu: dict) -> str:
    """GEMM kernels' GOP/s against the AVX2 peaks of ``cpu`` (cores, nominal GHz)."""
    lines = ["", "| kernel | CPU | how | GOP/s | % of AVX2 peak |", "|---|---|---|---|---|"]
    for r in rows:
        peak = cpu["avx2_int8_peak_gops"] if r["peak"] == "int8" else cpu["avx2_fp32_peak_gflops"]
        pct = 100 * r["gops"] / peak if peak else None
        lines.append(f"| {r['kernel']} | {r['cpu']} | {r['how']} | {r['gops']:.1f} | {_fmt(pct, '.1f')} |")
    lines.append(f"\nAVX2 peaks for {cpu['cores']} cores at {cpu['ghz']:.2f} GHz: int8 {cpu['avx2_int8_peak_gops']:.0f} GOP/s "
                 f"(2 x vpmaddubsw per cycle, 32 MACs each), fp32 {cpu['avx2_fp32_peak_gflops']:.0f} GFLOP/s (2 FMA x 8 lanes). "
                 "The clock is the nominal one of /proc/cpuinfo: a row above 100 % means the cores ran faster "
                 "(boost), so every percentage here is an upper bound.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the older in-process format


def legacy_markdown(doc: dict) -> str:
    """A run of the in-process benchmark (before shiftc-bench/1), as its script rendered it."""
    cpu, results = doc["cpu"], doc["results"]
    lines = [
        f"Threads: {doc['threads']}; {doc['repeats']} interleaved runs per variant, medians; CPU {cpu['llvm_cpu']} "
        f"@ {cpu['ghz']:.2f} GHz (AVX2 fp32 peak {cpu['avx2_fp32_peak_gflops']:.0f} GFLOP/s for {cpu['cores']} cores). "
        "Ratios < 1 are faster than onnxruntime FP32. The machine is shared: compare ratios within a run.",
        "",
        "| model | batch | variant | median ms | × ORT FP32 | GOP/s | size MB | RSS Δ MB | max abs diff | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            lines.append(
                f"| {r['model']} | {r['batch']} | {row['variant']} | {_fmt(row['median_ms'], '.2f')} | {_fmt(row['vs_ort_fp32'], '.2f')} "
                f"| {_fmt(row['gops'], '.1f')} | {_fmt(row['size_mb'], '.2f')} | {_fmt(row['rss_delta_mb'], '.0f')} "
                f"| {_fmt(row['max_abs_diff_vs_ort_fp32'], '.1e')} | {row['note']} |")
    goal = ["", f"Latency / onnxruntime int8 QDQ, same run (goal: <= {GOAL_VS_ORT_INT8}):", "",
            "| model | batch | " + " | ".join(SHIFTC_VARIANTS) + " |", "|---|---|" + "---|" * len(SHIFTC_VARIANTS)]
    for r in results:
        ms = {row["variant"]: row["median_ms"] for row in r["rows"]}
        base = ms.get("ort_int8")
        goal.append(f"| {r['model']} | {r['batch']} | " + " | ".join("-" if not (base and ms.get(v)) else f"{ms[v] / base:.2f}" for v in SHIFTC_VARIANTS) + " |")
    return "\n".join(lines) + "\n" + "\n".join(goal) + "\n"


# ---------------------------------------------------------------- entry points


def readme_markdown(doc: dict) -> str:
    """What the README shows of a run: summary tables, then the GEMM kernels when the run timed them."""
    if "schema" not in doc:
        text = legacy_markdown(doc) if doc["results"] else ""
        return text + (kernel_markdown(doc["kernels"], doc["cpu"]) if doc.get("kernels") else "")
    text = _header(doc) + "\n\nMedian ms (× onnxruntime FP32, same setting):\n\n" + pivot_markdown(doc) + "\n" + goal_markdown(doc)
    notes = "".join(f"\n- {n}" for n in doc["notes"])
    text += ("\nNotes:\n" + notes + "\n") if notes else ""
    return text + (kernel_markdown(doc["kernels"], doc["kernel_cpu"]) if doc.get("kernels") else "")


def full_markdown(doc: dict) -> str:
    """``latest.md``: the README's tables, then (new format) every row in detail."""
    if "schema" not in doc:
        return readme_markdown(doc)
    return readme_markdown(doc) + "\nEvery variant and setting:\n\n" + details_markdown(doc)


def readme_block(readme: str) -> tuple[str, str] | None:
    """(JSON path, rendered text) of the README's benchmark block; None when it has none."""
    m = _BLOCK.search(readme)
    return (m.group("json"), m.group("body")) if m else None


def update_readme(readme: str, json_path: str, doc: dict) -> str:
    """``readme`` with its benchmark block replaced by ``doc``'s tables, citing ``json_path``."""
    if _BLOCK.search(readme) is None:
        raise ValueError("the README has no benchmark block (" + README_END + ")")
    block = README_BEGIN.format(json=json_path) + "\n" + readme_markdown(doc) + README_END
    return _BLOCK.sub(lambda _: block, readme, count=1)


def plot(doc: dict, path: Path) -> str:
    """latency / onnxruntime FP32 per setting and variant, as a bar chart (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    groups = _ratio_groups(doc)
    variants = sorted({v for g in groups.values() for v in g})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        ax.bar([x + i * width for x in range(len(groups))], [g.get(v, 0) for g in groups.values()], width, label=v)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([x + width * (len(variants) - 1) / 2 for x in range(len(groups))], list(groups), fontsize=7)
    ax.set_ylabel("latency / onnxruntime FP32 (lower is better)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _ratio_groups(doc: dict) -> dict[str, dict[str, float]]:
    """label -> variant -> latency / onnxruntime FP32, for both formats."""
    out: dict[str, dict[str, float]] = {}
    if "schema" not in doc:
        for r in doc["results"]:
            out[f"{r['model']}\nb{r['batch']}"] = {row["variant"]: row["vs_ort_fp32"] for row in r["rows"] if row["vs_ort_fp32"]}
        return out
    for key in dict.fromkeys(_setting(r) for r in doc["results"]):
        rows = {r["name"]: r.get("median_ms") for r in doc["results"] if _setting(r) == key and not r.get("error")}
        base = rows.get("ort_fp32")
        label = f"{key[0]}\nb{key[1]} t{key[2]}{' busy' if key[3] != 'idle' else ''}"
        out[label] = {n: ms / base for n, ms in rows.items() if base and ms}
    return out
