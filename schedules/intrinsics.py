"""Import TVM's tensor intrinsics (VNNI, AVX-512, NEON, ...) fast, and only those a target uses.

``tvm.s_tir.tensor_intrin`` parses many TVMScript functions; each parse calls ``inspect.getmodule``,
which for code from ``<string>``/frozen importlib files finds no cached entry and rescans every
module in ``sys.modules``. That made the import take 40-140 s here. Pre-seeding ``inspect``'s
file -> module cache for those pseudo-files cuts it to a few seconds.

The package's ``__init__`` also imports every family (CUDA's alone is ~7 s of TVMScript parsing)
whatever the target. For a known target only its family is imported: the package is entered
without running its ``__init__`` (a plain package module over the same folder), so the other
families are still importable later, by name. MetaSchedule needs the intrinsics to generate
x86 / ARM design spaces and to replay tensorized records.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import types

_PSEUDO_FILES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<ast>", "<string>")
_PACKAGE = "tvm.s_tir.tensor_intrin"


def _families(target) -> tuple[str, ...] | None:
    """The ``tvm.s_tir.tensor_intrin`` submodules ``target`` can use (None: all of them)."""
    if target is None:
        return None
    kind = target.kind.name
    if kind == "llvm":
        triple = str(target.attrs.get("mtriple", "")) if "mtriple" in target.attrs else ""
        return ("arm_cpu",) if triple.startswith("aarch64") else ("x86",)
    if kind == "cuda":
        return ("cuda",)
    return None


def _enter_package() -> None:
    """``tvm.s_tir.tensor_intrin`` as a bare package (its ``__init__`` not run) unless already imported."""
    if _PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(_PACKAGE)
    package = types.ModuleType(_PACKAGE)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__, package.__package__ = spec, _PACKAGE
    sys.modules[_PACKAGE] = package
    setattr(importlib.import_module("tvm.s_tir"), "tensor_intrin", package)


@functools.cache
def _import(families: tuple[str, ...] | None) -> None:
    for name in _PSEUDO_FILES:
        inspect.modulesbyfile.setdefault(name, "builtins")
    if families is None:
        importlib.import_module(_PACKAGE)  # registers every family
    else:
        _enter_package()
        for family in families:
            importlib.import_module(f"{_PACKAGE}.{family}")
    from . import x86_int8  # noqa: F401  (shiftc's AVX2 / fixed VNNI int8 intrinsics)


def import_tensor_intrinsics(target=None) -> None:
    """Register the tensor intrinsics ``target`` (a ``tvm.target.Target``) can use; all without one."""
    _import(_families(target))
