"""The artifact: a folder with the compiled files and ``meta.json``.

``meta.json`` records inputs, outputs, target, options, the report, versions and the sha256 of every
other file. Folders are written to a temporary sibling and renamed into place, so a failed compile
never leaves a partial artifact.

Publishing (``staging``/``_publish``). An existing output folder is replaced by swapping it with the
new one in one ``renameat2(RENAME_EXCHANGE)`` (Linux, through ``ctypes``), so the output path holds
a complete artifact, old or new, at every moment; the old folder is deleted afterwards. Where the
exchange is unavailable (another OS, or a file system without it) two renames are used instead, and
a kill between them leaves no artifact at the output (the old one stays at ``.NAME.old.PID``).
Writers take ``writer_lock``: an exclusive, non-blocking ``flock`` on ``.NAME.lock`` beside the
output, held by ``api.compile`` from start to publish, so a second concurrent writer fails at once
with ``InputError`` instead of one result being silently lost. The lock file is removed on release;
one left by a killed process does not block (an ``flock`` ends with its process).

Threat model. Loading an artifact runs its code: ``model.so`` (and a target's runner) is native code
that runs with the rights of whoever loads it. The hashes in ``meta.json`` only show that a folder
agrees with its own ``meta.json``; anyone who can edit the folder can edit ``meta.json`` too. Trust
therefore comes from the **artifact id**, the sha256 of the exact bytes of ``meta.json``: since
``meta.json`` lists the sha256 of every other file, the id covers the whole folder. Take the id from
a source you trust (the compile that produced the artifact prints it and records it in ``--json``)
and load with ``shiftc.load(path, expect=ID)`` / ``shiftc run --expect ID``. Without an expected id,
``verify`` still refuses corrupt, incomplete, oversized or malformed folders, but any self-consistent
folder loads. Out of scope: the id says *which* bytes run, not that they are safe; and ``verify``
cannot stop a process that may write the folder from swapping files between the check and the load
(keep artifacts in a folder only trusted users can write, or ``copy`` them there first).

Signatures (optional; ``pip install 'shiftc[sign]'`` for ``cryptography``, imported only when used).
``sign(folder, private_key)`` writes ``meta.json.sig``: the base64 Ed25519 signature of
``"shiftc-artifact-signature/1 " + id``. ``verify(folder, public_key=...)`` (``shiftc verify
--public-key``, ``shiftc.load(public_key=)``) then refuses a folder without a valid signature by that
key. ``meta.json.sig`` is the single file a folder may hold without ``meta.json`` listing it (and
``meta.json`` may not list it): it signs the id, so the id cannot cover it, and signing or re-signing
leaves the id unchanged. Without ``public_key`` it is only checked to be a regular file. A signature
says who vouched for the id; it does not replace keeping the signing key private.

``verify(path, expect=None)`` checks, before any code is loaded, and raises ``InputError`` with a
one-line cause otherwise:

* ``meta.json`` is a regular file (opened with ``O_NOFOLLOW | O_NONBLOCK``, so a symlink, FIFO or
  device is refused without blocking) of at most ``MAX_META_BYTES`` (16 MiB), UTF-8 JSON without
  duplicate keys; its sha256 equals ``expect`` when given;
* ``files`` maps relative, normalised names (no ``..``, no absolute paths, no empty, ``.`` or
  backslash components, not ``meta.json``) to sha256 hex digests; ``inputs`` and ``outputs`` are
  non-empty lists of ``{name, shape, dtype}`` with unique names; ``target`` names a target;
* the folder holds exactly the listed regular files, ``meta.json`` (and ``meta.json.sig``, if
  signed) and the folders above listed files: no symbolic link anywhere, no FIFO, socket or device,
  no unlisted file or folder, at most ``MAX_ENTRIES`` (10,000) entries;
* every listed file is at most ``MAX_FILE_BYTES`` (4 GiB), all together at most ``MAX_TOTAL_BYTES``
  (16 GiB), checked with ``lstat`` before anything is hashed; hashing reads 1 MiB blocks and stops
  when a file grows past its size;
* every listed file's sha256 matches ``meta.json``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .core.errors import InputError, ToolchainError

META = "meta.json"
SIG = "meta.json.sig"
SIG_FORMAT = "shiftc-artifact-signature/1"
FORMAT = "shiftc-artifact/1"
MAX_META_BYTES = 16 << 20
MAX_FILE_BYTES = 4 << 30
MAX_TOTAL_BYTES = 16 << 30
MAX_ENTRIES = 10_000
MAX_SIG_BYTES = 1024
MAX_KEY_BYTES = 64 << 10
BLOCK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DTYPE = re.compile(r"bool|u?int(8|16|32|64)|float(16|32|64)|bfloat16")


# ---------------------------------------------------------------- reading files safely


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path, limit: int) -> tuple[int, int]:
    """Open ``path`` read-only; refuse a symlink or special file without following or blocking on it,
    and a file over ``limit`` bytes. Returns ``(fd, size)``."""
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path} is {_kind(mode)}; an artifact holds only regular files")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path} is missing") from None
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise InputError(f"cannot open {path}: {why}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        os.close(fd)
        what = _kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else f"{st.st_size:,} bytes, over the {limit:,}-byte limit"
        raise InputError(f"{path} is {what}; refusing it")
    return fd, st.st_size


def _digest(fd: int, path: Path, limit: int) -> str:
    """sha256 of an open file, in ``BLOCK``-sized reads; refuses more than ``limit`` bytes."""
    h, buf, total = hashlib.sha256(), bytearray(BLOCK), 0
    view = memoryview(buf)
    with os.fdopen(fd, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
            if total > limit:
                raise InputError(f"{path} grew past {limit:,} bytes while being read; refusing it")
            h.update(view[:n])
    return h.hexdigest()


def sha256(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """sha256 of a regular file (not a symlink) of at most ``limit`` bytes."""
    fd, size = _open_regular(Path(path), limit)
    return _digest(fd, Path(path), size)


def _meta_bytes(folder: Path) -> bytes:
    folder = Path(folder)
    try:
        is_dir = stat.S_ISDIR(os.stat(folder).st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        raise InputError(f"artifact folder not found: {folder}")
    if not os.path.lexists(folder / META):
        raise InputError(f"{folder} is not a shiftc artifact (no {META})")
    fd, size = _open_regular(folder / META, MAX_META_BYTES)
    with os.fdopen(fd, "rb") as f:
        data = f.read(size + 1)
    if len(data) != size:
        raise InputError(f"{folder / META} changed while being read; refusing it")
    return data


def artifact_id(folder: Path) -> str:
    """The artifact id: sha256 of the exact bytes of ``meta.json`` (which lists every other file's
    sha256). Reads ``meta.json`` only; ``verify(folder, expect=id)`` checks the rest."""
    return hashlib.sha256(_meta_bytes(folder)).hexdigest()


# ---------------------------------------------------------------- meta.json contents


def _no_duplicate_keys(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup!r}")
    return out


def _parse(data: bytes, where: Path) -> dict:
    try:
        meta = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{where} is corrupt: {cause}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{where} is corrupt: not a JSON object")
    if meta.get("format") != FORMAT:
        raise InputError(f"{where.parent} has artifact format {meta.get('format')!r:.80}; this shiftc reads {FORMAT!r}")
    return meta


def _check_name(name) -> str:
    """A listed file: a relative, normalised POSIX path inside the folder."""
    if not isinstance(name, str) or not name or len(name) > 1024 or "\x00" in name or "\\" in name:
        raise InputError(f"meta.json lists a bad file name {name!r:.100}; refusing the artifact")
    if name.startswith("/"):
        raise InputError(f"meta.json lists the absolute path {name!r}; an artifact lists only names inside its folder")
    parts = name.split("/")
    if len(parts) > 32:
        raise InputError(f"meta.json lists {name[:80]!r}..., nested over 32 folders deep; refusing the artifact")
    if any(part in ("", ".", "..") for part in parts):
        raise InputError(f"meta.json lists {name!r}: names must be normalised and inside the folder (no '..', '.' or '//')")
    if name in (META, SIG):
        raise InputError(f"meta.json lists {name!r}, which it cannot cover; refusing the artifact")
    return name


def _check_files(meta: dict) -> dict[str, str]:
    files = meta.get("files")
    if not isinstance(files, dict) or not files or len(files) > MAX_ENTRIES:
        raise InputError(f"meta.json needs a 'files' table of 1 to {MAX_ENTRIES:,} names; refusing the artifact")
    for name, digest in files.items():
        _check_name(name)
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise InputError(f"meta.json gives {name!r} a malformed sha256 {digest!r}; refusing the artifact")
    return files


def _check_spec(key: str, spec) -> str:
    if not isinstance(spec, dict) or set(spec) != {"name", "shape", "dtype"}:
        raise InputError(f"meta.json {key}: each entry is {{name, shape, dtype}}, got {spec!r:.200}")
    name, shape, dtype = spec["name"], spec["shape"], spec["dtype"]
    if not isinstance(name, str) or not name:
        raise InputError(f"meta.json {key}: bad name {name!r:.100}")
    if not isinstance(shape, list) or len(shape) > 32 or any(type(d) is not int or d < 0 for d in shape):
        raise InputError(f"meta.json {key} {name!r}: bad shape {shape!r:.100}")
    if not isinstance(dtype, str) or not _DTYPE.fullmatch(dtype):
        raise InputError(f"meta.json {key} {name!r}: bad dtype {dtype!r:.100}")
    return name


def _check_io(meta: dict) -> None:
    for key in ("inputs", "outputs"):
        specs = meta.get(key)
        if not isinstance(specs, list) or not specs or len(specs) > MAX_ENTRIES:
            raise InputError(f"meta.json needs a non-empty '{key}' list; refusing the artifact")
        names = [_check_spec(key, s) for s in specs]
        if len(set(names)) != len(names):
            seen: set = set()
            dup = next(n for n in names if n in seen or seen.add(n))
            raise InputError(f"meta.json {key} name {dup!r} twice; refusing the artifact")
    target = meta.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("name"), str) or not isinstance(target.get("options", {}), dict):
        raise InputError("meta.json has no valid 'target'; refusing the artifact")


# ---------------------------------------------------------------- the folder


def _walk(folder: Path) -> tuple[dict[str, int], set[str]]:
    """Every regular file (name -> size) and folder below ``folder``, without following links;
    a symlink or special file, or more than ``MAX_ENTRIES`` entries, is refused."""
    files: dict[str, int] = {}
    dirs: set[str] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(folder / rel if rel else folder) as it:
            for entry in it:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if len(files) + len(dirs) >= MAX_ENTRIES:
                    raise InputError(f"{folder} has more than {MAX_ENTRIES:,} entries; refusing it")
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    dirs.add(name)
                    stack.append(name)
                elif stat.S_ISREG(st.st_mode):
                    files[name] = st.st_size
                else:
                    what = _kind(st.st_mode)
                    raise InputError(f"artifact entry {name!r} is {what}; an artifact holds only regular files and folders")
    return files, dirs


def _check_tree(folder: Path, listed: dict[str, str]) -> None:
    """The folder holds exactly the listed files (plus meta.json), each and all within the size limits."""
    try:
        files, dirs = _walk(folder)
    except OSError as exc:
        raise InputError(f"cannot read the artifact folder {folder}: {exc.strerror}") from None
    files.pop(META, None)
    files.pop(SIG, None)  # the signature signs the id, so the id cannot cover it
    unlisted = sorted(set(files) - set(listed))
    if unlisted:
        names = ", ".join(map(repr, unlisted[:5]))
        raise InputError(f"artifact has files not listed in meta.json: {names}; refusing to load it")
    missing = sorted(set(listed) - set(files))
    if missing:
        raise InputError(f"artifact is incomplete: {missing[0]!r} is missing")
    parents = {name.rsplit("/", i)[0] for name in listed for i in range(1, name.count("/") + 1)}
    extra = sorted(dirs - parents)
    if extra:
        names = ", ".join(map(repr, extra[:5]))
        raise InputError(f"artifact has folders not listed in meta.json: {names}; refusing to load it")
    big = next((n for n in sorted(files) if files[n] > MAX_FILE_BYTES), None)
    if big is not None:
        raise InputError(f"artifact file {big!r} is {files[big]:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit; refusing it")
    if sum(files.values()) > MAX_TOTAL_BYTES:
        raise InputError(f"artifact files total {sum(files.values()):,} bytes, over the {MAX_TOTAL_BYTES:,}-byte limit; refusing it")


def _check_expect(data: bytes, expect: str, folder: Path) -> None:
    want = str(expect).strip().lower()
    if not _HEX64.fullmatch(want):
        raise InputError(f"expected artifact id must be 64 hex digits (sha256 of meta.json), got {str(expect)[:80]!r}")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise InputError(f"artifact {folder} has id {got}, not the expected {want}; refusing to load it")


def read_meta(folder: Path) -> dict:
    """meta.json, read safely and parsed (format checked); ``verify`` checks the rest."""
    return _parse(_meta_bytes(folder), Path(folder) / META)


def verify(folder: Path, expect: str | None = None, public_key=None) -> dict:
    """Check the folder as the module docstring lists, before any code is loaded; returns meta.json.

    ``expect``: the artifact id (``artifact_id``) the caller trusts; without it a self-consistent
    folder passes. ``public_key`` (Ed25519: PEM file, PEM bytes or key object): ``meta.json.sig``
    must be its signature of the artifact id (``sign``).
    """
    folder = Path(folder)
    data = _meta_bytes(folder)
    if expect is not None:
        _check_expect(data, expect, folder)
    if public_key is not None:
        _check_signature(folder, data, public_key)
    meta = _parse(data, folder / META)
    listed = _check_files(meta)
    _check_io(meta)
    _check_tree(folder, listed)
    for name, digest in sorted(listed.items()):
        if sha256(folder / name) != digest:
            raise InputError(f"artifact was modified: sha256 of {name!r} does not match meta.json; refusing to load it")
    return meta


# ---------------------------------------------------------------- writing


def write_meta(folder: Path, meta: dict) -> dict:
    """Hash every file in ``folder`` (recursively) into ``meta['files']`` and write meta.json."""
    folder = Path(folder)
    files, _ = _walk(folder)
    files.pop(META, None)
    files.pop(SIG, None)
    meta = dict(meta, format=FORMAT, files={name: sha256(folder / name) for name in sorted(files)})
    _check_io(meta)  # never publish an artifact that load() would refuse
    (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


# ---------------------------------------------------------------- publishing


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _renameat2():
    """libc's ``renameat2`` (Linux, glibc 2.28+), or None where there is none."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step (``renameat2(RENAME_EXCHANGE)``). False where
    the OS or the file system cannot (the caller falls back to two renames); other errors raise."""
    import ctypes

    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove_old(folder: Path) -> None:
    """Delete the replaced artifact (its own step, so tests can interrupt a publish here)."""
    shutil.rmtree(folder)


def _publish(tmp: Path, dest: Path) -> None:
    """Move the finished folder ``tmp`` to ``dest``, replacing an existing ``dest``.

    With ``renameat2(RENAME_EXCHANGE)`` the old and the new folder swap in one step, so ``dest``
    holds a complete artifact (old, then new) at every moment; the old one, now at ``tmp``, is
    removed afterwards. Where the exchange is unavailable (not Linux, or a file system without it)
    the old folder is renamed aside first and the new one renamed in: a kill between those two
    renames leaves no artifact at ``dest`` (the old one stays at ``.NAME.old.PID``).
    """
    if not os.path.lexists(dest):
        os.rename(tmp, dest)
    elif _exchange(tmp, dest):
        _remove_old(tmp)
    else:
        old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
        os.rename(dest, old)
        os.rename(tmp, dest)
        _remove_old(old)


def lock_path(dest: Path) -> Path:
    """The lock file of an output folder: ``.NAME.lock`` beside it."""
    dest = Path(dest).absolute()
    return dest.with_name(f".{dest.name}.lock")


@contextmanager
def writer_lock(dest: Path):
    """Hold the exclusive writer lock of the output folder ``dest`` (``flock`` on ``.NAME.lock``
    beside it), or raise ``InputError`` at once when another writer holds it.

    The lock belongs to the open file, so a process that dies releases it, and a lock file left
    behind by one does not block. The file is removed on release (while still locked); a writer
    that locked a file just removed that way notices (the path no longer names its file) and tries
    again. Not re-entrant: a second ``writer_lock`` on the same folder fails even in one process.
    """
    import fcntl

    dest = Path(dest).absolute()
    path = lock_path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise InputError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"another shiftc is writing {dest}; try again when it has finished") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file another writer removed on release: take the current one
    else:
        raise InputError(f"cannot take the lock {path}: it keeps being replaced")
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


@contextmanager
def staging(dest: Path, locked: bool = False):
    """Yield a temporary folder beside ``dest``; on success it replaces ``dest`` (``_publish``).

    An existing ``dest`` is replaced only if it is empty or a shiftc artifact. The writer lock of
    ``dest`` is held throughout, unless ``locked`` says the caller already holds it.
    """
    dest = Path(dest).absolute()
    with contextlib.nullcontext() if locked else writer_lock(dest):
        if dest.exists() and not (dest.is_dir() and (not any(dest.iterdir()) or (dest / META).is_file())):
            raise InputError(f"refusing to overwrite {dest}: it exists and is not a shiftc artifact")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            yield tmp
            _publish(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def copy(src: Path, dest: Path) -> None:
    """Copy a verified artifact folder to ``dest`` atomically; the copy is verified against the
    source's id before it replaces ``dest``."""
    expect = artifact_id(src)
    verify(src, expect=expect)
    with staging(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, symlinks=True)
        verify(tmp, expect=expect)


