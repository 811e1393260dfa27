"""Publishing an artifact (issue 16, item 5): replacing ``-o`` swaps the old and the new folder in
one step (``renameat2(RENAME_EXCHANGE)``), so ``-o`` holds a complete artifact at every moment; a
writer lock beside ``-o`` makes a second concurrent compile to it fail at once (exit 2) instead of
one result being silently lost; a lock left by a dead process does not block.

Most cases publish small hand-made artifacts (no TVM); the compile cases use the CNN example.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

import shiftc
from shiftc import artifact
from shiftc.cli import main

ROOT = Path(__file__).resolve().parents[1]
META = {
    "inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
    "outputs": [{"name": "y", "shape": [1, 4], "dtype": "float32"}],
    "target": {"name": "x86", "options": {}},
}


def publish(dest: Path, payload: bytes, **kw) -> str:
    """Publish a small artifact (one file holding ``payload``) to ``dest``; returns its id."""
    with artifact.staging(dest, **kw) as tmp:
        (tmp / "model.so").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "params.bin").write_bytes(payload[::-1])
        artifact.write_meta(tmp, META)
    return artifact.artifact_id(dest)


def leftovers(parent: Path, keep: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != keep)


# ---------------------------------------------------------------- the exchange


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux-only; elsewhere the two-rename fallback is used")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "f").write_text("a"), (b / "f").write_text("b")
    assert artifact._exchange(a, b), "RENAME_EXCHANGE unsupported on the test file system"
    assert (a / "f").read_text() == "b" and (b / "f").read_text() == "a"


def test_replacing_keeps_only_the_new_artifact(tmp_path):
    dest = tmp_path / "out"
    publish(dest, b"old")
    new = publish(dest, b"new")
    assert artifact.verify(dest, expect=new)
    assert (dest / "model.so").read_bytes() == b"new"
    assert leftovers(tmp_path, "out") == []  # no temporary folder, no old copy, no lock file


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_failed_removal_of_the_old_folder_leaves_the_new_artifact(tmp_path, monkeypatch, exchange):
    """Interrupt a publish after the swap, at the removal of the old folder: ``-o`` holds the new,
    complete artifact (either way; the fallback's weak spot is between its two renames)."""
    dest = tmp_path / "out"
    old = publish(dest, b"old")
    if not exchange:
        monkeypatch.setattr(artifact, "_exchange", lambda a, b: False)

    def killed(folder):
        assert artifact.artifact_id(folder) == old  # what is being removed is the old artifact
        raise KeyboardInterrupt("killed while removing the old folder")

    monkeypatch.setattr(artifact, "_remove_old", killed)
    with pytest.raises(KeyboardInterrupt):
        publish(dest, b"new")
    assert (dest / "model.so").read_bytes() == b"new"
    artifact.verify(dest)
    assert not artifact.lock_path(dest).exists()


def test_an_interrupted_build_leaves_the_old_artifact(tmp_path):
    dest = tmp_path / "out"
    old = publish(dest, b"old")
    with pytest.raises(RuntimeError):
        with artifact.staging(dest) as tmp:
            (tmp / "model.so").write_bytes(b"half")
            raise RuntimeError("build failed")
    artifact.verify(dest, expect=old)
    assert leftovers(tmp_path, "out") == []


KILL_AT_REMOVAL = """
import os, signal, sys
from pathlib import Path
from shiftc import artifact
sys.path.insert(0, {tests!r})
from test_atomic_publish import publish
artifact._remove_old = lambda folder: os.kill(os.getpid(), signal.SIGKILL)
publish(Path({dest!r}), b"new")
"""


def test_sigkill_between_the_steps_leaves_a_verifiable_artifact_and_no_blocking_lock(tmp_path):
    """A real kill (SIGKILL) after the swap and before the old folder is removed: ``-o`` holds the
    new artifact; the old one and the lock file are left behind, and the next publish is not blocked."""
    dest = tmp_path / "out"
    publish(dest, b"old")
    code = KILL_AT_REMOVAL.format(tests=str(ROOT / "tests"), dest=str(dest))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (dest / "model.so").read_bytes() == b"new"
    artifact.verify(dest)
    assert artifact.lock_path(dest).exists()  # stale: its holder is dead
    newest = publish(dest, b"newest")
    artifact.verify(dest, expect=newest)
    assert not artifact.lock_path(dest).exists()


def test_out_holds_an_artifact_at_every_moment(tmp_path):
    """A reader checking ``-o/meta.json`` in a tight loop never finds it missing across 200
    replacements (with two renames it would, between them)."""
    dest = tmp_path / "out"
    publish(dest, b"0")
    stop, missing, looks = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            looks[0] += 1
            if not os.path.isfile(dest / "meta.json"):
                missing.append(looks[0])

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for i in range(200):
            publish(dest, str(i).encode())
    finally:
        stop.set()
        thread.join(10)
    assert looks[0] > 200 and missing == []
    assert (dest / "model.so").read_bytes() == b"199"


# ---------------------------------------------------------------- the writer lock


HOLD_LOCK = """
import sys, time
from pathlib import Path
from shiftc import artifact
with artifact.writer_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def held_elsewhere():
    """Hold ``dest``'s writer lock from another process until the test ends."""
    procs = []

    def hold(dest: Path):
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(dest)], cwd=ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(30)


