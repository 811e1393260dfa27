"""Import TVM's tensor intrinsics (VNNI, AVX-512, NEON, ...) fast.

``tvm.s_tir.tensor_intrin`` parses many TVMScript functions; each parse calls ``inspect.getmodule``,
which for code from ``<string>``/frozen importlib files finds no cached entry and rescans every
module in ``sys.modules``. That made the import take 40-140 s here. Pre-seeding ``inspect``'s
file -> module cache for those pseudo-files cuts it to a few seconds. MetaSchedule needs the
intrinsics to generate x86 design spaces and to replay tensorized records.
"""

from __future__ import annotations

import functools
import inspect

_PSEUDO_FILES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<ast>", "<string>")


@functools.cache
def import_tensor_intrinsics() -> None:
    for name in _PSEUDO_FILES:
        inspect.modulesbyfile.setdefault(name, "builtins")
    import tvm.s_tir.tensor_intrin  # noqa: F401  (registers the intrinsics)

    from . import x86_int8  # noqa: F401  (shiftc's AVX2 / fixed VNNI int8 intrinsics)
