"""Benchmarks time every runtime variant in its own process (shiftc.bench), ``shiftc bench``
compares an artifact with onnxruntime on its source model, and the README's speed tables are
exactly what benchmarks/render.py makes of the JSON they cite."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import onnxruntime
import psutil
import pytest
from click.testing import CliRunner

from helpers import json_schema
from benchmarks import render
from shiftc import bench
from shiftc.bench import machine
from shiftc.bench import variants as bench_variants
from shiftc.cli import main
from shiftc.frontend import TensorSpec

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "models" / "cnn.onnx"
SAMPLE = ROOT / "examples" / "models" / "cnn_sample.npz"
VIT = ROOT / "examples" / "models" / "vit.onnx"


@pytest.fixture(scope="module")
def cnn_fp32(compiled):
    return compiled(CNN).path


@pytest.fixture(scope="module")
def short_run(cnn_fp32, tmp_path_factory):
    """onnxruntime FP32 and shiftc FP32 on the Fashion-MNIST CNN: 2 rounds of 5 calls, 1 thread."""
    specs = [TensorSpec("input", (1, 1, 28, 28), "float32")]
    feeds = bench_variants.inputs_file(specs, tmp_path_factory.mktemp("bench") / "inputs.npz")
    variants = [bench.Variant("ort_fp32", "onnxruntime", CNN, feeds, 1), bench.Variant("tvm_fp32", "shiftc", cnn_fp32, feeds, 1)]
    steps: list[str] = []
    rows = bench.run_rounds(variants, threads=1, rounds=2, calls=5, warmup=1, progress=steps.append)
    return rows, steps


def test_driver_times_each_variant_in_its_own_process_rounds_rotated(short_run):
    rows, steps = short_run
    assert [s.split(" (")[0] for s in steps] == ["round 1/2: ort_fp32", "round 1/2: tvm_fp32", "round 2/2: tvm_fp32", "round 2/2: ort_fp32"]
    pids = [r["pid"] for row in rows for r in row["rounds"]]
    assert len(pids) == 4 and len(set(pids)) == 4 and os.getpid() not in pids
    for row in rows:
        assert row["error"] is None and row["calls"] == 10 and len(row["rounds"]) == 2
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["throughput_per_s"] == pytest.approx(1e3 / row["median_ms"])
        assert 0 < row["rss_before_load_mb"] <= row["peak_rss_mb"]
    ort, tvm = rows
    assert ort["settings"]["intra_op_num_threads"] == 1
    assert tvm["settings"]["TVM_NUM_THREADS"] == "1" and tvm["settings"]["tvm_pool_threads"] == 1
    # outputs compared with the first variant's: the same model, FP32 on both runtimes
    assert ort["max_abs_diff_vs_first"] == 0.0 and tvm["max_abs_diff_vs_first"] < 1e-4


def test_busy_core_keeps_one_pinned_process_spinning_while_the_block_runs():
    me = psutil.Process()
    with bench.busy_core() as cpu:
        assert cpu == max(os.sched_getaffinity(0))
        (child,) = me.children()
        assert child.cpu_affinity() == [cpu]
        before = child.cpu_times().user
        time.sleep(0.5)
        assert child.cpu_times().user - before > 0.02  # it computes (a shared machine gives it less than its core)
    assert not child.is_running()
    with bench.busy_core(False) as cpu:
        assert cpu is None and not me.children()


def test_measure_reports_the_calls_and_this_processs_peak_rss():
    result = bench.measure(lambda: time.sleep(0.002), batch=4, calls=6, warmup=1)
    assert result["calls"] == len(result["times_ms"]) == 6 and min(result["times_ms"]) >= 2.0
    assert result["throughput_per_s"] == pytest.approx(4e3 / result["median_ms"])
    assert result["peak_rss_mb"] == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=1) and result["busy_cpu"] is None


def test_cpuinfo_reads_x86_and_aarch64_listings():
    x86 = machine.cpuinfo("processor\t: 0\nmodel name\t: Some CPU\ncpu MHz\t\t: 2600.000\nflags\t\t: fpu avx2 avx512_vnni\n")
    assert x86 == {"model": "Some CPU", "mhz": 2600.0, "flags": ["fpu", "avx2", "avx512_vnni"]}
    arm = machine.cpuinfo("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd0c\n")
    assert arm["flags"] == ["fp", "asimd", "asimddp", "i8mm"] and arm["model"] == "0xd0c"


def test_machine_record_detects_this_cpu_and_versions():
    from shiftc.core.host import host_cpu

    info = machine.describe()
    flags = set(machine.cpuinfo()["flags"])
    assert info["cpu"]["isa"] == [f for f in machine.ISA_FLAGS if f in flags]
    assert info["cpu"]["llvm_cpu"] == host_cpu()
    assert info["packages"]["onnxruntime"] == onnxruntime.__version__
    assert re.fullmatch(r"[0-9a-f]{40}", info["git"]["commit"])  # tests run in a git checkout


def _bench(*args):
    return CliRunner().invoke(main, ["bench", *map(str, args)])


def test_shiftc_bench_against_onnxruntime_fp32_and_int8(cnn_fp32, tmp_path):
    out = tmp_path / "bench.json"
    res = _bench(cnn_fp32, "--against", "onnxruntime", "--onnx", CNN, "--calibrate", SAMPLE, "--repeats", 1,
                 "--calls", 3, "--warmup", 1, "--threads", 1, "--json-out", out)
    assert res.exit_code == 0, res.output
    doc = json_schema.validate("bench", json.loads(out.read_text()))
    assert doc["schema"] == bench.SCHEMA and doc["notes"] == []
    assert doc["settings"] == {"threads": 1, "rounds": 1, "calls": 3, "warmup": 1, "busy_core": False}
    assert [(r["name"], r["runtime"], r["batch"]) for r in doc["results"]] == [
        ("artifact", "shiftc", 1), ("onnxruntime fp32", "onnxruntime", 1), ("onnxruntime int8", "onnxruntime", 1)]
    assert all(r["error"] is None and r["calls"] == 3 for r in doc["results"])
    assert len({r["rounds"][0]["pid"] for r in doc["results"]}) == 3
    assert doc["results"][1]["max_abs_diff_vs_first"] < 1e-4  # the same model in FP32
    assert "QDQ per-channel s8s8, 8 calibration samples" in doc["results"][2]["note"]
    assert "shiftc bench: 1 thread(s), 1 rounds x 3 calls" in res.output and "onnxruntime int8 (batch 1): QDQ" in res.output


def test_shiftc_bench_says_when_int8_is_skipped(cnn_fp32):
    res = _bench(cnn_fp32, "--against", "onnxruntime", "--onnx", CNN, "--repeats", 1, "--calls", 2, "--warmup", 0, "--json")
    assert res.exit_code == 0, res.output
    doc = json_schema.validate("bench", json.loads(res.stdout))
    assert [r["name"] for r in doc["results"]] == ["artifact", "onnxruntime fp32"]
    assert doc["notes"] == ["onnxruntime int8 skipped: it needs calibration samples (--calibrate)"]
    assert doc["settings"]["threads"] == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("args, message", [
    (["--against", "onnxruntime"], "--against onnxruntime needs the source model"),
    (["--against", "onnxruntime", "--onnx", VIT], "is not the model"),
    (["--batch", "8"], "no artifact for batch 8"),
    (["--batch", "x"], "--batch takes comma-separated whole numbers"),
])
def test_shiftc_bench_refuses_bad_requests_in_one_line(cnn_fp32, args, message):
    res = _bench(cnn_fp32, *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_readme_speed_tables_are_rendered_from_the_json_they_cite():
    cited, body = render.readme_block((ROOT / "README.md").read_text())
    assert body == render.readme_markdown(json.loads((ROOT / cited).read_text()))


def test_a_run_renders_into_the_readme_block_and_latest_md(short_run, tmp_path):
    from benchmarks import run

    rows = [dict(r, model="fashion-cnn", size_mb=1.0) for r in short_run[0]]
    doc = bench.document(rows, {"threads": [1], "busy_core": [False], "rounds": 2, "calls": 5, "warmup": 1}, ["a note"])
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(doc))
    readme = render.update_readme((ROOT / "README.md").read_text(), "benchmarks/results/run.json", doc)
    cited, body = render.readme_block(readme)
    assert cited == "benchmarks/results/run.json" and body == render.readme_markdown(doc)
    ort, tvm = (r["median_ms"] for r in rows)
    assert f"| fashion-cnn | 1 | 1 | idle | {ort:.2f} (1.00×) | {tvm:.2f} ({tvm / ort:.2f}×) |" in body
    assert "- a note" in body and machine.describe()["cpu"]["llvm_cpu"] in body
    assert run.main(["--render", str(saved), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "latest.md").read_text() == render.full_markdown(doc)
    assert "| fashion-cnn | 1 | 1 | idle | tvm_fp32 |" in render.full_markdown(doc)


def test_shiftc_run_threads_sets_tvm_num_threads_before_the_run(cnn_fp32, monkeypatch):
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    res = CliRunner().invoke(main, ["run", str(cnn_fp32), "-i", str(ROOT / "examples" / "models" / "cnn_input.npy"), "--threads", "1"])
    assert res.exit_code == 0 and "argmax[0] 9" in res.output, res.output
    assert os.environ["TVM_NUM_THREADS"] == "1"
    bad = CliRunner().invoke(main, ["run", str(cnn_fp32), "-i", str(ROOT / "examples" / "models" / "cnn_input.npy"), "--threads", "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output
