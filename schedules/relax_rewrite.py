"""Run one call-rewriting ``PyExprMutator`` over every Relax function of a module."""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import relax


def rewrite_functions(mod: tvm.IRModule, mutator, before_each: Callable | None = None) -> tvm.IRModule:
    """``mutator`` (built on ``mod``; counts its rewrites in ``mutator.count``) over each Relax
    function; ``before_each(func)`` runs first. Unchanged modules come back as they were; changed
    ones without the bindings the rewrite left unused."""
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            if before_each is not None:
                before_each(func)
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    if not mutator.count:
        return mod
    return relax.transform.DeadCodeElimination()(mutator.builder_.get())
