"""What the CLI prints fits an 80-column terminal: no line over 80 characters, no header cut to
``lay…``, no table cell wrapped onto more lines, no raw Python dict or empty field in a summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "models" / "cnn.onnx"
RULE = re.compile(r"^─+$")


def shiftc_at_80(*args) -> str:
    """``shiftc ARGS`` in a subprocess whose terminal is 80 columns wide (rich reads COLUMNS); its stdout."""
    env = dict(os.environ, COLUMNS="80", LINES="50")
    proc = subprocess.run([sys.executable, "-m", "shiftc.cli", *map(str, args)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def tables(text: str) -> list[tuple[str, str, list[str]]]:
    """Every table as (title, header line, row lines): a header is the line above a rule of ``─``; its
    rows are the lines below up to the first blank line or line starting with two spaces."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if RULE.match(line.strip()) and i >= 2:
            rows = []
            for row in lines[i + 1:]:
                if not row.strip() or row.startswith("  ") or RULE.match(row.strip()):
                    break
                rows.append(row)
            found.append((lines[i - 2], lines[i - 1], rows))
    return found


def check_fits(text: str) -> list[tuple[str, str, list[str]]]:
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, too_long
    found = tables(text)
    assert found, text
    for title, header, _ in found:
        assert "…" not in header, (title, header)
    return found


@pytest.mark.timeout(480)
def test_compile_tables_fit_80_columns(tmp_path):
    text = shiftc_at_80("compile", CNN, "-o", tmp_path / "art", "--shift-bits", "4", "--integer-only")
    found = {title: rows for title, _, rows in check_fits(text)}
    # one line per layer: a wrapped cell would add lines, each starting with blanks
    assert len(found["shift: 7 layers"]) == 7 and all(not r.startswith(" ") for r in found["shift: 7 layers"])
    integer_title = next(t for t in found if t.startswith("integerize: "))
    assert len(found[integer_title]) == int(integer_title.split()[1])
    assert "{'" not in text and "[]" not in text and " , " not in text, text  # no Python reprs, no empty fields
    for words in ("bits/weight", "KB", "error vs onnxruntime FP32", "%", "kernels tuned"):
        assert words in text, words


def test_inspect_tables_fit_80_columns():
    text = shiftc_at_80("inspect", CNN, "--passes")
    titles = [title for title, _, _ in check_fits(text)]
    assert titles == ["cnn.onnx: ONNX ops", "shift pass: 7 layer(s) would become shift-add kernels",
                      "Relax ops before / after canonicalize, fold_norm"]


def test_targets_table_fits_80_columns():
    (table,) = check_fits(shiftc_at_80("targets"))
    assert table[0] == "shiftc targets" and len(table[2]) >= 4 and table[1].split()[:2] == ["target", "toolchain"]


def test_integerize_rows_are_named_by_their_onnx_node_cut_to_fit():
    from shiftc.core import report_text

    node = "/features/features.1/conv/conv.0/conv.0.0/Conv"
    rows = [{"op": "quantize", "value": "input", "node": "", "scale": 0.0307},
            {"op": "conv2d", "value": "lv5", "node": node, "weights": "int8 per-channel"}]
    headers, cells, below, _ = report_text.row_table("integerize", rows)
    assert headers == ["ONNX node", "op", "weights", "scale"] and below == ["more columns with -v: value"]
    assert cells[0][:2] == ["input", "quantize"]  # shiftc's own value: no ONNX node, named by the value
    assert len(cells[1][0]) == report_text.NAME_WIDTH and cells[1][0] == "…" + node[-(report_text.NAME_WIDTH - 1):]
    assert report_text.row_table("integerize", rows, verbose=True)[1][1][0] == node
