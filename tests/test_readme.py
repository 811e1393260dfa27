"""The README's first command (after setup) and its test command are the ones CI and users run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_setup_and_test_commands_and_ci_runs_the_test_command():
    install, tests = readme_commands()
    assert install.startswith("bash scripts/setup.sh && ")
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_quickstart_compiles_and_runs_the_shipped_example(tmp_path):
    install, _ = readme_commands()
    bindir = Path(sys.executable).parent
    for step in install.split(" && ")[1:]:
        argv = shlex.split(step.replace(".venv/bin/", f"{bindir}/").replace("out/cnn", str(tmp_path / "cnn")))
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    # the shipped input is a test-set ankle boot (label 9), which the CNN classifies correctly
    assert "logits: float32[1, 10]" in proc.stdout and "argmax[0] 9" in proc.stdout


def tour_commands() -> list[str]:
    section = (REPO / "README.md").read_text().split("## A tour on the shipped example", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.timeout(900)
def test_the_tour_runs_every_command_as_written(tmp_path):
    """Each line of the README's tour, in order, as a user pastes it (out/ -> a temp folder)."""
    bindir = Path(sys.executable).parent
    commands = tour_commands()
    assert {shlex.split(c)[1] for c in commands} >= {"targets", "inspect", "compile", "run", "verify", "report", "bench"}
    for line in commands:
        argv = shlex.split(line.replace(".venv/bin/", f"{bindir}/").replace("out/", f"{tmp_path}/"))
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
        if argv[1] == "run":  # the shipped input is a test-set ankle boot (label 9)
            assert "argmax[0] 9" in proc.stdout, (line, proc.stdout)
    assert (tmp_path / "cnn-int8.html").stat().st_size > 10_000
