"""A read-only view of a Relax function's dataflow for pattern matching, and the binding rewrite
of the model-level passes built on it.

Passes in this package match small op patterns by walking from a binding back to its producers:
``Graph.call(expr, "relax.add")`` returns the Call bound to ``expr`` (or None), ``Graph.const``
returns the NumPy value of anything that is constant (constants and shape ops on them),
``Graph.users`` says who reads a variable (to refuse rewrites whose intermediates are shared).
``rewrite_main`` replaces matched bindings and drops what became dead.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Callable

import numpy as np
import tvm
from tvm import relax

from shiftc.core.contract import MarkedFunction
from shiftc.core.relax_rewrite import rewrite_bindings

OUTPUT = "<function output>"

# Ops whose result is constant when all their inputs are; evaluated with NumPy.
_CONST_OPS = {
    "relax.reshape": lambda g, c: np.reshape(g(c.args[0]), [int(d) for d in shape_of(c)]),
    "relax.permute_dims": lambda g, c: np.transpose(g(c.args[0]), None if c.attrs.axes is None else [int(a) for a in c.attrs.axes]),
    "relax.broadcast_to": lambda g, c: np.broadcast_to(g(c.args[0]), [int(d) for d in shape_of(c)]),
    "relax.isnan": lambda g, c: np.isnan(g(c.args[0])),
    "relax.where": lambda g, c: np.where(g(c.args[0]), g(c.args[1]), g(c.args[2])),
}


class Graph:
    """Bindings and users of one Relax function (dead bindings should be removed first)."""

    def __init__(self, func: relax.Function):
        self.func = func
        self.value: dict[relax.Var, relax.Expr] = {}
        self.users: dict[relax.Var, list] = {}
        for block in func.body.blocks:
            for b in block.bindings:
                if isinstance(b, relax.VarBinding):
                    self.value[b.var] = b.value
                for v in relax.analysis.free_vars(b.value):
                    self.users.setdefault(v, []).append(b.var)
        for v in relax.analysis.free_vars(func.body.body):
            self.users.setdefault(v, []).append(OUTPUT)

    def producer(self, expr) -> relax.Expr | None:
        return self.value.get(expr) if isinstance(expr, relax.Var) else None

    def call(self, expr, op_name: str) -> relax.Call | None:
        """The Call to ``op_name`` that defines ``expr`` (a Var bound to it, or the Call itself)."""
        value = self.producer(expr) if isinstance(expr, relax.Var) else expr
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == op_name:
            return value
        return None

    def n_users(self, var) -> int:
        return len(self.users.get(var, ()))

    def only_used_by(self, var, allowed) -> bool:
        """Every reader of ``var`` is in ``allowed`` (so rewriting them leaves ``var`` dead)."""
        return all(u in allowed for u in self.users.get(var, ()))

    def const(self, expr) -> np.ndarray | None:
        """NumPy value of ``expr`` when it is a compile-time constant, else None."""
        if isinstance(expr, tvm.ir.expr.Constant):
            return expr.value.numpy()
        value = self.producer(expr)
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in _CONST_OPS:
            try:
                args = [self.const(a) for a in value.args if not isinstance(a, relax.ShapeExpr)]
                if any(a is None for a in args):
                    return None
                return np.asarray(_CONST_OPS[value.op.name](self.const, value))
            except (TypeError, ValueError):
                return None
        return None

    def scalar(self, expr) -> float | None:
        c = self.const(expr)
        return float(c.reshape(())) if c is not None and c.size == 1 else None

    def factors(self, expr, root: bool = True) -> tuple[list, list]:
        """Flatten a tree of ``multiply``: (leaf operands, interior vars). Shared products stay leaves."""
        call = self.call(expr, "relax.multiply")
        if call is None or (not root and self.n_users(expr) != 1):
            return [expr], []
        leaves, inner = [], [expr] if isinstance(expr, relax.Var) else []
        for a in call.args:
            lv, iv = self.factors(a, root=False)
            leaves += lv
            inner += iv
        return leaves, inner


def shape_of(expr) -> tuple[int, ...] | None:
    sinfo = expr.ty
    if isinstance(sinfo, relax.TensorType) and sinfo.shape is not None and isinstance(sinfo.shape, relax.ShapeExpr):
        try:
            return tuple(int(d) for d in sinfo.shape.values)
        except TypeError:
            return None
    return None


def const_like(array: np.ndarray, dtype="float32") -> tvm.ir.expr.Constant:
    dtype = str(dtype)
    return relax.const(np.ascontiguousarray(np.asarray(array, dtype=dtype)), dtype)


def op_name(value) -> str | None:
    """A short name for what a binding computes: ``nn.conv2d``, ``call_tir``, a marked function's op."""
    if not isinstance(value, relax.Call):
        return None
    if isinstance(value.op, tvm.ir.Op):
        name = value.op.name.removeprefix("relax.")
        if name == "call_tir" and isinstance(value.args[0], relax.GlobalVar):
            return f"call_tir:{value.args[0].name_hint}"
        return name
    if isinstance(value.op, relax.GlobalVar):
        return value.op.name_hint
    return None


