"""Adding a target is one new file plus one registry line: a throwaway ``toy`` target, written to a
temporary folder and registered with one line, compiles, lists and runs through the unchanged CLI,
with its own ``--toy-level`` option."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

import shiftc
from shiftc import targets
from shiftc.cli import main

from conftest import ort_run

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "models" / "cnn.onnx"

TOY_TARGET = '''
"""A toy target: x86 plus a level it writes into its artifact."""
from dataclasses import dataclass

from shiftc.targets.base import TargetOption
from shiftc.targets.x86 import X86


@dataclass
class Toy(X86):
    toy_level: int = 1
    name = "toy"
    summary = "x86 with a toy level (a test plugin)"
    option_specs = X86.option_specs + (TargetOption("toy_level", int, "how toy", choices=(1, 2, 3), default=1),)

    def build(self, executable, out_dir):
        files = super().build(executable, out_dir)
        (out_dir / "toy.txt").write_text(f"level {self.toy_level}\\n")
        return files + ["toy.txt"]
'''


def test_a_new_target_is_one_file_plus_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "toy_target.py").write_text(TOY_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy_target")
    monkeypatch.setitem(targets.REGISTRY, "toy", toy.Toy)  # the one registry line
    runner = CliRunner()

    out = tmp_path / "art"
    res = runner.invoke(main, ["compile", str(CNN), "--target", "toy", "--toy-level", "3", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["target"]["name"] == "toy" and meta["target"]["options"]["toy_level"] == 3
    assert "toy.txt" in meta["files"] and (out / "toy.txt").read_text() == "level 3\n"
    x = np.load(ROOT / "examples" / "models" / "cnn_input.npy")
    got = shiftc.load(out).run(x)
    np.testing.assert_allclose(list(got.values())[0], ort_run(onnx.load(str(CNN)), {"input": x})[0], rtol=1e-4, atol=1e-4)

    listed = runner.invoke(main, ["targets", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {r["name"]: r["summary"] for r in json.loads(listed.stdout)["targets"]}["toy"] == toy.Toy.summary
    assert "--toy-level" in runner.invoke(main, ["compile", "--help"]).stdout

    refused = runner.invoke(main, ["compile", str(CNN), "--target", "x86", "--toy-level", "3", "-o", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--toy-level" in refused.stderr and "'x86'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    wrong = runner.invoke(main, ["compile", str(CNN), "--target", "toy", "--toy-level", "7", "-o", str(tmp_path / "y")])
    assert wrong.exit_code == 2 and "unknown toy toy_level 7" in wrong.stderr

    monkeypatch.undo()  # the registry line removed: the option is gone with it
    gone = runner.invoke(main, ["compile", str(CNN), "--target", "toy", "--toy-level", "3", "-o", str(tmp_path / "z")])
    assert gone.exit_code == 2 and "No such option" in gone.stderr
