"""What vector and dot-product units a CPU target has, asked from LLVM (never from the host).

Schedules and intrinsics are chosen from the *target's* ``mcpu``: a build for ``x86-64-v3`` on an
AVX-512 machine must not use AVX-512, and a build for ``znver5`` gets it wherever it is compiled.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=64)
def _features(target_json: str) -> frozenset:
    import tvm
    from tvm.target import codegen

    target = tvm.target.Target(target_json)
    if target.kind.name != "llvm":
        return frozenset()
    return frozenset(str(f) for f in codegen.llvm_get_cpu_features(target))


def features(target) -> frozenset:
    """LLVM feature names (e.g. ``avx2``, ``avx512f``, ``avx512vnni``) of a ``tvm.target.Target``."""
    return _features(str(target))


def has_feature(target, name: str) -> bool:
    return name in features(target)


def int8_dot_instruction(target) -> str:
    """The x86 int8 dot-product path for a target: 'avx512vnni', 'avxvnni', 'avx2' or 'none'."""
    f = features(target)
    for name in ("avx512vnni", "avxvnni", "avx2"):
        if name in f:
            return name
    return "none"
