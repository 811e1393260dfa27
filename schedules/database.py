"""Tuning databases: a user's folder, or the ones shipped with shiftc per ISA key.

A database is a MetaSchedule ``JSONDatabase`` folder (``database_workload.json`` +
``database_tuning_record.json``). Records are looked up by the structural hash of the fused PrimFunc,
so a database only ever applies to kernels identical to the ones that were tuned.

**Keys.** Shipped databases live in ``databases/<key>/<model>/``. A key is an ISA level, not a CPU
name (``LEVELS``): ``x86-64-v4-vnni`` (AVX-512 F/BW/DQ/VL/CD + AVX-512 VNNI), ``x86-64-v4``
(AVX-512 without VNNI), ``x86-64-v3`` (AVX2, FMA, BMI2, ...), ``aarch64-dotprod`` (NEON + SDOT/UDOT)
and ``aarch64`` (NEON). A build's features come from LLVM for the target's ``mcpu`` + ``mattr``
(``cpu_features``), so ``znver5``, ``rocketlake`` and ``x86-64-v4 -mattr=+avx512vnni`` all get
``x86-64-v4-vnni`` and ``znver3`` gets ``x86-64-v3``, without a table of CPU names here.

**Fallback.** A build consults every key whose features its CPU has, most specific first
(v4-vnni -> v4 -> v3; aarch64-dotprod -> aarch64), one key after the other: a kernel takes the
record of the first key that has one, the next key only sees the kernels still unscheduled. A
schedule tuned for a smaller ISA is valid code on a larger one; it is just tuned for narrower
vectors. Keys the CPU does not fully support are never consulted.

**What a record carries** (checked in TVM 0.27): a ``TuningRecord`` stores the tuning target, but
``MetaScheduleApplyDatabase`` -> ``Database.QuerySchedule`` looks records up by workload only and
ignores it (records tuned for ``mcpu=znver5`` apply unchanged to a ``rocketlake`` build). Vector
widths in a trace (``Split``/``Vectorize``) are plain loop transformations that LLVM legalises on
any ISA. ``Tensorize`` steps are not: replaying a record tensorized with the VNNI ``vpdpbusd``
intrinsic on a CPU without VNNI aborts the *whole process* in LLVM's instruction selection
(``LLVM ERROR: Do not know how to split the result of this operator``, for ``x86-64-v3`` and
``x86-64-v4`` alike; measured with ``x86_int8.int8_matmul``). Hence:

- a key's folder may only hold records whose tensor intrinsics need features of that key
  (``check_records``; ``benchmarks/tune_models.py`` checks before writing), so falling back to a
  lower key never brings in a VNNI record, and the fallback never goes up to a key the CPU lacks;
- before a folder (shipped or ``--db``) is applied, its records' intrinsics are checked against
  the build's features (``INTRINSIC_FEATURES``; an unknown intrinsic counts as unsupported). A
  shipped folder that fails is skipped with a note; a user's ``--db`` is an input error.

The compile report names the key, the fallback keys and the folders consulted, and says so in a
note when no shipped database exists for the build's key. A user's ``--db`` is named by its
folder's name and the sha256 of its records (``user_label``), never by its path.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from shiftc.core.errors import InputError

from . import cpu_features

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "databases"
WORKLOAD = "database_workload.json"
RECORDS = "database_tuning_record.json"


@dataclass(frozen=True)
class Level:
    """An ISA key: the LLVM features a CPU needs for the records under ``databases/<key>/``."""

    key: str
    arch: str  # "x86_64" or "aarch64"
    features: frozenset


_X86_V3 = frozenset({"avx", "avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt", "movbe"})
_X86_V4 = _X86_V3 | {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}
# Per architecture, most specific first: the fallback order. LLVM's own x86-64-v3/-v4 CPUs have
# exactly these levels (tests/test_database_keys.py checks it).
LEVELS = (
    Level("x86-64-v4-vnni", "x86_64", _X86_V4 | {"avx512vnni"}),
    Level("x86-64-v4", "x86_64", _X86_V4),
    Level("x86-64-v3", "x86_64", _X86_V3),
    Level("aarch64-dotprod", "aarch64", frozenset({"neon", "dotprod"})),
    Level("aarch64", "aarch64", frozenset({"neon"})),
)

# LLVM features a tensor intrinsic's code needs (the intrinsics shiftc's schedules and MetaSchedule's
# x86/ARM rules tensorize with). A record tensorized with an intrinsic not listed here is treated
# as needing a feature no CPU has.
INTRINSIC_FEATURES = {
    "shiftc_dot_8x4_avx2": {"avx2"},
    "shiftc_dot_i16_8x2_avx2": {"avx2"},
    "shiftc_dot_16x4_vnni": {"avx512vnni", "avx512bw"},
    "shiftc_dot_i16_16x2_vnni": {"avx512vnni", "avx512bw"},
    "dot_16x4_vnni": {"avx512vnni", "avx512bw"},
    "dot_16x4_avx512": {"avx512bw"},
    "dot_4x4_i8i8s32_neon": {"neon"},
    "dot_4x4_i8i8s32_sdot": {"dotprod"},
    "dot_4x4_u8u8u32_udot": {"dotprod"},
    "dot_4x4_u8u8i32_hdot": {"dotprod"},
}


def arch(target) -> str | None:
    """``x86_64`` / ``aarch64`` for an LLVM target (from its ``mtriple``, else the host's), else None."""
    if target.kind.name != "llvm":
        return None
    triple = str(target.attrs.get("mtriple") or "")
    if not triple:
        from tvm.target import codegen

        triple = str(codegen.llvm_get_system_triple())
    head = triple.split("-")[0]
    if head in ("x86_64", "amd64"):
        return "x86_64"
    if head in ("aarch64", "arm64"):
        return "aarch64"
    return None


def fallback_keys(target) -> list[str]:
    """The ISA keys a build consults, most specific first: every level whose features the target's
    CPU (LLVM ``mcpu`` + ``mattr``) has. Empty for a CPU below every level, or a non-LLVM target."""
    a = arch(target)
    if a is None:
        return []
    have = cpu_features.features(target)
    return [lvl.key for lvl in LEVELS if lvl.arch == a and lvl.features <= have]


def target_key(target) -> str:
    """The shipped-database key of a ``tvm.target.Target``: its most specific ISA level, else a
    description that is no level (e.g. ``x86_64 below x86-64-v3``, ``cuda``)."""
    keys = fallback_keys(target)
    if keys:
        return keys[0]
    a = arch(target)
    if a is None:
        return target.kind.name if target.kind.name != "llvm" else f"llvm {target.attrs.get('mtriple') or 'host'}"
    return f"{a} below {[lvl.key for lvl in LEVELS if lvl.arch == a][-1]}"


def level(key: str) -> Level | None:
    return next((lvl for lvl in LEVELS if lvl.key == key), None)


def _check_json_lines(path: Path) -> list:
    """The records of a JSON-lines file; corrupt files are input errors."""
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"tuning database {path} is corrupt (line {i}: {exc.msg})") from None
    return rows


