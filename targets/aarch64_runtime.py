"""The aarch64 TVM runtime and the cross-built C++ runner that an ``arm`` artifact carries.

The runtime libraries come from the PyPI aarch64 wheels of the same ``apache-tvm`` /
``apache-tvm-ffi`` versions as the host's; they are downloaded once with ``pip download`` and
cached under ``~/.cache/shiftc/aarch64/`` (``$SHIFTC_CACHE_DIR/aarch64`` when that is set).
``scripts/setup.sh`` fetches them ahead of time (``shiftc targets --prefetch``); with
``SHIFTC_OFFLINE=1`` (the test suite sets it) nothing is downloaded, and an uncached runtime is a
``ToolchainError`` naming that command. The
runner (``runner/runner.cc``) is compiled with ``aarch64-linux-gnu-g++`` against the headers in the
host's x86 wheels and linked against those libraries; it is cached by the hash of its inputs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from shiftc.core.errors import ToolchainError

RUNTIME_LIBS = {"libtvm_runtime.so": ("apache-tvm", "tvm/lib/"), "libtvm_ffi.so": ("apache-tvm-ffi", "tvm_ffi/lib/")}
RUNNER_SOURCE = Path(__file__).with_name("runner") / "runner.cc"
CXX = "aarch64-linux-gnu-g++"
PLATFORM = "manylinux_2_28_aarch64"


def cache_root() -> Path:
    base = os.environ.get("SHIFTC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "shiftc")
    return Path(base) / "aarch64"


def _versions() -> dict[str, str]:
    import tvm
    import tvm_ffi

    return {"apache-tvm": tvm.__version__, "apache-tvm-ffi": tvm_ffi.__version__}


def runtime_dir() -> Path:
    v = _versions()
    return cache_root() / f"tvm-{v['apache-tvm']}-ffi-{v['apache-tvm-ffi']}"


def runtime_cached() -> bool:
    return all((runtime_dir() / name).is_file() for name in RUNTIME_LIBS)


PREFETCH = "shiftc targets --prefetch"


def offline() -> bool:
    """Whether downloads are disabled (``SHIFTC_OFFLINE`` set to anything but empty or 0)."""
    return os.environ.get("SHIFTC_OFFLINE", "") not in ("", "0")


def runtime_libs() -> dict[str, Path]:
    """Paths of the aarch64 ``libtvm_runtime.so`` and ``libtvm_ffi.so``; fetched on first use
    (unless ``SHIFTC_OFFLINE`` is set: then an uncached runtime is a ``ToolchainError``)."""
    folder = runtime_dir()
    if not runtime_cached():
        if offline():
            raise ToolchainError(
                f"the aarch64 TVM runtime is not cached in {folder} and SHIFTC_OFFLINE is set; "
                f"fetch it first with `{PREFETCH}` (scripts/setup.sh does)"
            )
        _fetch(folder)
    return {name: folder / name for name in RUNTIME_LIBS}


def prefetch() -> Path:
    """Download the runtime into the cache unless it is there (idempotent; ignores SHIFTC_OFFLINE)."""
    if not runtime_cached():
        _fetch(runtime_dir())
    return runtime_dir()


def _fetch(folder: Path) -> None:
    versions = _versions()
    specs = [f"{pkg}=={ver}" for pkg, ver in versions.items()]
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    with tempfile.TemporaryDirectory(prefix="shiftc-aarch64-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--platform", PLATFORM, "--python-version", py, "--dest", tmp, *specs]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            cause = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ToolchainError(
                f"the aarch64 TVM runtime is not cached in {folder} and downloading it failed ({cause}); "
                f"on a machine with network run `pip download --no-deps --only-binary=:all: --platform {PLATFORM} "
                f"{' '.join(specs)}` and copy {' and '.join(RUNTIME_LIBS)} from the wheels into {folder}"
            )
        staged = Path(tempfile.mkdtemp(prefix=".staging-", dir=_mkdir(folder.parent)))
        for name, (pkg, prefix) in RUNTIME_LIBS.items():
            wheel = next(Path(tmp).glob(pkg.replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(wheel) as zf, zf.open(prefix + name) as src, open(staged / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        if folder.exists():  # another process fetched it meanwhile
            shutil.rmtree(staged)
        else:
            os.rename(staged, folder)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def include_dirs() -> list[Path]:
    """C++ headers of tvm-ffi (and tvm) from the host's wheels; the runner needs only tvm-ffi's."""
    import tvm
    import tvm_ffi

    dirs = [Path(tvm_ffi.__file__).parent / "include", Path(tvm.__file__).parent / "include"]
    if not (dirs[0] / "tvm" / "ffi" / "extra" / "module.h").is_file():
        raise ToolchainError(f"the tvm-ffi C++ headers are missing from {dirs[0]}; reinstall apache-tvm-ffi")
    return dirs


# The runner's bytes must not depend on where the host's wheels or this source live: header paths
# reach the binary through __FILE__ in the tvm-ffi check macros, so ``_prefix_maps`` rewrites them.
RUNNER_FLAGS = ("-std=c++17", "-O2")


def _prefix_maps() -> list[str]:
    """``-ffile-prefix-map`` flags that name the include folders and the runner source by stable
    relative names (``tvm_ffi/include``, ``tvm/include``, ``runner``) instead of this host's paths."""
    dirs = include_dirs()
    stable = {dirs[0]: "tvm_ffi/include", dirs[1]: "tvm/include", RUNNER_SOURCE.parent: "runner"}
    return [f"-ffile-prefix-map={path}={name}" for path, name in stable.items()]


def runner_binary() -> Path:
    """The cross-built runner, compiled once per (source, headers, libraries, compiler) and cached."""
    libs = runtime_libs()
    key = hashlib.sha256()
    key.update(RUNNER_SOURCE.read_bytes())
    for lib in libs.values():
        key.update(lib.read_bytes())
    key.update(str(_versions()).encode())
    key.update(subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout.encode())
    key.update(" ".join(RUNNER_FLAGS).encode())
    out = cache_root() / f"runner-{key.hexdigest()[:16]}" / "runner"
    if out.is_file():
        return out
    staged = Path(tempfile.mkdtemp(prefix=".staging-", dir=_mkdir(cache_root())))
    cmd = [CXX, *RUNNER_FLAGS, "-o", str(staged / "runner"), str(RUNNER_SOURCE)]
    cmd += [f"-I{d}" for d in include_dirs()] + _prefix_maps()
    cmd += [f"-L{runtime_dir()}", "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staged, ignore_errors=True)
        raise ToolchainError(f"cross-compiling the arm runner failed: {proc.stderr.strip()[:500]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        os.replace(staged / "runner", out)
    shutil.rmtree(staged, ignore_errors=True)
    return out

