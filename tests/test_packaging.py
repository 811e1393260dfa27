"""passes/, schedules/ and targets/ install as shiftc.* in editable and wheel installs, never top-level."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import importlib.util, shiftc.passes, shiftc.passes.integerize, shiftc.schedules, shiftc.targets, shiftc.targets.vta;"
    "print(shiftc.passes.__file__);"
    "print([m for m in ('passes', 'schedules', 'targets') if importlib.util.find_spec(m)])"
)


def probe(python: str, cwd: Path) -> tuple[str, str]:
    out = subprocess.run([python, "-c", PROBE], cwd=cwd, capture_output=True, text=True, check=True).stdout
    first, second = out.strip().splitlines()
    return first, second


def test_editable_install_maps_folders_into_shiftc(tmp_path):
    path, top_level = probe(sys.executable, tmp_path)
    assert Path(path) == REPO / "passes" / "__init__.py"
    assert top_level == "[]"


@pytest.mark.slow
def test_wheel_install_maps_folders_into_shiftc(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("shiftc-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run(
        [str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    # dependencies come from this environment; the wheel's own files from its install
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    path, top_level = probe(str(venv / "bin/python"), tmp_path)
    assert Path(path).is_relative_to(site) and path.endswith("shiftc/passes/__init__.py")
    assert top_level == "[]"
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    res = subprocess.run([str(venv / "bin/shiftc"), "targets", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0 and '"x86"' in res.stdout
