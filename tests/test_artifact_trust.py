"""A trustworthy artifact (issue 16, item 2): the artifact id covers everything, and a tampered or
malformed folder is refused with one ``InputError`` line (CLI exit 2) before any code is loaded.

One x86 build of the example CNN per module; every case tampers with its own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import shiftc
from shiftc import artifact
from shiftc.cli import main

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "models" / "cnn.onnx"
QUICK_S = 2.0


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(folder, id, input .npy) of the CNN compiled for x86 through the CLI (which reports the id)."""
    tmp = tmp_path_factory.mktemp("trust")
    res = CliRunner().invoke(main, ["compile", str(CNN), "-t", "x86", "-o", str(tmp / "cnn"), "--json"])
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["artifact_id"] == hashlib.sha256((tmp / "cnn" / "meta.json").read_bytes()).hexdigest()
    spec = info["inputs"][0]
    np.save(tmp / "x.npy", np.zeros(spec["shape"], spec["dtype"]))
    return tmp / "cnn", info["artifact_id"], tmp / "x.npy"


@pytest.fixture
def art(base, tmp_path):
    dest = tmp_path / "art"
    shutil.copytree(base[0], dest)
    return dest


@pytest.fixture
def no_code(monkeypatch):
    """Loading any code fails the test: every refusal must come first."""
    from shiftc.targets.x86 import X86

    def loaded(*_a, **_k):
        raise AssertionError("code was loaded from a refused artifact")

    monkeypatch.setattr(X86, "load", loaded)


def edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def list_file(folder: Path, name: str, digest: str | None = None) -> None:
    def add(meta):
        meta["files"][name] = digest or "0" * 64

    edit_meta(folder, add)


