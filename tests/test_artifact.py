"""The artifact: contents, hashes, save/load round trip, determinism, CLI run."""

from __future__ import annotations

import json

import numpy as np
import onnx
from click.testing import CliRunner

import shiftc
from shiftc import artifact
from shiftc.cli import main
from conftest import ort_run


def test_meta_records_io_target_versions_and_hashes(tmp_path, conv_model):
    out = tmp_path / "a"
    shiftc.compile(conv_model, "x86", input_shapes={"x": (2, 3, 8, 8)}, output=out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["inputs"] == [{"name": "x", "shape": [2, 3, 8, 8], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "y", "shape": [2, 4, 8, 8], "dtype": "float32"}]
    assert meta["target"]["name"] == "x86" and meta["target"]["tvm"]["kind"] == "llvm"
    assert meta["shiftc_version"] == shiftc.__version__ and meta["tvm_version"].startswith("0.27")
    assert set(meta["files"]) == {"model.so"}
    assert meta["files"]["model.so"] == artifact.sha256(out / "model.so")


def test_save_load_round_trip(tmp_path, conv_model, rng):
    compiled = shiftc.compile(conv_model, "x86", input_shapes={"x": (1, 3, 8, 8)})
    saved = compiled.save(tmp_path / "saved")
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    again = shiftc.load(saved).run(x)["y"]
    np.testing.assert_array_equal(again, compiled.run(x)["y"])
    np.testing.assert_allclose(again, ort_run(conv_model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_same_inputs_give_the_same_bytes(tmp_path, conv_model):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        shiftc.compile(conv_model, "x86", input_shapes={"x": (1, 3, 8, 8)}, output=out, cpu="x86-64-v3")
    assert (a / "model.so").read_bytes() == (b / "model.so").read_bytes()
    assert (a / "meta.json").read_bytes() == (b / "meta.json").read_bytes()


def test_recompiling_replaces_an_existing_artifact(tmp_path, conv_model):
    out = tmp_path / "a"
    shiftc.compile(conv_model, "x86", input_shapes={"x": (1, 3, 8, 8)}, output=out)
    shiftc.compile(conv_model, "x86", input_shapes={"x": (3, 3, 8, 8)}, output=out)
    assert shiftc.load(out).inputs[0].shape == (3, 3, 8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_cli_compile_run_json(tmp_path, conv_model, rng):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, str(path))
    runner = CliRunner()
    res = runner.invoke(main, ["compile", str(path), "-o", str(tmp_path / "art"), "--input-shape", "x=1x3x8x8", "--json"])
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["outputs"][0]["name"] == "y" and "model.so" in info["files"]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    res = runner.invoke(main, ["run", str(tmp_path / "art"), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "o.npz"), "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["outputs"]["y"]["shape"] == [1, 4, 8, 8]
    np.testing.assert_allclose(np.load(tmp_path / "o.npz")["y"], ort_run(conv_model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_targets_command_lists_x86_ready():
    res = CliRunner().invoke(main, ["targets", "--json"])
    rows = {r["name"]: r for r in json.loads(res.stdout)["targets"]}
    assert rows["x86"]["ready"] is True


def test_inspect_counts_conv_macs(tmp_path, conv_model):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, str(path))
    res = CliRunner().invoke(main, ["inspect", str(path), "--input-shape", "x=2x3x8x8", "--json"])
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["ops"] == {"Conv": 1, "Relu": 1}
    assert info["macs_by_op"]["Conv"] == 2 * 4 * 8 * 8 * 3 * 3 * 3
