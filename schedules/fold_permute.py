"""Fold ``permute_dims`` of constants in NumPy, before TVM's ``FoldConstant``, for CPU builds.

``ConvertLayout`` (NCHW -> NHWC/HWIO) puts a ``permute_dims`` on every constant a conv reads or
that is broadcast against its output: weights, biases, requantiser multipliers and shifts.
``FoldConstant`` would fold each one by legalising it to its own TIR transpose, building it with
LLVM and running it: about 45 ms apiece, ~15 s for MobileNetV2's ~345. A transpose only moves
values, so ``np.transpose`` gives the very same bytes:

    lv = permute_dims(C, axes)  ->  lv = C'   with  C' = np.transpose(C, axes)

also where ``C`` is a variable bound to such a result (chains of permutes).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.core.relax_rewrite import rewrite_bindings


def _fold_rule(_func):
    """The rule of one function: it remembers the values it folded, for chains."""
    permute = tvm.ir.Op.get("relax.permute_dims")
    folded: dict = {}

    def constant(expr):
        if isinstance(expr, tvm.ir.expr.Constant):
            return expr.value.numpy(), str(expr.value.dtype)
        return folded.get(expr) if isinstance(expr, relax.Var) else None

    def rule(var, value, _bb):
        if not (isinstance(value, relax.Call) and value.op.same_as(permute)):
            return None
        found = constant(value.args[0])
        if found is None:
            return None
        data, dtype = found
        axes = value.attrs.axes
        out = np.ascontiguousarray(np.transpose(data, None if axes is None else [int(a) for a in axes]))
        folded[var] = (out, dtype)
        return relax.const(out, dtype)

    return rule


@tvm.transform.module_pass(opt_level=0, name="shiftc.FoldConstantPermute")
class FoldConstantPermute:
    """Every ``permute_dims`` of a constant becomes the transposed constant (exact, see module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        out, count = rewrite_bindings(mod, _fold_rule)
        return out if count else mod
