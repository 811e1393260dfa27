"""The artifact: a folder with the compiled files and ``meta.json``.

``meta.json`` records inputs, outputs, target, options, the report, versions and the sha256 of every
other file. Folders are written to a temporary sibling and renamed into place, so a failed compile
never leaves a partial artifact; ``verify`` checks every hash before any code is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .core.errors import InputError

META = "meta.json"
FORMAT = "shiftc-artifact/1"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_meta(folder: Path, meta: dict) -> dict:
    """Hash every file in ``folder`` (recursively) into ``meta['files']`` and write meta.json."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META)
    meta = dict(meta, format=FORMAT, files={str(p.relative_to(folder)): sha256(p) for p in files})
    (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def read_meta(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"artifact folder not found: {folder}")
    try:
        meta = json.loads((folder / META).read_text())
    except FileNotFoundError:
        raise InputError(f"{folder} is not a shiftc artifact (no {META})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{folder / META} is corrupt: {exc}") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{folder} has artifact format {meta.get('format')!r}; this shiftc reads {FORMAT!r}")
    return meta


def verify(folder: Path) -> dict:
    """Read meta.json and check every listed file's sha256; refuse unlisted files too."""
    folder = Path(folder)
    meta = read_meta(folder)
    listed = meta.get("files", {})
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"artifact is incomplete: {name} is missing")
        if sha256(path) != digest:
            raise InputError(f"artifact was modified: sha256 of {name} does not match meta.json; refusing to load it")
    extra = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != META and str(p.relative_to(folder)) not in listed]
    if extra:
        raise InputError(f"artifact has files not listed in meta.json: {', '.join(sorted(extra))}; refusing to load it")
    return meta


@contextmanager
def staging(dest: Path):
    """Yield a temporary folder beside ``dest``; on success it replaces ``dest`` atomically.

    An existing ``dest`` is replaced only if it is empty or a shiftc artifact.
    """
    dest = Path(dest).absolute()
    if dest.exists() and not (dest.is_dir() and (not any(dest.iterdir()) or (dest / META).is_file())):
        raise InputError(f"refusing to overwrite {dest}: it exists and is not a shiftc artifact")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def copy(src: Path, dest: Path) -> None:
    """Copy a verified artifact folder to ``dest`` atomically."""
    verify(src)
    with staging(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
