"""Shipped tuning databases keyed by ISA level: key derivation from LLVM, fallback order, the
tensor-intrinsic guard and the report's note when nothing applies."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tvm")


def _target(cpu, triple="x86_64-linux-gnu", mattr=None):
    import tvm

    spec = {"kind": "llvm", "mtriple": triple, "mcpu": cpu}
    if mattr:
        spec["mattr"] = mattr
    return tvm.target.Target(spec)


@pytest.mark.parametrize("cpu,mattr,keys", [
    ("znver5", None, ["x86-64-v4-vnni", "x86-64-v4", "x86-64-v3"]),
    ("rocketlake", None, ["x86-64-v4-vnni", "x86-64-v4", "x86-64-v3"]),
    ("znver5", ["-avx512vnni"], ["x86-64-v4", "x86-64-v3"]),
    ("x86-64-v4", ["+avx512vnni"], ["x86-64-v4-vnni", "x86-64-v4", "x86-64-v3"]),
    ("skylake-avx512", None, ["x86-64-v4", "x86-64-v3"]),
    ("znver3", None, ["x86-64-v3"]),
    ("x86-64-v3", None, ["x86-64-v3"]),
    ("x86-64", None, []),
])
def test_x86_keys_and_fallback_order_come_from_llvm_features(cpu, mattr, keys):
    from shiftc.schedules import database

    target = _target(cpu, mattr=mattr)
    assert database.fallback_keys(target) == keys
    assert database.target_key(target) == (keys[0] if keys else "x86_64 below x86-64-v3")


@pytest.mark.parametrize("cpu,mattr,keys", [
    ("cortex-a76", ["+dotprod"], ["aarch64-dotprod", "aarch64"]),
    ("cortex-a76", None, ["aarch64-dotprod", "aarch64"]),
    ("cortex-a53", None, ["aarch64"]),
    ("cortex-a53", ["+dotprod"], ["aarch64-dotprod", "aarch64"]),
])
def test_aarch64_keys(cpu, mattr, keys):
    from shiftc.schedules import database

    assert database.fallback_keys(_target(cpu, "aarch64-linux-gnu", mattr)) == keys


def test_levels_match_llvms_own_level_cpus():
    """The declared level features are what LLVM's x86-64-v3/-v4 CPUs have, and nothing more is
    needed: each of LLVM's level CPUs gets exactly its own key."""
    from shiftc.schedules import database

    assert database.target_key(_target("x86-64-v3")) == "x86-64-v3"
    assert database.target_key(_target("x86-64-v4")) == "x86-64-v4"
    assert database.fallback_keys(_target("generic", "aarch64-linux-gnu")) == ["aarch64"]


def test_shipped_folders_are_isa_keys_with_safe_records():
    from shiftc.schedules import database

    keys = [p.name for p in database.SHIPPED.iterdir() if p.is_dir()]
    assert keys and all(database.level(k) is not None for k in keys), keys
    for k in keys:
        for folder in database.shipped_folders(k):
            assert database.check_records(folder, database.level(k).features) == [], folder


def _record(intrin_step):
    insts = [["GetSBlock", [], ["C", "main"], ["b0"]], intrin_step]
    return [0, [[insts, []], [1e-5], {"kind": "llvm", "mcpu": "znver5"}, []]]


@pytest.mark.parametrize("step,features,bad", [
    (["Tensorize", ["l9"], ["shiftc_dot_16x4_vnni", 1], []], {"avx2", "avx512bw", "avx512vnni"}, []),
    (["Tensorize", ["l9"], ["shiftc_dot_16x4_vnni", 1], []], {"avx2", "avx512bw"}, ["shiftc_dot_16x4_vnni"]),
    (["Tensorize", ["l9"], ["shiftc_dot_8x4_avx2", 1], []], {"avx2"}, []),
    (["Annotate", ["b0", '"dot_16x4_vnni"'], ["meta_schedule.auto_tensorize"], []], {"avx2"}, ["dot_16x4_vnni"]),
    (["Tensorize", ["l9"], ["someone_elses_intrin", 1], []], {"avx2", "avx512vnni"}, ["someone_elses_intrin"]),
])
def test_records_with_intrinsics_the_cpu_lacks_are_found(tmp_path, step, features, bad):
    from shiftc.schedules import database

    (tmp_path / database.RECORDS).write_text(json.dumps(_record(step)) + "\n")
    assert database.check_records(tmp_path, features) == bad