def _trace_intrinsics(record) -> set[str]:
    """Tensor intrinsics a tuning-record row's trace tensorizes with (``Tensorize`` steps and
    MetaSchedule's ``auto_tensorize`` annotations)."""
    try:
        insts = record[1][0][0]
    except (IndexError, TypeError):
        return set()
    found = set()
    for inst in insts:
        kind, inputs, attrs = inst[0], inst[1], inst[2]
        if kind == "Tensorize" and attrs:
            found.add(str(attrs[0]))
        elif kind == "Annotate" and attrs and str(attrs[0]).startswith("meta_schedule.auto_tensorize") and len(inputs) > 1:
            found.add(str(inputs[1]).strip('"'))
    return found


def check_records(folder: str | Path, features) -> list[str]:
    """The tensor intrinsics in ``folder``'s records that a CPU with LLVM ``features`` cannot run
    (unknown intrinsics included); empty when every record is safe to replay there."""
    bad = set()
    for row in _check_json_lines(Path(folder) / RECORDS):
        for name in _trace_intrinsics(row):
            need = INTRINSIC_FEATURES.get(name)
            if need is None or not need <= set(features):
                bad.add(name)
    return sorted(bad)


def open_folder(folder: str | Path, create: bool = False):
    """A ``JSONDatabase`` over ``folder``; a missing folder or corrupt file is an ``InputError``."""
    from tvm.s_tir import meta_schedule as ms

    folder = Path(folder)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise InputError(f"tuning database not found: {folder} (create one with `shiftc tune`)")
    elif not (folder / WORKLOAD).is_file() or not (folder / RECORDS).is_file():
        raise InputError(f"{folder} is not a tuning database (needs {WORKLOAD} and {RECORDS})")
    if not create:
        for name in (WORKLOAD, RECORDS):
            _check_json_lines(folder / name)
    try:
        return ms.database.JSONDatabase(
            path_workload=str(folder / WORKLOAD), path_tuning_record=str(folder / RECORDS), allow_missing=create
        )
    except Exception as exc:  # noqa: BLE001 - TVM parse errors become one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
        raise InputError(f"tuning database {folder} is corrupt: {first}") from None


