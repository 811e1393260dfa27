"""Every ``--json`` output follows its published, versioned schema (docs/schema/, docs/json.md):
the real commands on the example CNN, validated with jsonschema. (``matrix`` and ``tune`` are
validated where tests/test_matrix.py and tests/test_schedules.py run them.)"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from helpers import json_schema
from shiftc.cli import JSON_SCHEMA_VERSION, main

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "models" / "cnn.onnx"


def cli_json(*args) -> dict:
    res = CliRunner().invoke(main, [*map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_every_json_command_has_a_schema_of_the_current_version():
    with_json = {name for name, cmd in main.commands.items() if any("--json" in p.opts for p in cmd.params)}
    published = {p.name.removesuffix(".schema.json") for p in json_schema.SCHEMAS.glob("*.schema.json")}
    assert with_json == published
    for name in published:
        assert json_schema.schema(name)["properties"]["schema_version"]["const"] == JSON_SCHEMA_VERSION


def test_compile_json_follows_its_schema(tmp_path):
    doc = json_schema.validate("compile", cli_json("compile", CNN, "-o", tmp_path / "art", "--shift-bits", "4"))
    assert doc["schema_version"] == JSON_SCHEMA_VERSION
    shift = next(s for s in doc["report"]["stages"] if s["name"] == "shift")
    assert shift["rows"] and shift["error"]["samples"] > 0


def test_run_and_verify_json_follow_their_schemas(compiled):
    artifact = compiled(CNN).path
    run = json_schema.validate("run", cli_json("run", artifact, "-i", ROOT / "examples" / "models" / "cnn_input.npy"))
    assert run["outputs"]["logits"]["shape"] == [1, 10]
    verify = json_schema.validate("verify", cli_json("verify", artifact))
    assert verify["ok"] and len(verify["artifact_id"]) == 64


def test_python_report_to_json_is_the_compile_report_as_a_string(compiled):
    model = compiled(CNN)
    text = model.report.to_json()
    assert isinstance(text, str) and json.loads(text) == model.meta["report"] == model.report.to_dict()


def test_inspect_and_targets_json_follow_their_schemas():
    inspect = json_schema.validate("inspect", cli_json("inspect", CNN, "--passes"))
    assert inspect["total_macs"] > 0 and inspect["relax_ops"]["stages"] == ["canonicalize", "fold_norm"]
    targets = json_schema.validate("targets", cli_json("targets"))
    assert "x86" in {t["name"] for t in targets["targets"]}


def test_a_document_off_its_schema_is_refused():
    doc = cli_json("targets")
    doc["targets"][0]["ready"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        json_schema.validate("targets", doc)
