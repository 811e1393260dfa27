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


def rewrite_call_tir(mod: tvm.IRModule, replace: Callable) -> tvm.IRModule:
    """Replace ``call_tir(f, args)`` bindings: ``replace(builder, f, args)`` returns the new
    expression (it may emit bindings before it with ``builder``) or None to keep the call."""

    @relax.expr_functor.mutator
    class _CallTIRRewriter(relax.PyExprMutator):
        def __init__(self):
            super().__init__(mod)
            self.count = 0

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not call.op.same_as(tvm.ir.Op.get("relax.call_tir")):
                return call
            func = mod[call.args[0]]
            new = replace(self.builder_, func, list(call.args[1].fields)) if isinstance(func, tvm.tirx.PrimFunc) else None
            if new is None:
                return call
            self.count += 1
            return new

    return rewrite_functions(mod, _CallTIRRewriter())
