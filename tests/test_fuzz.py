"""The CLI on a deterministic corpus of 1,000 broken ONNX models (``tests/fuzz/corpus.py``).

``shiftc inspect`` runs on every file and ``shiftc compile`` on a fixed sample of 50 small ones, all
in-process through click's CliRunner. A file passes when the command exits 0, 2 or 3 (never 1, a
bug), within its time limit, with no traceback; a failure prints exactly one ``error:`` line on
stderr, nothing on stdout, and leaves nothing at ``-o`` (no artifact, no temporary sibling).
"""

from __future__ import annotations

import collections
import faulthandler
import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from fuzz import corpus
from shiftc.cli import main

N_FILES = 1000
N_COMPILES = 50
INSPECT_LIMIT_S = 20
COMPILE_LIMIT_S = 120


class Hang(BaseException):
    """Raised by the alarm; a BaseException, so the CLI's error handler does not turn it into exit 1."""


@contextmanager
def time_limit(seconds: int):
    """SIGALRM interrupts Python code that runs too long; faulthandler kills the whole test process
    (with every thread's trace) if native code never returns to Python, so CI cannot hang."""

    def on_alarm(signum, frame):
        raise Hang(f"no result after {seconds}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    faulthandler.dump_traceback_later(seconds * 3, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return corpus.generate(tmp_path_factory.mktemp("fuzz"), N_FILES, seed=0)


def invoke(args: list[str], limit: int):
    with time_limit(limit):
        return CliRunner().invoke(main, args)


def problems(result) -> list[str]:
    """What is wrong with one CLI result (empty: nothing)."""
    found = []
    if result.exit_code not in (0, 2, 3):
        found.append(f"exit {result.exit_code}")
    if "Traceback" in result.stderr or "Traceback" in result.stdout:
        found.append("traceback")
    if result.exit_code != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("error:"):
            found.append(f"{len(lines)} stderr lines")
        if result.stdout.strip():
            found.append("stdout on failure")
    return found


def report(what: str, codes: collections.Counter, seconds: float, bad: list) -> None:
    print(f"\n{what}: {sum(codes.values())} files in {seconds:.1f}s; exit codes {dict(sorted(codes.items()))}")
    for line in bad[:20]:
        print("  ", line)


def test_corpus_is_deterministic():
    a, b = corpus.cases(40, seed=3), corpus.cases(40, seed=3)
    assert [(c.name, c.data, c.files, c.links) for c in a] == [(c.name, c.data, c.files, c.links) for c in b]
    assert [c.data for c in corpus.cases(40, seed=4)] != [c.data for c in a]


def test_inspect_every_corpus_file(written):
    codes, bad = collections.Counter(), []
    t0 = time.perf_counter()
    for case, path in written:
        try:
            result = invoke(["inspect", "--json", str(path)], INSPECT_LIMIT_S)
        except Hang as exc:
            codes["hang"] += 1
            bad.append(f"{case.name}: {exc}")
            continue
        codes[result.exit_code] += 1
        found = problems(result)
        if found:
            bad.append(f"{case.name}: {', '.join(found)}: {result.stderr.strip()[:300]}")
    seconds = time.perf_counter() - t0
    report("inspect", codes, seconds, bad)
    assert sum(codes.values()) == len(written) == N_FILES
    assert not bad, f"{len(bad)} file(s) failed"
    # the corpus reaches past the parser: some files load (or are refused as unsupported), most are bad input
    assert codes[0] >= 50 and codes[2] >= 500 and codes[3] >= 1, dict(codes)
    assert seconds < 120, f"inspect took {seconds:.0f}s for {N_FILES} files"


def test_compile_a_sample(written, tmp_path):
    small = [(case, path) for case, path in written if case.seed_model != "cnn"]
    sample = random.Random(0).sample(small, N_COMPILES)
    codes, bad = collections.Counter(), []
    t0 = time.perf_counter()
    for case, path in sample:
        out = tmp_path / case.name / "art"
        out.parent.mkdir()
        try:
            result = invoke(["compile", str(path), "-o", str(out)], COMPILE_LIMIT_S)
        except Hang as exc:
            codes["hang"] += 1
            bad.append(f"{case.name}: {exc}")
            continue
        codes[result.exit_code] += 1
        found = problems(result)
        left = sorted(os.listdir(out.parent))
        expected = ["art"] if result.exit_code == 0 else []
        if left != expected:
            found.append(f"left {left} at -o")
        if result.exit_code == 0 and not (out / "meta.json").is_file():
            found.append("no meta.json")
        if found:
            bad.append(f"{case.name}: {', '.join(found)}: {result.stderr.strip()[:300]}")
    seconds = time.perf_counter() - t0
    report("compile", codes, seconds, bad)
    assert sum(codes.values()) == N_COMPILES
    assert not bad, f"{len(bad)} file(s) failed"
    assert codes[0] >= 1 and codes[2] >= 1, dict(codes)


ATHERIS_SECONDS = 30


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (it is in the dev extra: scripts/setup.sh installs it)")
def test_atheris_frontend(tmp_path):
    """Coverage-guided fuzzing of the frontend for a bounded time: libFuzzer exits non-zero on a crash
    (any exception but shiftc's exit-2/3 errors), a slow input (-timeout) or memory over -rss_limit_mb."""
    (tmp_path / "corpus").mkdir()
    target = Path(__file__).parent / "fuzz" / "frontend_target.py"
    proc = subprocess.run([sys.executable, str(target), f"-max_total_time={ATHERIS_SECONDS}", "-timeout=30",
                           "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
                          capture_output=True, text=True, timeout=ATHERIS_SECONDS + 300)
    done = [ln for ln in proc.stderr.splitlines() if ln.startswith("Done ")]
    print("\natheris:", done[-1] if done else proc.stderr[-2000:])
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))]
    assert proc.returncode == 0 and not crashes, proc.stderr[-4000:]
