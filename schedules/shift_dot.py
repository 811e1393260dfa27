"""Lower integer shift kernels to the equal integer dot product, on targets where that is faster.

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

from shiftc.reference import shift as ref

from .relax_rewrite import rewrite_call_tir
from shiftc.kernels.shift import dot_weights

SHIFT_INT = "shift_int"


def layer_dot_weights(at, packed: np.ndarray) -> np.ndarray:
    """The dot weights of one shift kernel, from its attributes and packed codes: OIHW or (O, K)."""
    op, bits, terms = str(at["shiftc.op"]), int(at["shiftc.bits"]), int(at["shiftc.terms"])
    wshape = [int(d) for d in at["shiftc.weight_shape"]]
    oi_shape = wshape if op == "conv2d" else [wshape[1], wshape[0]]
    codes = ref.unpack_codes(packed.tobytes(), bits, terms * int(np.prod(oi_shape)), bool(int(at["shiftc.zero_free"])),
                             shape=(terms, *oi_shape))
    return dot_weights(codes, int(at["shiftc.P"]))


def has_shift_int(mod) -> bool:
    return any(isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and str(f.attrs.get("shiftc.kernel", "")) == SHIFT_INT
               for _, f in mod.functions_items())


def _dot_form(builder, func: tvm.tirx.PrimFunc, args) -> relax.Expr | None:
    """The int conv2d / matmul equal to one ``shift_int`` kernel call, or None for other calls."""
    at = func.attrs
    if at is None or str(at.get("shiftc.kernel", "")) != SHIFT_INT:
        return None
    x, packed = args
    w = layer_dot_weights(at, packed.value.numpy())
    if w.dtype != np.int8:
        x = builder.emit(relax.op.astype(x, str(w.dtype)))
    if str(at["shiftc.op"]) == "conv2d":
        return relax.op.nn.conv2d(
            x, relax.const(w), [int(v) for v in at["shiftc.strides"]], [int(v) for v in at["shiftc.padding"]],
            [int(v) for v in at["shiftc.dilation"]], int(at["shiftc.groups"]), "NCHW", "OIHW", "NCHW", out_dtype="int32")
    return relax.op.matmul(x, relax.const(np.ascontiguousarray(w.T)), out_dtype="int32")


def LowerShiftToDot() -> tvm.transform.Pass:  # noqa: N802 (TVM pass style)
    """Module pass: every ``shift_int`` kernel call becomes the equal int conv2d/matmul (see module doc)."""

    @tvm.transform.module_pass(opt_level=0, name="shiftc.LowerShiftToDot")
    def _pass(mod, _ctx):
        return rewrite_call_tir(mod, _dot_form)

    return _pass
