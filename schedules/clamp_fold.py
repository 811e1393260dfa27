"""Fold two consecutive integer clamps with constant bounds into one, for CPU builds.

A per-target kernel-form pass (``FoldClamps``, ``shiftc.FoldClamps``), run after
``int_relax.LowerIntElementwise``::

    minimum(maximum(minimum(maximum(x, a), b), c), d)  ->  minimum(maximum(x, max(a, c)), min(max(b, c), d))

the same integers for every ``x`` (``max`` distributes over ``min``: ``max(min(u, b), c) =
min(max(u, c), max(b, c))``), constants broadcast as the ops broadcast them. Why: an integer conv's
activation clamp (ReLU6 on the int32 accumulator) is followed by the requantiser's own clamp to its
saturating input range (``requant_i32``); folded, the fused epilogue does two compares per output
instead of four.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.core.relax_rewrite import rewrite_bindings


def _op(e, name: str):
    return e if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == name else None


class _ClampRule:
    def __init__(self, var2val: dict):
        self.var2val = var2val

    def _value(self, e):
        return self.var2val.get(e, e) if isinstance(e, relax.Var) else e

    def _const(self, e) -> np.ndarray | None:
        e = self._value(e)
        return e.value.numpy() if isinstance(e, tvm.ir.expr.Constant) else None

    def _clamp(self, e):
        """(x, lower, upper) of ``minimum(maximum(x, lower), upper)`` with integer constants, or None."""
        mn = _op(self._value(e), "relax.minimum")
        mx = _op(self._value(mn.args[0]), "relax.maximum") if mn is not None else None
        if mx is None:
            return None
        lo, hi = self._const(mx.args[1]), self._const(mn.args[1])
        if lo is None or hi is None or not np.issubdtype(lo.dtype, np.integer) or lo.dtype != hi.dtype:
            return None
        return mx.args[0], lo, hi

    def __call__(self, _var, value, _bb):
        outer = self._clamp(value)
        if outer is None:
            return None
        y, c, d = outer
        inner = self._clamp(y)
        if inner is None or inner[1].dtype != c.dtype:
            return None
        x, a, b = inner
        lo, hi = np.maximum(a, c), np.minimum(np.maximum(b, c), d)
        dtype = str(c.dtype)
        return relax.op.minimum(relax.op.maximum(x, relax.const(lo, dtype)), relax.const(hi, dtype))


@tvm.transform.module_pass(opt_level=0, name="shiftc.FoldClamps")
class FoldClamps:
    """Two consecutive constant clamps -> one (module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        out, count = rewrite_bindings(mod, lambda func: _ClampRule(relax.analysis.get_var2val(func)))
        return relax.transform.DeadCodeElimination()(out) if count else mod