def record_count(folder: str | Path) -> int:
    return len(_check_json_lines(Path(folder) / RECORDS))


def shipped_folders(key: str) -> list[Path]:
    """The shipped database folders of one ISA key (empty if none ships for it)."""
    key_dir = SHIPPED / key
    if not key_dir.is_dir():
        return []
    return sorted(p for p in key_dir.iterdir() if (p / RECORDS).is_file())


@dataclass
class Source:
    """One database a build applies: ``label`` for the report, ``key`` (None for a user's ``--db``)."""

    label: str
    database: object
    key: str | None = None


def _union(folders: list[Path]):
    from tvm.s_tir import meta_schedule as ms

    dbs = [open_folder(p) for p in folders]
    return dbs[0] if len(dbs) == 1 else ms.database.UnionDatabase(*dbs)


def resolve(db, target) -> tuple[list[Source], list[str]]:
    """(sources in the order to apply them, notes) for a build: the folder ``db`` if given, else the
    shipped folders of each fallback key (``fallback_keys``), most specific first."""
    have = cpu_features.features(target)
    if db is not None:
        opened = open_folder(db)  # a missing or corrupt folder is an input error first
        bad = check_records(db, have)
        if bad:
            raise InputError(f"tuning database {db} has records tensorized with {', '.join(bad)}, which the target CPU "
                             f"({target.attrs.get('mcpu') or target.kind.name}) cannot run; tune for this CPU instead")
        return [Source(user_label(db), opened)], []
    keys, sources, notes = fallback_keys(target), [], []
    for key in keys:
        folders = []
        for p in shipped_folders(key):
            bad = check_records(p, have)
            if bad:
                notes.append(f"shipped tuning database {key}/{p.name} skipped: records use {', '.join(bad)}, not on this CPU")
            else:
                folders.append(p)
        if folders:
            sources.append(Source(f"{key}/{{{','.join(p.name for p in folders)}}}", _union(folders), key))
    if not sources and target.kind.name == "llvm":
        consulted = f", fallback {', '.join(keys[1:])}" if len(keys) > 1 else ""
        notes.append(f"no shipped tuning database for this CPU (key {target_key(target)}{consulted}); kernels use default schedules")
        log.info("%s", notes[-1])
    return sources, notes


def records_digest(folder: str | Path) -> str:
    """sha256 over a database folder's workload and record files: what a build reads from it."""
    h = hashlib.sha256()
    for name in (WORKLOAD, RECORDS):
        data = (Path(folder) / name).read_bytes()
        h.update(f"{name} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def user_label(folder: str | Path) -> str:
    """A user's ``--db`` in the report: its folder's name and records digest, never its path (the
    same database elsewhere gives the same artifact bytes)."""
    return f"{Path(folder).resolve().name} (sha256:{records_digest(folder)[:16]})"


def describe(sources: list[Source]) -> str | None:
    """The report's ``database`` string: a user's folder, or ``shipped:KEY/{models} > KEY/{...}``."""
    if not sources:
        return None
    if sources[0].key is None:
        return sources[0].label
    return "shipped:" + " > ".join(s.label for s in sources)
