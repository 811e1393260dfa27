"""``--accuracy-budget`` is checked on held-back calibration samples (issue 14): met, failed loudly
(exit 5, one line, no artifact), or kept with ``--budget-best-effort`` and reported as not met.
On the real Fashion-MNIST CNN with real training images as calibration data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from examples import fashion_mnist
from shiftc.cli import main
from shiftc.core.errors import CheckFailedError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # one CNN compile each, ~2 min on a loaded 2-core machine
CNN = Path(__file__).resolve().parents[1] / "examples" / "models" / "cnn.onnx"
N_CALIB = 16  # 8 to allocate on, 8 held back


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    train, _ = fashion_mnist.load("train")
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, input=fashion_mnist.preprocess(train[:N_CALIB])[:, None])  # (16, 1, 1, 28, 28)
    return path


def _compile(tmp_path, calib, *flags):
    out = tmp_path / "art"
    res = CliRunner().invoke(main, ["compile", str(CNN), "--calibrate", str(calib), "-o", str(out), "--json", *flags])
    return res, out


def _shift(res) -> dict:
    return next(s for s in json.loads(res.stdout)["report"]["stages"] if s["name"] == "shift")


def test_budget_met_on_held_back_samples(tmp_path, calib):
    res, out = _compile(tmp_path, calib, "--accuracy-budget", "0.05")
    assert res.exit_code == 0, res.stderr
    budget = _shift(res)["summary"]["budget"]
    assert budget["met"] and budget["held_back_samples"] == N_CALIB // 2
    assert 0 < budget["held_back_rel_l2"] <= 0.05
    assert (out / "meta.json").is_file()


def test_budget_not_met_fails_loudly_and_writes_nothing(tmp_path, calib):
    res, out = _compile(tmp_path, calib, "--accuracy-budget", "0.0005")
    assert res.exit_code == CheckFailedError.exit_code, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--accuracy-budget 0.0005 not met" in lines[0], res.stderr
    assert "held-back" in lines[0] and "--budget-best-effort" in lines[0]
    assert not out.exists() and not list(tmp_path.glob("art*"))


def test_budget_best_effort_keeps_the_build_and_says_so(tmp_path, calib):
    res, out = _compile(tmp_path, calib, "--accuracy-budget", "0.0005", "--budget-best-effort")
    assert res.exit_code == 0, res.stderr
    stage = _shift(res)
    budget = stage["summary"]["budget"]
    assert not budget["met"] and budget["best_effort"] and budget["held_back_rel_l2"] > 0.0005
    assert any("not met" in n and "--budget-best-effort" in n for n in stage["notes"])
    assert (out / "meta.json").is_file()