def op_counts(mod: tvm.IRModule, func_name: str = "main") -> Counter:
    """Ops called by ``func_name`` (calls to a ``MarkedFunction`` count as its op)."""
    found = {gv.name_hint: MarkedFunction.from_func(f) for gv, f in mod.functions.items()}
    marked = {name: m.op for name, m in found.items() if m is not None}
    counts: Counter = Counter()
    for block in mod[func_name].body.blocks:
        for b in block.bindings:
            name = op_name(b.value)
            if name is not None:
                counts[marked.get(name, name)] += 1
    return counts


def count_diff(before: Counter, after: Counter) -> dict:
    """``{op: [before, after]}`` for every op whose count changed."""
    return {op: [before.get(op, 0), after.get(op, 0)] for op in sorted(set(before) | set(after)) if before.get(op, 0) != after.get(op, 0)}


Rule = Callable[[Graph, relax.Var, relax.Expr, relax.BlockBuilder], "relax.Expr | None"]


def rewrite_main(mod: tvm.IRModule, rule: Rule, func_name: str = "main") -> tvm.IRModule:
    """Offer every binding of ``func_name`` to ``rule``; bind what it returns to the same var.

    ``rule(graph, var, value, bb)`` returns a replacement expression (built from existing vars,
    constants and ``bb.emit(expr)`` results) or None. The graph is the function *before* rewriting
    (its unused bindings removed first), so rules match on the original dataflow; bindings left
    dead are removed afterwards (``shiftc.core.relax_rewrite.rewrite_bindings``).
    """
    mod = mod.clone()
    mod[func_name] = relax.analysis.remove_all_unused(mod[func_name])
    out, _ = rewrite_bindings(mod, lambda func: partial(rule, Graph(func)), [func_name])
    return out


def unique_value_names(mod: tvm.IRModule, func_name: str = "main") -> tvm.IRModule:
    """``func_name`` with every parameter and bound value under its own name (``lv`` twice becomes
    ``lv`` and ``lv_1``): stages that address values by name (calibration) need that. Exact."""

    @relax.expr_functor.mutator
    class _Renamer(relax.PyExprMutator):
        def __init__(self):
            super().__init__(mod)
            self.seen: set[str] = set()  # parameters are defined first and keep their names

        def visit_var_def_(self, var):
            name = var.name
            if name not in self.seen:
                self.seen.add(name)
                return var
            k = 1
            while f"{name}_{k}" in self.seen:
                k += 1
            self.seen.add(f"{name}_{k}")
            new = (relax.DataflowVar if isinstance(var, relax.DataflowVar) else relax.Var)(f"{name}_{k}", var.ty)
            self.set_var_remap(var, new)
            return new

    names = [b.var.name for block in mod[func_name].body.blocks for b in block.bindings]
    if len(names) == len(set(names)) and not set(names) & {p.name for p in mod[func_name].params}:
        return mod
    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    out[func_name] = _Renamer().visit_expr(mod[func_name])
    return out