def test_a_second_writer_fails_at_once(tmp_path, held_elsewhere):
    dest = tmp_path / "out"
    old = publish(dest, b"old")
    held_elsewhere(dest)
    t0 = time.perf_counter()
    with pytest.raises(shiftc.InputError, match=f"another shiftc is writing {dest}"):
        publish(dest, b"new")
    assert time.perf_counter() - t0 < 1.0
    artifact.verify(dest, expect=old)
    assert leftovers(tmp_path, "out") == [".out.lock"]  # the holder's, nothing of ours


def test_the_lock_is_not_reentrant_within_a_process(tmp_path):
    dest = tmp_path / "out"
    with artifact.writer_lock(dest):
        with pytest.raises(shiftc.InputError, match="another shiftc is writing"):
            publish(dest, b"x")
        assert publish(dest, b"x", locked=True)
    assert not artifact.lock_path(dest).exists()


def test_a_lock_file_without_a_holder_does_not_block(tmp_path):
    dest = tmp_path / "out"
    artifact.lock_path(dest).write_text("left by a crash\n")
    new = publish(dest, b"new")
    artifact.verify(dest, expect=new)
    assert leftovers(tmp_path, "out") == []


def test_a_lock_released_by_a_killed_holder_does_not_block(tmp_path, held_elsewhere):
    dest = tmp_path / "out"
    proc = held_elsewhere(dest)
    proc.kill()
    proc.wait(30)
    assert artifact.lock_path(dest).exists()
    publish(dest, b"new")
    assert leftovers(tmp_path, "out") == []


def test_the_lock_file_is_not_followed_when_a_symlink(tmp_path):
    dest, victim = tmp_path / "out", tmp_path / "victim"
    victim.write_text("keep")
    artifact.lock_path(dest).symlink_to(victim)
    with pytest.raises(shiftc.InputError, match="cannot create the lock file"):
        publish(dest, b"x")
    assert victim.read_text() == "keep"


# ---------------------------------------------------------------- compile


@pytest.fixture
def cnn(tmp_path, conv_model):
    path = tmp_path / "m.onnx"
    onnx.save(conv_model, str(path))
    return path


def test_cli_compile_fails_with_exit_2_while_another_writes_the_output(tmp_path, cnn, held_elsewhere, monkeypatch):
    from shiftc import api

    def compiled(*_a, **_k):
        raise AssertionError("compiled although the output is locked")

    monkeypatch.setattr(api, "_through_passes", compiled)
    out = tmp_path / "out"
    held_elsewhere(out)
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["compile", str(cnn), "-o", str(out), "--input-shape", "x=1x3x8x8"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [f"error: another shiftc is writing {out}; try again when it has finished"]
    assert time.perf_counter() - t0 < 2.0
    assert not out.exists()


def test_compile_holds_the_lock_and_removes_it(tmp_path, conv_model, monkeypatch):
    from shiftc import api

    out, seen = tmp_path / "out", []
    real = api._through_passes

    def spy(*a, **k):
        seen.append(artifact.lock_path(out).exists())
        with pytest.raises(shiftc.InputError, match="another shiftc is writing"):
            with artifact.writer_lock(out):
                pass
        return real(*a, **k)

    monkeypatch.setattr(api, "_through_passes", spy)
    shiftc.compile(conv_model, "x86", input_shapes={"x": (1, 3, 8, 8)}, output=out)
    shiftc.compile(conv_model, "x86", input_shapes={"x": (2, 3, 8, 8)}, output=out)
    assert seen == [True, True]
    assert shiftc.load(out).inputs[0].shape == (2, 3, 8, 8)
    assert leftovers(tmp_path, "out") == []
