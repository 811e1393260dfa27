"""Integerize: a calibrated float Relax ``main`` -> integer-only arithmetic between a quantiser at
the inputs and a dequantiser at the outputs.

Every integer value carries its real scale (``value.Q``: per tensor, or per axis for accumulators
of per-channel weights) and is requantised (dyadic ``m * 2**-e``) to the scale that calibration
gave its float original only when a consumer needs it narrower or per tensor. Widths: int8 into
matmul/conv, int16 for residual sums and the inputs of non-linear ops, int32 accumulators.

    driver.py          the binding loop: inputs, constants (fold.py), each op by its rule, outputs
    registry.py        ``@int_rule(op)`` -> ``RULES``; the default for other ops is the float island
    boundary.py        input quantisers, output dequantisers, float islands
    context.py         the rewrite state and the helpers rules share (requantise, emit, ...)
    rules_linear.py    matmul, conv2d, shift kernels        rules_elementwise.py  add, multiply, relu, ...
    rules_nonlinear.py softmax, gelu, layer_norm            rules_pool.py         mean, sum, pools, resize
    rules_layout.py    reshape, permute_dims, concat, ...   scales.py             requantiser / weight codes
    rules_activation.py clip/clamps, sigmoid/tanh/erf tables, leaky ReLU / PReLU
    rules_attention.py  sign and the add-only sign matmul (ShiftAddViT attention)

docs/INTEGER.md lists every rewrite and how to add one.
"""

from . import rules_activation, rules_attention, rules_elementwise, rules_layout, rules_linear, rules_nonlinear, rules_pool  # noqa: F401  (register)
from .boundary import unsupported_error
from .driver import coverage, integerize
from .registry import RULES, has_integer_form, int_rule
from .value import ACT_BITS, WIDE_BITS, IntOptions, IntReport, Q

__all__ = ["integerize", "coverage", "unsupported_error", "int_rule", "has_integer_form", "RULES", "IntOptions", "IntReport", "Q", "ACT_BITS", "WIDE_BITS"]