def test_a_vnni_record_is_never_replayed_on_a_cpu_without_vnni(tmp_path, monkeypatch):
    """A shipped v4-vnni folder holding a VNNI record is consulted by a VNNI CPU; on a v3 CPU it is
    not a fallback key at all, and a v3 folder holding one is skipped with a note (replaying it
    would abort the process in LLVM)."""
    from shiftc.schedules import database

    for key in ("x86-64-v4-vnni", "x86-64-v3"):
        folder = tmp_path / key / "m"
        folder.mkdir(parents=True)
        (folder / database.WORKLOAD).write_text("")
        step = ["Tensorize", ["l9"], ["shiftc_dot_16x4_vnni", 1], []]
        (folder / database.RECORDS).write_text(json.dumps(_record(step)) + "\n")
    monkeypatch.setattr(database, "SHIPPED", tmp_path)
    monkeypatch.setattr(database, "_union", lambda folders: folders)  # selection only: no TVM database
    sources, notes = database.resolve(None, _target("znver5"))  # has VNNI: both are safe
    assert [(s.label, s.key) for s in sources] == [("x86-64-v4-vnni/{m}", "x86-64-v4-vnni"), ("x86-64-v3/{m}", "x86-64-v3")]
    assert notes == []
    for cpu in ("skylake-avx512", "znver3"):  # no VNNI: the vnni key is not consulted, the v3 folder is skipped
        sources, notes = database.resolve(None, _target(cpu))
        assert sources == []
        assert any("x86-64-v3/m skipped" in n for n in notes)
        assert "no shipped tuning database for this CPU" in notes[-1]


def test_user_database_with_records_the_cpu_cannot_run_is_an_input_error(tmp_path, monkeypatch):
    from shiftc.core.errors import InputError
    from shiftc.schedules import database

    monkeypatch.setattr(database, "open_folder", lambda folder: object())  # the record below is no real trace

    (tmp_path / database.WORKLOAD).write_text("")
    step = ["Tensorize", ["l9"], ["shiftc_dot_16x4_vnni", 1], []]
    (tmp_path / database.RECORDS).write_text(json.dumps(_record(step)) + "\n")
    with pytest.raises(InputError, match="cannot run"):
        database.resolve(tmp_path, _target("x86-64-v3"))


def test_note_when_no_shipped_database_applies(monkeypatch, tmp_path):
    from shiftc.schedules import database

    monkeypatch.setattr(database, "SHIPPED", tmp_path)  # nothing shipped at all
    sources, notes = database.resolve(None, _target("rocketlake"))
    assert sources == []
    assert notes == ["no shipped tuning database for this CPU (key x86-64-v4-vnni, fallback x86-64-v4, x86-64-v3); "
                     "kernels use default schedules"]
    _, notes = database.resolve(None, _target("x86-64"))
    assert "key x86_64 below x86-64-v3" in notes[0]


CNN = "examples/models/cnn.onnx"


def _cnn_relax():
    from shiftc import calibration_data, frontend, pipeline
    from shiftc.core.report import Report

    loaded = frontend.load(CNN, {})
    samples = calibration_data.synthetic(loaded.inputs)
    return pipeline.run(frontend.to_relax(loaded), loaded, pipeline.PassOptions(), samples, Report(), lambda s: None, {})


@pytest.mark.slow
def test_shipped_cnn_database_applies_to_an_avx512_vnni_build():
    """x86-64-v4 + avx512vnni (no CPU name) finds the records tuned for znver5, under its ISA key."""
    from shiftc import schedules
    from shiftc.targets import get

    report = schedules.ScheduleReport()
    schedules.prepare(_cnn_relax(), _target("x86-64-v4", mattr=["+avx512vnni"]), None, report, get("x86", cpu="x86-64-v3").lowering())
    assert report.database.startswith("shipped:x86-64-v4-vnni/{fashion-cnn")
    assert len(report.tuned) > 0
    assert report.tuned_from["x86-64-v4-vnni/{fashion-cnn,mobilenetv2}"] == len(report.tuned)
    assert "shipped tuning database for key x86-64-v4-vnni" in report.notes[-1]


@pytest.mark.slow
def test_compile_json_reports_the_key_or_the_note(tmp_path):
    import subprocess
    import sys

    def schedule(cpu):
        res = subprocess.run([sys.executable, "-m", "shiftc.cli", "compile", CNN, "--cpu", cpu, "-o", str(tmp_path / cpu), "--json"],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        stages = json.loads(res.stdout)["report"]["stages"]
        return next(s for s in stages if s["name"] == "schedule")

    v3 = schedule("znver3")  # AVX2 only: falls to the x86-64-v3 key
    assert v3["summary"]["database"] == "shipped:x86-64-v3/{fashion-cnn}" and v3["summary"]["tuned"]
    base = schedule("x86-64")  # below every level
    assert base["summary"]["database"] is None and base["summary"]["tuned"] == []
    assert any("no shipped tuning database for this CPU" in n for n in base["notes"])