# ---------------------------------------------------------------- signatures (optional: shiftc[sign])


def _crypto():
    """The ``cryptography`` modules signing needs, or a one-line error naming the extra."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ToolchainError("signing needs the 'cryptography' package: pip install 'shiftc[sign]'") from None
    return exceptions, serialization, ed25519


def _key(key, private: bool):
    """An Ed25519 key from a PEM file path, PEM bytes or a ``cryptography`` key object."""
    _, serialization, ed25519 = _crypto()
    kind = (ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey)
    what = "private" if private else "public"
    if isinstance(key, kind):
        return key
    where = "the given key" if isinstance(key, bytes) else str(key)
    if not isinstance(key, bytes):
        fd, size = _open_regular(Path(key), MAX_KEY_BYTES)
        with os.fdopen(fd, "rb") as f:
            key = f.read(size)
    try:
        loaded = (serialization.load_pem_private_key(key, password=None) if private
                  else serialization.load_pem_public_key(key))
    except TypeError:
        raise InputError(f"{where} is an encrypted key; shiftc reads unencrypted PEM keys only") from None
    except ValueError:
        raise InputError(f"{where} is not a PEM {what} key (make one with `openssl genpkey -algorithm ed25519`)") from None
    if not isinstance(loaded, kind):
        raise InputError(f"{where} is not an Ed25519 {what} key; shiftc signs with Ed25519 only")
    return loaded


def _message(aid: str) -> bytes:
    """What a signature signs: the artifact id, with a context label."""
    return f"{SIG_FORMAT} {aid}".encode()


def _check_signature(folder: Path, data: bytes, public_key) -> None:
    exceptions, _, _ = _crypto()
    key = _key(public_key, private=False)
    path = folder / SIG
    if not os.path.lexists(path):
        raise InputError(f"artifact {folder} is not signed (no {SIG}); refusing it")
    fd, size = _open_regular(path, MAX_SIG_BYTES)
    with os.fdopen(fd, "rb") as f:
        text = f.read(size)
    try:
        signature = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        signature = b""
    if len(signature) != 64:
        raise InputError(f"{path} is not an Ed25519 signature; refusing the artifact")
    try:
        key.verify(signature, _message(hashlib.sha256(data).hexdigest()))
    except exceptions.InvalidSignature:
        raise InputError(f"the signature of {folder} does not verify with the public key "
                         "(the artifact was changed, or another key signed it); refusing it") from None


def sign(folder: Path, private_key, expect: str | None = None) -> Path:
    """Verify ``folder`` (against ``expect`` when given) and sign its artifact id with an Ed25519
    ``private_key`` (PEM file, PEM bytes or key object) into ``folder/meta.json.sig``, replacing an
    older signature atomically. Holds the folder's writer lock. Returns the signature file."""
    folder = Path(folder).absolute()
    key = _key(private_key, private=True)
    with writer_lock(folder):
        verify(folder, expect=expect)
        signature = key.sign(_message(hashlib.sha256(_meta_bytes(folder)).hexdigest()))
        fd, tmp = tempfile.mkstemp(prefix=f".{folder.name}.sig.", dir=folder.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64encode(signature) + b"\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, folder / SIG)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return folder / SIG
