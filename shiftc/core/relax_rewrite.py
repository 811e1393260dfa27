"""Binding rewrites: offer each binding of a Relax function to a rule, bind what it returns.

The one rewrite helper of shiftc's Relax passes, model-level (``shiftc.passes``) and per-target
(``shiftc.schedules``). A rule sees one binding ``var = value`` and returns a replacement
expression or None; with the ``relax.BlockBuilder`` it is given it may emit bindings before that
one (``bb.emit``, ``bb.call_te``) and add functions (``bb.add_func``).
"""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import relax

Rule = Callable[[relax.Var, relax.Expr, relax.BlockBuilder], "relax.Expr | None"]


@relax.expr_functor.mutator
class _BindingRewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.rule: Rule | None = None
        self.count = 0

    def visit_var_binding_(self, binding):
        alias = isinstance(binding.value, relax.Var)  # ``gv = lv``: matched at lv already
        new = None if alias else self.rule(binding.var, binding.value, self.builder_)
        if new is None:
            return super().visit_var_binding_(binding)
        self.count += 1
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(new)))


def rewrite_bindings(mod: tvm.IRModule, rule_for: Callable[[relax.Function], Rule],
                     func_names=None) -> tuple[tvm.IRModule, int]:
    """Offer every binding of the Relax functions named in ``func_names`` (None: all of them) to
    a rule, and bind what it returns to the same variable.

    ``rule_for(func)`` makes the rule of one function (it may analyse ``func`` first: rules match
    on the dataflow before rewriting). ``rule(var, value, bb)`` returns a replacement built from
    that function's variables (every variable keeps its identity), constants and ``bb.emit(...)``
    results, or None. Alias bindings are not offered. Returns the new module, whose visited
    functions no longer hold the bindings left unused, and the number of bindings replaced."""
    rewriter = _BindingRewriter(mod.clone())
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, relax.Function) or (func_names is not None and gv.name_hint not in func_names):
            continue
        rewriter.rule = rule_for(func)
        rewriter.builder_.update_func(gv, relax.analysis.remove_all_unused(rewriter.visit_expr(func)))
    return rewriter.builder_.get(), rewriter.count


def rewrite_call_tir(mod: tvm.IRModule, replace: Callable) -> tvm.IRModule:
    """Replace ``call_tir(f, args)`` bindings in every Relax function: ``replace(bb, f, args)``
    (``f`` the PrimFunc) returns the new expression or None to keep the call. Returns ``mod``
    itself when nothing was replaced, else the new module without the functions and bindings
    left unused."""
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def rule(_var, value, bb):
        if not (isinstance(value, relax.Call) and value.op.same_as(call_tir)):
            return None
        func = mod[value.args[0]]
        return replace(bb, func, list(value.args[1].fields)) if isinstance(func, tvm.tirx.PrimFunc) else None

    out, count = rewrite_bindings(mod, lambda _func: rule)
    return relax.transform.DeadCodeElimination()(out) if count else mod
