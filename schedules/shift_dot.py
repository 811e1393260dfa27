"""Lower integer shift kernels to the equal integer dot product, on targets where that is faster.

A per-target kernel-form pass: it lives in ``schedules`` (not ``passes``) because it chooses how a
target runs a kernel, after the model-level passes have fixed what the model computes.
``LowerShiftToDot()`` (``shiftc.LowerShiftToDot``) reads each kernel's ``ShiftKernel`` contract:

    call_tir(shift_conv2d_int, [x_i8, packed_codes])  ->  nn.conv2d(x, W, out_dtype="int32")
    call_tir(shift_matmul_int, [x_i8, packed_codes])  ->  matmul(x, W^T, out_dtype="int32")

with the constant ``W = dot_weights(codes, P)`` = ``sum_t sign * 2^(P - p)`` (0 for a zero code):
int8 when every weight fits, else int16 (``x`` is widened to int16 first). Every product is a
power of two times ``x``, and the int32 sum is the one the shift kernel computes, bit for bit
(both lie inside the headroom bound the shift kernel was built under; see shift_kernels.py).

Why a lowering and not a second kernel: as plain Relax ops the dot form fuses with its epilogue
(bias, clamps, requantiser), takes the CPU layout (NHWC/HWIO), the default schedules and
MetaSchedule tuning, like every int8 conv. Which form a target gets is measured
(``benchmarks/shift_kernel_forms.py`` -> ``shift_kernel_choice.json``); a target never measured,
and the VTA, keep the shift form.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.core.contract import ShiftKernel
from shiftc.core.relax_rewrite import rewrite_call_tir
from shiftc.kernels.shift import dot_weights
from shiftc import reference as ref


def layer_dot_weights(kernel: ShiftKernel, packed: np.ndarray) -> np.ndarray:
    """The dot weights of one shift kernel, from its contract and packed codes: OIHW or (O, K)."""
    oi_shape = kernel.oi_shape()
    codes = ref.unpack_term_codes(packed.tobytes(), oi_shape, kernel.bits, kernel.terms, kernel.zero_free, kernel.uniform)
    return dot_weights(codes, kernel.P)


def _shift_int(func) -> ShiftKernel | None:
    kernel = ShiftKernel.from_func(func) if isinstance(func, tvm.tirx.PrimFunc) else None
    return kernel if kernel is not None and kernel.kind == "shift_int" else None


def has_shift_int(mod) -> bool:
    return any(_shift_int(f) is not None for _, f in mod.functions_items())


def _dot_form(bb, func: tvm.tirx.PrimFunc, args) -> relax.Expr | None:
    """The int conv2d / matmul equal to one ``shift_int`` kernel call, or None for other calls."""
    kernel = _shift_int(func)
    if kernel is None:
        return None
    x, packed = args
    w = layer_dot_weights(kernel, packed.value.numpy())
    if w.dtype != np.int8:
        x = bb.emit(relax.op.astype(x, str(w.dtype)))
    if kernel.op == "conv2d":
        return relax.op.nn.conv2d(
            x, relax.const(w), list(kernel.strides), list(kernel.padding), list(kernel.dilation), kernel.groups,
            "NCHW", "OIHW", "NCHW", out_dtype="int32")
    return relax.op.matmul(x, relax.const(np.ascontiguousarray(w.T)), out_dtype="int32")


@tvm.transform.module_pass(opt_level=0, name="shiftc.LowerShiftToDot")
class LowerShiftToDot:
    """Every ``shift_int`` kernel call becomes the equal int conv2d / matmul (see the module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_call_tir(mod, _dot_form)
