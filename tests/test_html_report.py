"""``shiftc report``: the HTML page of an artifact's compile report, for a 4-bit shift + integer-only
CNN and an FP32 one: its sections, inlined PNG plots (decoded and checked), escaping, the optional
matrix section, and the page rendered in a real headless browser (chromium) with every image loaded."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shiftc import html_report

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "models" / "cnn.onnx"
SAMPLE = ROOT / "examples" / "models" / "cnn_sample.npz"
SECTIONS = ("header", "errors", "shift", "integerize", "calibration", "schedule", "sizes", "matrix")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG_SRC = re.compile(r'<img src="([^"]*)"')


@pytest.fixture(scope="module")
def shift_int(compiled):
    return compiled(CNN, "x86", calibration=SAMPLE, shift_bits=4, integer_only=True).path


@pytest.fixture(scope="module")
def fp32(compiled):
    return compiled(CNN, "x86").path


def images(page: str) -> list[np.ndarray]:
    """Every <img>: a base64 PNG data URI, decoded by matplotlib into pixels."""
    from matplotlib.image import imread

    out = []
    for src in IMG_SRC.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        out.append(imread(io.BytesIO(data), format="png"))
    return out


def assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in page


def test_shift_integer_report_has_every_section_and_real_plots(shift_int):
    meta = json.loads((shift_int / "meta.json").read_text())
    page = html_report.build(shift_int)
    assert_self_contained(page)
    from shiftc.artifact import artifact_id

    assert artifact_id(shift_int) in page and meta["tvm_version"] in page and meta["shiftc_version"] in page
    shift = next(s for s in meta["report"]["stages"] if s["name"] == "shift")
    for row in shift["rows"]:  # every layer in the table, its errors as percentages
        assert f"<td>{row['layer']}</td>" in page
        assert f"{100 * row['output_rel_l2']:.2f}%" in page and f"{100 * row['weight_rel_l2']:.2f}%" in page
    integerize = next(s for s in meta["report"]["stages"] if s["name"] == "integerize")
    assert f"{100 * integerize['error']['rel_l2']:.2f}%" in page
    scale = next(r["scale"] for r in integerize["rows"] if "scale" in r)  # the recorded calibration scale
    section = page[page.index('id="calibration"'):page.index('id="schedule"')]
    assert f"{scale:.4g}" in section and "not recorded" not in section
    assert "shipped:" in page[page.index('id="schedule"'):]  # the database used
    size = (shift_int / "model.so").stat().st_size
    assert html_report.human_bytes(size) in page and "KB" in page
    pictures = images(page)
    assert len(pictures) == 3  # stage errors, shift per-layer errors, shift bits per layer
    for pixels in pictures:  # a real plot: a sizeable image with many distinct colours
        assert pixels.shape[0] > 150 and pixels.shape[1] > 300
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20


def test_fp32_report_says_each_missing_section_in_one_line(fp32):
    page = html_report.build(fp32)
    assert_self_contained(page)
    assert images(page) == []
    for line in ("No lossy stage in this build", "No shift pass in this build", "No integerize pass in this build",
                 "No calibration in this build", "No matrix result given", "Weights are stored as FP32"):
        assert page.count(line) == 1, line
    assert "Schedule sources" in page and "naive (no rule applied)" in page


def test_strings_from_meta_json_are_escaped(fp32, tmp_path):
    folder = tmp_path / "art"
    shutil.copytree(fp32, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["report"]["model"] = "<script>alert(1)</script>.onnx"
    meta["report"]["stages"][-1]["summary"]["notes"] = ['<img src="http://x/">']
    (folder / "meta.json").write_text(json.dumps(meta))
    page = html_report.build(folder)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.onnx" in page
    assert "http://x/" in page and '<img src="http' not in page  # shown as text, never as an element


def test_matrix_section_lists_the_rows(fp32, tmp_path):
    rows = [{"target": "x86", "built": True, "build_note": "", "build_s": 12.5, "ran": True, "run_note": "ran",
             "run_s": 0.004, "max_error": 3.2e-6, "size_bytes": 2_500_000, "ok": True, "compared_with": "onnxruntime FP32"},
            {"target": "arm", "built": False, "build_note": "no cross compiler", "build_s": None, "ran": False,
             "run_note": "", "run_s": None, "max_error": None, "size_bytes": None, "ok": False, "compared_with": ""}]
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps({"model": "cnn.onnx", "tolerance": 1e-4, "ok": False, "rows": rows}))
    page = html_report.build(fp32, json.loads(matrix.read_text()))
    section = page[page.index('id="matrix"'):]
    assert "3.20e-06" in section and "2.50 MB" in section and "4.00 ms" in section and "12.5 s" in section
    assert "no cross compiler" in section and '<td class="bad">no</td>' in section and "FAILED" in section


def test_cli_report_and_compile_report(shift_int, tmp_path):
    from click.testing import CliRunner

    from shiftc.cli import main

    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(shift_int), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text() == html_report.build(shift_int)
    art, page = tmp_path / "fp32", tmp_path / "fp32.html"
    res = CliRunner().invoke(main, ["compile", str(CNN), "-o", str(art), "--report", str(page), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["report_html"] == str(page)
    assert page.read_text() == html_report.build(art)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_page_renders_in_a_headless_browser_with_every_image_loaded(shift_int, tmp_path):
    page = tmp_path / "report.html"
    html_report.write(shift_int, page)
    n_images = len(IMG_SRC.findall(page.read_text()))
    assert n_images == 3
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'<body[^>]*data-loaded="(\d+)"', dom.stdout)
    assert loaded, "the page's onload script did not run"
    assert int(loaded.group(1)) == n_images  # every <img> complete with a natural width > 0
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in dom.stdout
    assert "Shift pass: per-layer error and bits" in dom.stdout and "conv2d_0" in dom.stdout
    shot = tmp_path / "shot.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    from matplotlib.image import imread

    data = shot.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (3000, 1200) and pixels.std() > 0.05
