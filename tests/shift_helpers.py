"""Helpers shared by the shift-pass tests."""

from __future__ import annotations

import tvm
from tvm import relax

from shiftc.passes import shift as S


def ShiftWeights(plan: dict[str, S.ShiftConfig]) -> tvm.transform.Pass:  # noqa: N802 (TVM pass style)
    """Fold constants, then rewrite every layer named in ``plan`` into shift kernels (what the
    shift stage does with a plan it chose; here the test gives the plan)."""

    @tvm.transform.module_pass(opt_level=0, name="tests.ShiftWeights")
    def _pass(mod, _ctx):
        mod = relax.transform.FoldConstant()(mod)
        layers = S.find_layers(mod)
        unknown = set(plan) - {layer.name for layer in layers}
        if unknown:
            raise ValueError(f"plan names unknown layers {sorted(unknown)}")
        encoded = {layer.name: S.encode(layer, plan[layer.name]) for layer in layers if layer.name in plan}
        return S.RewriteShiftLayers(plan, encoded)(mod)

    return _pass
