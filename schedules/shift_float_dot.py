"""Run float shift kernels as FP32 conv2d / matmul over weights decoded once, at compile time.

A per-target kernel-form pass, the float sibling of ``shift_dot``. The float shift kernel decodes
its packed codes on every call and then forms each term ``x * sign * 2^-p`` by exponent arithmetic
(several integer ops per multiply-add). ``LowerShiftFloatToDot()`` decodes the codes once, while
compiling, into the constant weights ``W = sum_t sign * 2^-p`` (exact in float32) and rewrites

    call_tir(shift_conv2d_float, [x, packed, alpha(, bias)])
      -> clamp(nn.conv2d(x, W) * alpha (+ bias), lo, hi)        (matmul likewise, W^T)

so the layer fuses and schedules like any FP32 conv. Each product ``x * 2^-p`` is the same float
as the kernel's term, except that the kernel flushes subnormal results to zero
(``shiftc.reference.shift_float``); sums run in another order (FP32 round-off). The artifact then
holds the decoded FP32 weights instead of the packed codes. Which form a target runs is measured
(``shift_form.float_kernel_form``); the compile report names it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.core.contract import ShiftKernel
from shiftc.core.relax_rewrite import rewrite_call_tir
from shiftc import reference as ref


def float_dot_weights(kernel: ShiftKernel, packed: np.ndarray) -> np.ndarray:
    """``sum_t sign * 2^-p`` (0 for a zero code) of one float shift kernel, OIHW or (O, K), float32."""
    oi_shape = kernel.oi_shape()
    codes = ref.unpack_term_codes(packed.tobytes(), oi_shape, kernel.bits, kernel.terms, kernel.zero_free, kernel.uniform)
    return ref.decode_multi(codes.astype(np.int8), np.ones(oi_shape[0], np.float32))


def _shift_float(func) -> ShiftKernel | None:
    kernel = ShiftKernel.from_func(func) if isinstance(func, tvm.tirx.PrimFunc) else None
    return kernel if kernel is not None and kernel.kind == "shift_float" else None


def has_shift_float(mod) -> bool:
    return any(_shift_float(f) is not None for _, f in mod.functions_items())


def _per_channel(values, kernel: ShiftKernel, ndim: int) -> relax.Expr:
    shape = [1] * ndim
    shape[1 if kernel.op == "conv2d" else ndim - 1] = -1
    return relax.const(np.asarray(values, np.float32).reshape(shape))


def _dot_form(bb, func: tvm.tirx.PrimFunc, args) -> relax.Expr | None:
    """The FP32 conv2d / matmul + epilogue equal to one ``shift_float`` kernel call, or None."""
    kernel = _shift_float(func)
    if kernel is None or not all(isinstance(a, tvm.ir.expr.Constant) for a in args[1:]):
        return None
    x, packed, alpha, *bias = args
    w = float_dot_weights(kernel, packed.value.numpy())
    if kernel.op == "conv2d":
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), list(kernel.strides), list(kernel.padding), list(kernel.dilation),
                                       kernel.groups, "NCHW", "OIHW", "NCHW", out_dtype="float32"))
    else:
        y = bb.emit(relax.op.matmul(x, relax.const(np.ascontiguousarray(w.T)), out_dtype="float32"))
    ndim = len(y.ty.shape.values)
    y = relax.op.multiply(y, _per_channel(alpha.value.numpy(), kernel, ndim))
    if bias:
        y = relax.op.add(bb.emit(y), _per_channel(bias[0].value.numpy(), kernel, ndim))
    if kernel.lo is not None:
        y = relax.op.maximum(bb.emit(y), relax.const(np.float32(kernel.lo)))
    if kernel.hi is not None:
        y = relax.op.minimum(bb.emit(y), relax.const(np.float32(kernel.hi)))
    return y


@tvm.transform.module_pass(opt_level=0, name="shiftc.LowerShiftFloatToDot")
class LowerShiftFloatToDot:
    """Every ``shift_float`` kernel call with constant codes becomes its FP32 conv2d / matmul (module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_call_tir(mod, _dot_form)
