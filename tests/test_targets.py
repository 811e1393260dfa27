"""What each target declares (options, lowering, toolchain packages, running here, comparison) and
how the CLI and the API use it."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

from shiftc import targets
from shiftc.cli import main
from shiftc.core.errors import InputError
from shiftc.schedules import shift_form
from shiftc.targets import arm, cuda

from conftest import make_model


@pytest.mark.parametrize("name", list(targets.REGISTRY))
def test_declared_options_are_the_constructor_fields(name):
    cls = targets.REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    assert set(cls.option_names()) == set(fields)
    for spec in cls.option_specs:
        if spec.default is not None:
            assert fields[spec.name].default == spec.default, spec.name
    tgt = targets.get(name)
    assert targets.get(name, **tgt.options()).options() == tgt.options()  # as an artifact reloads it
    assert tgt.describe()["options"] == tgt.options()


def test_option_values_are_checked_against_their_specs():
    with pytest.raises(InputError, match="unknown arm cpu 'pentium'"):
        targets.get("arm", cpu="pentium")
    with pytest.raises(InputError, match="unknown cuda arch 'sm_10'"):
        targets.get("cuda", arch="sm_10")
    with pytest.raises(InputError, match="unknown vta nbuf 3"):
        targets.get("vta", nbuf=3)
    with pytest.raises(InputError, match="cores must be of type int"):
        targets.get("x86", cores="4")
    with pytest.raises(InputError, match="does not take option"):
        targets.get("x86", arch="sm_80")
    assert targets.parse_options("vta", {"nbuf": "1", "cores": "3"}) == {"nbuf": 1, "cores": 3}
    with pytest.raises(InputError, match="does not take --arch"):
        targets.parse_options("x86", {"arch": "sm_80"})


def test_each_target_declares_its_lowering():
    x86, vta, arm_ = targets.get("x86").lowering(), targets.get("vta").lowering(), targets.get("arm").lowering()
    assert x86.cpu and x86.int8_dot and x86.shift_form == shift_form.int_kernel_form("x86")
    assert vta == x86  # its host is the x86 target
    assert arm_.cpu and not arm_.int8_dot and arm_.shift_form == shift_form.int_kernel_form("arm")
    assert targets.get("cuda").lowering() is None  # its own schedule hook


def test_the_x86_integer_form_is_read_from_the_measured_choice(monkeypatch):
    monkeypatch.setattr(shift_form, "int_kernel_form", lambda name: "shift")
    assert targets.get("x86").lowering().shift_form == "shift"
    monkeypatch.setattr(shift_form, "int_kernel_form", lambda name: "dot" if name == "x86" else "shift")
    assert targets.get("x86").lowering().shift_as_dot and not targets.get("arm").lowering().shift_as_dot


def test_running_here_and_emulation(monkeypatch):
    monkeypatch.setattr(cuda, "gpu_present", lambda: False)
    assert targets.get("cuda").can_run_here() == "no GPU"
    monkeypatch.setattr(cuda, "gpu_present", lambda: True)
    assert targets.get("cuda").can_run_here() is None
    monkeypatch.setattr(arm, "host_is_aarch64", lambda: False)
    assert targets.get("arm").emulator() == "qemu"
    monkeypatch.setattr(arm.Tool, "path", lambda self: None)
    assert targets.get("arm").can_run_here() == "qemu-aarch64 missing: apt-get install qemu-user"
    monkeypatch.setattr(arm, "host_is_aarch64", lambda: True)
    assert targets.get("arm").emulator() is None and targets.get("arm").can_run_here() is None
    assert targets.get("x86").emulator() is None


def test_comparisons():
    assert targets.get("x86").comparison() == targets.Comparison()  # onnxruntime within --tolerance
    vta = targets.get("vta").comparison()
    assert (vta.reference, vta.options, vta.tolerance) == ("x86", {"integer_only": True, "requant": "pow2"}, 0)
    assert vta.describe() == "x86 --integer-only --requant pow2, bit for bit"


def test_targets_apt_lists_packages():
    runner = CliRunner()
    default = runner.invoke(main, ["targets", "--apt"])
    assert default.exit_code == 0, default.output
    packages = default.stdout.split()
    assert packages == sorted(set(packages))
    assert {"g++", "g++-aarch64-linux-gnu", "qemu-user", "iverilog", "verilator", "yosys"} <= set(packages)
    assert "nvidia-cuda-toolkit" not in packages  # cuda only when named
    assert runner.invoke(main, ["targets", "--apt", "cuda"]).stdout.split() == ["g++", "nvidia-cuda-toolkit"]
    assert runner.invoke(main, ["targets", "--apt", "arm"]).stdout.split() == ["g++-aarch64-linux-gnu", "qemu-user"]
    unknown = runner.invoke(main, ["targets", "--apt", "riscv"])
    assert unknown.exit_code == 2 and "unknown target 'riscv'" in unknown.stderr


@pytest.fixture(scope="module")
def small_path(tmp_path_factory):
    rng = np.random.default_rng(3)
    model = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "m"], ["y"], transB=1)],
        [("x", [1, 3, 8, 8])], [("y", [1, 5])],
        {"w": (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "b": np.zeros(16, np.float32),
         "m": (rng.standard_normal((5, 1024)) * 0.05).astype(np.float32)},
    )  # fmt: skip
    path = tmp_path_factory.mktemp("targets") / "small.onnx"
    onnx.save(model, path)
    return path


def _compile(path, out, *flags):
    return CliRunner().invoke(main, ["compile", str(path), "-o", str(out), "--json", *flags])


def test_x86_cores_default_to_the_build_host_and_do_not_change_the_code(small_path, tmp_path):
    default = _compile(small_path, tmp_path / "default")
    assert default.exit_code == 0, default.output
    target = json.loads(default.stdout)["target"]
    assert target["options"]["cores"] == target["tvm"]["num-cores"] == len(os.sched_getaffinity(0))
    five = _compile(small_path, tmp_path / "five", "--cores", "5")
    assert five.exit_code == 0, five.output
    assert json.loads(five.stdout)["target"]["tvm"]["num-cores"] == 5
    assert (tmp_path / "five" / "model.so").read_bytes() == (tmp_path / "default" / "model.so").read_bytes()


def test_vta_options_reach_the_target_from_the_cli(small_path, tmp_path):
    from shiftc.targets.vta.config import load_config

    single = _compile(small_path, tmp_path / "nbuf1", "-t", "vta", "--nbuf", "1")
    assert single.exit_code == 0, single.output
    assert json.loads(single.stdout)["target"]["options"]["nbuf"] == 1
    slow_dram = dict(load_config().to_dict(), DRAM_LATENCY_CYCLES=1000)
    (tmp_path / "cfg.json").write_text(json.dumps(slow_dram))
    custom = _compile(small_path, tmp_path / "cfg", "-t", "vta", "--vta-config", str(tmp_path / "cfg.json"))
    assert custom.exit_code == 0, custom.output
    layers = json.loads((tmp_path / "cfg" / "vta" / "layers.json").read_text())
    assert layers["config"]["DRAM_LATENCY_CYCLES"] == 1000

    def cycles(res):
        return next(s for s in json.loads(res.stdout)["report"]["stages"] if s["name"] == "vta")["summary"]["total_cycles"]

    default = _compile(small_path, tmp_path / "nbuf2", "-t", "vta")
    assert cycles(custom) > cycles(default) > 0
    (tmp_path / "bad.json").write_text(json.dumps(dict(slow_dram, LOG_BATCH=1)))
    bad = _compile(small_path, tmp_path / "bad", "-t", "vta", "--vta-config", str(tmp_path / "bad.json"))
    assert bad.exit_code == 2 and "--vta-config" in bad.stderr and "BATCH" in bad.stderr


@pytest.mark.parametrize("argv, message", [
    (["compile", "-t", "x86", "--arch", "sm_80"], "target 'x86' does not take --arch (its options: --cpu, --cores, --float-shift-form)"),
    (["compile", "-t", "vta", "--nbuf", "3"], "unknown vta nbuf 3; known: 1, 2"),
    (["compile", "-t", "vta", "--nbuf", "two"], "--nbuf takes a value of type int"),
    (["tune", "-t", "cuda", "--cpu", "znver5", "--trials", "1", "--db", "db"], "target 'cuda' does not take --cpu"),
    (["matrix", "--targets", "x86,arm", "--nbuf", "1"], "no target of x86, arm takes --nbuf"),
])  # fmt: skip
def test_an_option_the_target_does_not_declare_is_a_one_line_input_error(small_path, tmp_path, argv, message):
    command, *rest = argv
    extra = ["-o", str(tmp_path / "out")] if command == "compile" else []
    res = CliRunner().invoke(main, [command, str(small_path), *rest, *extra])
    assert res.exit_code == 2, res.output
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
