"""The architecture holds: one-way layers (import-linter contracts in setup.cfg), click only in the
CLI, a NumPy-only reference, and short functions.

import-linter reads the package from disk, where ``passes/``, ``schedules/`` and ``targets/`` sit
beside ``shiftc/`` (setup.cfg's ``package_dir``). ``_stage`` lays out the installed shape,
``shiftc/{passes,schedules,targets}``, with symbolic links, so the contracts see every module.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("passes", "schedules", "targets")
MAX_FUNCTION_LINES = 80


def _stage(dest: Path, copy: tuple[str, ...] = ()) -> Path:
    """``dest/shiftc`` as installed: links to the sources, real copies of the folders in ``copy``."""
    pkg = dest / "shiftc"
    pkg.mkdir(parents=True)
    for item in (ROOT / "shiftc").iterdir():
        if item.name != "__pycache__":
            (pkg / item.name).symlink_to(item)
    for name in MAPPED:
        if name in copy:
            shutil.copytree(ROOT / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (pkg / name).symlink_to(ROOT / name)
    return dest


def _lint(staged: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ, PYTHONPATH=str(staged))
    return subprocess.run([str(exe), "--no-cache", "--config", str(ROOT / "setup.cfg")], cwd=staged, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept(tmp_path):
    res = _lint(_stage(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 kept, 0 broken" in res.stdout


def test_a_pass_that_imports_the_cli_breaks_the_layers(tmp_path):
    staged = _stage(tmp_path, copy=("passes",))
    victim = staged / "shiftc" / "passes" / "fold_norm.py"
    victim.write_text(victim.read_text() + "\n\ndef _bad():\n    from shiftc import cli  # noqa: F401\n")
    res = _lint(staged)
    assert res.returncode != 0
    assert "BROKEN" in res.stdout and "shiftc.passes.fold_norm -> shiftc.cli" in res.stdout


def test_a_pass_that_imports_click_breaks_the_cli_contract(tmp_path):
    staged = _stage(tmp_path, copy=("passes",))
    victim = staged / "shiftc" / "passes" / "canonicalize.py"
    victim.write_text("import click  # noqa: F401\n" + victim.read_text())
    res = _lint(staged)
    assert res.returncode != 0 and "click and rich only in the command line BROKEN" in res.stdout


def _functions(paths):
    for base in paths:
        for path in sorted(base.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"


def test_no_function_in_the_package_is_longer_than_the_limit():
    sizes = sorted(_functions([ROOT / "shiftc", *(ROOT / n for n in MAPPED)]), reverse=True)
    assert sizes, "no functions found"
    too_long = [f"{n} lines: {where}" for n, where in sizes if n >= MAX_FUNCTION_LINES]
    assert not too_long, "\n".join(too_long)
