"""Whether an output location can be written, checked before minutes of work go into filling it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError


def check_output_folder(path: str | Path, what: str = "output folder") -> None:
    """``path`` is to be created (with any missing parents) or replaced as a folder."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write {what} {path}: a file of that name exists")
    existing = path.parent
    while not os.path.exists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write {what} {path}: {existing} is a file, not a folder")
    _probe(existing, path, what)


def check_output_file(path: str | Path, what: str = "output file") -> None:
    """``path`` is to be written as a file; its folder must exist."""
    path = Path(path).absolute()
    if path.is_dir():
        raise InputError(f"cannot write {what} {path}: it is a folder")
    if not path.parent.is_dir():
        missing = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise InputError(f"cannot write {what} {path}: its folder {path.parent} {missing}")
    _probe(path.parent, path, what)


def _probe(folder: Path, path: Path, what: str) -> None:
    """Create and remove an empty folder in ``folder``: the one test that also holds for root and read-only mounts."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".shiftc-probe-", dir=folder))
    except OSError as exc:
        raise InputError(f"cannot write {what} {path}: {folder} is not writable ({exc.strerror or exc})") from None
