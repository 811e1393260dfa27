"""Coverage-guided fuzzing of shiftc's frontend with atheris (libFuzzer for Python).

An input whose first byte is even is the bytes of a model file (libFuzzer's byte mutations); an odd
one drives ``corpus.py``'s protobuf mutations of a tiny seed model (which edits, where), so the
fuzzer also reaches past the parser. ``frontend.load`` reads the file (parse, UTF-8 and weight checks,
the ONNX checker, shape pinning, onnxruntime's simplification) and ``frontend.to_relax`` imports
what loads. The only acceptable failures are shiftc's bad-input and unsupported-model errors
(exit codes 2 and 3); anything else, a bare ShiftcError (exit 1) included, is a crash that
libFuzzer reports with the input that caused it.

    python tests/fuzz/frontend_target.py -max_total_time=60 [CORPUS_DIR ...]

An empty (or no) corpus folder is seeded with the tiny models of ``corpus.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fuzz.corpus

import onnx  # noqa: E402

from fuzz import corpus  # noqa: E402

with atheris.instrument_imports(include=["shiftc"]):
    from shiftc import frontend
    from shiftc.core.errors import ShiftcError

_WORK = tempfile.mkdtemp(prefix="shiftc-atheris-")
_MODEL = os.path.join(_WORK, "model.onnx")
_SEEDS = {k: v for k, v in corpus.seed_models().items() if k != "cnn"}


class ProviderRandom:
    """The slice of ``random.Random`` that corpus.py's mutations use, drawing from libFuzzer's bytes."""

    def __init__(self, data: bytes):
        self.fdp = atheris.FuzzedDataProvider(data)

    def randrange(self, a: int, b: int | None = None) -> int:
        lo, hi = (0, a) if b is None else (a, b)
        return self.fdp.ConsumeIntInRange(lo, hi - 1)

    def randint(self, a: int, b: int) -> int:
        return self.fdp.ConsumeIntInRange(a, b)

    def random(self) -> float:
        return self.fdp.ConsumeProbability()

    def choice(self, seq):
        return seq[self.randrange(len(seq))]

    def sample(self, population, k: int) -> list:
        pool = list(population)
        return [pool.pop(self.randrange(len(pool))) for _ in range(k)]

    def shuffle(self, items) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.randrange(i + 1)
            items[i], items[j] = items[j], items[i]


def structured(data: bytes) -> bytes:
    """A seed model with one to three protobuf mutations (or an external-data trick) chosen by ``data``."""
    rng = ProviderRandom(data)
    model = onnx.ModelProto()
    model.CopyFrom(_SEEDS[rng.choice(sorted(_SEEDS))])
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(sorted(corpus.PROTO_MUTATIONS) + ["external_data"])
        try:
            if name == "external_data":
                files, links = corpus.external_data(rng, model)
                for rel, content in files.items():
                    Path(_WORK, rel).write_bytes(content)
                for rel, target in links.items():
                    Path(_WORK, rel).symlink_to(target)
            else:
                corpus.PROTO_MUTATIONS[name](rng, model)
        except Exception:  # an earlier edit broke what this one reads (the generator's failure, not shiftc's)
            pass
    return model.SerializeToString()


def test_one_input(data: bytes) -> None:
    for leftover in os.listdir(_WORK):
        os.unlink(os.path.join(_WORK, leftover))
    content = structured(data[1:]) if data[:1] and data[0] % 2 else data[1:]
    with open(_MODEL, "wb") as f:
        f.write(content)
    try:
        loaded = frontend.load(_MODEL)
        frontend.to_relax(loaded)
    except ShiftcError as exc:
        if exc.exit_code not in (2, 3):
            raise


def seed(folder: str) -> str:
    """Write the tiny seed models as raw inputs, and a few byte strings for the structured mode."""
    for name, model in _SEEDS.items():
        Path(folder, f"{name}.onnx").write_bytes(b"\0" + model.SerializeToString())
    for i in range(8):
        Path(folder, f"structured{i}").write_bytes(bytes([1, i * 37 % 256, i, 255 - i, i * 11 % 256, 3, 5, i]))
    return folder


def main(argv: list[str]) -> None:
    folders = [a for a in argv[1:] if not a.startswith("-")]
    if not folders:
        folders = [tempfile.mkdtemp(prefix="shiftc-atheris-seeds-")]
        argv = [*argv, folders[0]]
    if not os.listdir(folders[0]):
        seed(folders[0])
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
