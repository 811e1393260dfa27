"""Tuning databases: a user's folder, or the ones shipped with shiftc per target.

A database is a MetaSchedule ``JSONDatabase`` folder (``database_workload.json`` +
``database_tuning_record.json``). Records are looked up by the structural hash of the fused PrimFunc,
so a database only ever applies to kernels identical to the ones that were tuned.

Shipped databases live in ``databases/<target key>/<model>/``; the key is the target's LLVM ``mcpu``
(``x86-64-v3`` for generic AVX2, ``znver5``, ...), because a schedule tuned for one vector width is
not the best for another. Every shipped model of the build's key is consulted at once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from shiftc.core.errors import InputError

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "databases"
WORKLOAD = "database_workload.json"
RECORDS = "database_tuning_record.json"


def target_key(target) -> str:
    """The shipped-database key of a ``tvm.target.Target`` (its ``mcpu``, else its kind)."""
    mcpu = target.attrs.get("mcpu")
    return str(mcpu) if mcpu else target.kind.name


def _check_json_lines(path: Path) -> int:
    """Number of records in a JSON-lines file; corrupt files are input errors."""
    n = 0
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"tuning database {path} is corrupt (line {i}: {exc.msg})") from None
            n += 1
    return n


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
    return _check_json_lines(Path(folder) / RECORDS)


def shipped_folders(target) -> list[Path]:
    """The shipped database folders for a target (empty if none ships for its key)."""
    key_dir = SHIPPED / target_key(target)
    if not key_dir.is_dir():
        return []
    return sorted(p for p in key_dir.iterdir() if (p / RECORDS).is_file())


def resolve(db, target):
    """(database, description) for a build: the folder ``db`` if given, else every shipped one for
    the target's key, else (None, None)."""
    from tvm.s_tir import meta_schedule as ms

    if db is not None:
        return open_folder(db), str(db)
    folders = shipped_folders(target)
    if not folders:
        log.info("no shipped tuning database for %s", target_key(target))
        return None, None
    dbs = [open_folder(p) for p in folders]
    source = f"shipped:{target_key(target)}/{{{','.join(p.name for p in folders)}}}"
    return (dbs[0] if len(dbs) == 1 else ms.database.UnionDatabase(*dbs)), source