def within(seconds: float, fn):
    """Run ``fn`` in a daemon thread; fail (instead of hanging) if it takes longer than ``seconds``."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t0 = time.perf_counter()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value"), time.perf_counter() - t0


def cli_run(folder: Path, x: Path, *extra: str):
    """``shiftc run`` in-process: (exit code, stdout, stderr, seconds)."""
    res, secs = within(30, lambda: CliRunner().invoke(main, ["run", str(folder), "--input", str(x), *extra]))
    return res.exit_code, res.stdout, res.stderr, secs


def load_error(folder: Path, expect: str | None) -> shiftc.InputError:
    try:
        shiftc.load(folder, expect=expect)
    except shiftc.InputError as exc:
        return exc
    raise AssertionError("the artifact was accepted")


def assert_refused(folder: Path, x: Path, fragment: str, expect: str | None = None) -> None:
    """Refused by the API and by ``shiftc run`` (exit 2, one line on stderr), quickly, loading nothing."""
    exc, secs = within(30, lambda: load_error(folder, expect))
    assert re.search(fragment, str(exc)), str(exc)
    assert "\n" not in str(exc) and secs < QUICK_S, f"API took {secs:.1f} s"
    code, _, err, secs = cli_run(folder, x, *(["--expect", expect] if expect else []))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(fragment, lines[0]), lines[0]
    assert "Traceback" not in err
    assert secs < QUICK_S, f"CLI took {secs:.1f} s"


# ---------------------------------------------------------------- the id


def test_happy_path_with_the_expected_id(base, tmp_path):
    folder, aid, x = base
    assert artifact.artifact_id(folder) == aid
    assert artifact.verify(folder, expect=aid)["files"]
    assert artifact.verify(folder, expect=aid.upper())  # the id is hex; case does not matter
    code, out, err, _ = cli_run(folder, x, "--expect", aid, "--json")
    assert code == 0, err
    got = json.loads(out)["outputs"]
    model = shiftc.load(folder, expect=aid)
    ref = model.run(np.load(x))
    assert list(got) == list(ref) and got[model.outputs[0].name]["shape"] == list(ref[model.outputs[0].name].shape)


def test_compile_prints_the_id(base, tmp_path):
    folder, aid, _ = base
    res = CliRunner().invoke(main, ["compile", str(CNN), "-t", "x86", "-o", str(tmp_path / "again")])
    assert res.exit_code == 0, res.stderr
    assert artifact.artifact_id(tmp_path / "again") in res.stdout


def test_edited_meta_with_a_new_library_passes_alone_but_not_with_the_id(art, base, no_code):
    """The attack the id exists for: a new model.so and a meta.json that lists its hash."""
    _, aid, x = base
    lib = art / "model.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    list_file(art, "model.so", hashlib.sha256(data).hexdigest())
    artifact.verify(art)  # self-consistent: without an id nothing can tell
    assert artifact.artifact_id(art) != aid
    assert_refused(art, x, "not the expected", expect=aid)


@pytest.mark.parametrize("bad", ["abc", "z" * 64, ""])
def test_a_malformed_expected_id_is_refused(base, bad):
    with pytest.raises(shiftc.InputError, match="64 hex digits"):
        artifact.verify(base[0], expect=bad)


# ---------------------------------------------------------------- names in meta.json


@pytest.mark.parametrize("outside_exists", [True, False])
def test_a_dotdot_name_is_refused_without_touching_the_file(art, base, tmp_path, outside_exists, no_code):
    secret = tmp_path / "secret"
    if outside_exists:
        secret.write_text("hunter2")
    list_file(art, "../secret", hashlib.sha256(b"hunter2").hexdigest())
    # the same refusal whether the file exists or not: nothing outside the folder is looked at
    assert_refused(art, base[2], r"'\.\./secret': names must be normalised and inside the folder")


@pytest.mark.parametrize("name", ["/etc/passwd", "/dev/zero"])
def test_an_absolute_name_is_refused(art, base, name, no_code):
    list_file(art, name)
    assert_refused(art, base[2], "absolute path")


@pytest.mark.parametrize("name", ["./model.so", "a//b", "a/./b", "meta.json", "a\\..\\b", "x\x00y"])
def test_unnormalised_names_are_refused(art, base, name, no_code):
    list_file(art, name)
    assert_refused(art, base[2], "meta.json lists")


# ---------------------------------------------------------------- the folder


def test_a_listed_symlink_is_refused(art, base, tmp_path, no_code):
    """model.so replaced by a link to an identical file outside: the hash would match."""
    outside = tmp_path / "outside.so"
    shutil.copy(art / "model.so", outside)
    (art / "model.so").unlink()
    (art / "model.so").symlink_to(outside)
    assert_refused(art, base[2], "'model.so' is a symbolic link")


def test_an_unlisted_symlink_to_a_folder_is_refused(art, base, no_code):
    (art / "lib").symlink_to("/usr/lib", target_is_directory=True)
    assert_refused(art, base[2], "'lib' is a symbolic link")


def test_a_fifo_as_meta_json_is_refused_at_once(art, base, no_code):
    (art / "meta.json").unlink()
    os.mkfifo(art / "meta.json")
    assert_refused(art, base[2], "is a FIFO")


def test_meta_json_linked_to_dev_zero_is_refused_at_once(art, base, no_code):
    (art / "meta.json").unlink()
    (art / "meta.json").symlink_to("/dev/zero")
    assert_refused(art, base[2], "symbolic link")


def test_a_fifo_in_the_folder_is_refused(art, base, no_code):
    os.mkfifo(art / "pipe")
    assert_refused(art, base[2], "'pipe' is a FIFO")


def test_a_huge_sparse_listed_file_is_refused_before_hashing(art, base, no_code):
    subprocess.run(["truncate", "-s", "20G", str(art / "big.bin")], check=True)
    list_file(art, "big.bin")
    assert_refused(art, base[2], "'big.bin' is 21,474,836,480 bytes, over the")


def test_a_huge_meta_json_is_refused_before_reading(art, base, no_code):
    os.truncate(art / "meta.json", artifact.MAX_META_BYTES + 1)
    assert_refused(art, base[2], "over the 16,777,216-byte limit")


@pytest.mark.parametrize("empty", [True, False])
def test_an_unlisted_folder_is_refused(art, base, empty, no_code):
    (art / "plugins").mkdir()
    if not empty:
        (art / "plugins" / "evil.so").write_bytes(b"\x7fELF")
    assert_refused(art, base[2], "'plugins'" if empty else "'plugins/evil.so'")


def test_a_folder_above_listed_files_is_accepted(art, base):
    (art / "sub").mkdir()
    (art / "sub" / "notes.txt").write_text("listed")
    list_file(art, "sub/notes.txt", hashlib.sha256(b"listed").hexdigest())
    assert artifact.verify(art)["files"]["sub/notes.txt"]


def test_a_missing_listed_file_is_refused(art, base, no_code):
    (art / "model.so").unlink()
    assert_refused(art, base[2], "'model.so' is missing")


# ---------------------------------------------------------------- inputs and outputs


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m["outputs"].append(dict(m["outputs"][0])), "twice"),
    (lambda m: m.update(outputs=[]), "non-empty 'outputs'"),
    (lambda m: m.pop("inputs"), "non-empty 'inputs'"),
    (lambda m: m["inputs"][0].update(shape=[1, -1]), "bad shape"),
    (lambda m: m["inputs"][0].update(dtype="object"), "bad dtype"),
    (lambda m: m["outputs"][0].update(name=""), "bad name"),
    (lambda m: m.update(files={}), "'files' table"),
    (lambda m: m.update(target="x86"), "'target'"),
], ids=["duplicate-outputs", "empty-outputs", "no-inputs", "negative-dim", "bad-dtype", "empty-name", "no-files", "bad-target"])
def test_malformed_inputs_outputs_and_tables_are_refused(art, base, change, fragment, no_code):
    edit_meta(art, change)
    assert_refused(art, base[2], fragment)


def test_a_duplicate_json_key_is_refused(art, base, no_code):
    text = (art / "meta.json").read_text()
    (art / "meta.json").write_text(text.replace('  "files": {', '  "files": {},\n  "files": {', 1))
    assert_refused(art, base[2], "duplicate key 'files'")


def test_the_real_shiftc_command_refuses_a_fifo(art, base):
    """The installed entry point, as a separate process (its start-up is not timed)."""
    (art / "meta.json").unlink()
    os.mkfifo(art / "meta.json")
    cmd = [sys.executable, "-c", "from shiftc.cli import main; main()", "run", str(art), "--input", str(base[2])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "FIFO" in res.stderr, res.stderr


def test_a_file_name_that_looks_like_markup_still_gives_one_line(art, base, no_code):
    """Names in messages come from the folder: the CLI prints them literally."""
    (art / "[red]x").write_bytes(b"x")
    assert_refused(art, base[2], re.escape("'[red]x'"))
