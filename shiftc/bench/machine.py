"""Where and with what a benchmark ran: the source revision, package versions, the CPU (its model
name, LLVM's name for it, and the vector ISA extensions /proc/cpuinfo lists) and the cores."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("shiftc", "apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime", "openvino", "nncf", "numpy")
# Vector extensions that decide which kernels a runtime can use (x86 flags, aarch64 Features).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
             "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")


def git_revision(path: Path | None = None) -> dict | None:
    """The git commit of the checkout holding ``path`` (default: this package), and whether it has
    uncommitted changes; None outside a git checkout or without git."""
    where = Path(path or __file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution; None where it is not installed."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpuinfo(text: str | None = None) -> dict:
    """Model name, nominal MHz and flags from /proc/cpuinfo (first processor); empty where unreadable."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    info: dict = {}
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Model", "CPU part") and "model" not in info:
            info["model"] = value
        elif key == "cpu MHz" and "mhz" not in info:
            info["mhz"] = float(value)
        elif key in ("flags", "Features") and "flags" not in info:
            info["flags"] = value.split()
    return info


def llvm_host_cpu() -> str | None:
    """LLVM's name for this CPU (what shiftc's x86 target compiles for by default), via TVM."""
    try:
        from shiftc.core.host import host_cpu

        return host_cpu()
    except Exception:  # noqa: BLE001 - recorded as unknown; TVM may be missing where only onnxruntime is timed
        return None


def describe() -> dict:
    """The record every benchmark JSON carries (``machine``)."""
    info = cpuinfo()
    flags = set(info.get("flags", ()))
    return {
        "git": git_revision(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": {
            "model": info.get("model", platform.processor() or None),
            "llvm_cpu": llvm_host_cpu(),
            "nominal_mhz": info.get("mhz"),
            # the ISA_FLAGS extensions /proc/cpuinfo lists (None: it could not be read)
            "isa": [f for f in ISA_FLAGS if f in flags] if flags else None,
            "logical_cpus": os.cpu_count(),
            "usable_cpus": sorted(os.sched_getaffinity(0)),
        },
    }
