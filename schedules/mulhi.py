"""The high word of a 32 x 32-bit product as one elementwise TE kernel, for CPU builds.

A per-target kernel-form pass (``UseMulhi``, ``shiftc.UseMulhi``), run after ``ConvertLayout``::

    astype(right_shift(multiply(astype(x_i32, int64), C_i64), 32), int32)   [C constant, in int32 range]
        ->  mulhi(x, i32(C)):  out = i32((i64(x) * i64(C)) >> 32)

the same integers. Why: the requantisers' int32 form (``requant_i32``) multiplies by a per-channel
constant; as Relax ops, ``FoldConstant`` turns that constant into an int64 tensor, and a kernel
loading int64 multipliers cannot know they fit 32 bits, so LLVM emits a full 64 x 64 multiply
(three ``vpmuludq`` per four lanes on AVX2). With the constant kept int32 and widened inside the
kernel, the product of two sign-extended int32 values becomes LLVM's ``mulhs``: ``vpmuldq`` on x86
(two per eight lanes), ``smull`` on aarch64. The kernel is elementwise with a broadcast operand, so
it fuses into the conv or GEMM whose epilogue it is; run after ``ConvertLayout`` (a TE call is
opaque to it), its operand already has the conv's layout.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te

from shiftc.core.relax_rewrite import rewrite_bindings


def mulhi_te(x: te.Tensor, c: te.Tensor) -> te.Tensor:
    """``out = int32((int64(x) * int64(c)) >> 32)``, ``c`` broadcast against ``x`` (numpy rules)."""
    nx, nc = len(x.shape), len(c.shape)

    def at(*i):
        ci = [0 if int(c.shape[d]) == 1 else i[nx - nc + d] for d in range(nc)]
        prod = x(*i).astype("int64") * c(*ci).astype("int64")
        return tvm.tirx.shift_right(prod, tvm.tirx.const(32, "int64")).astype("int32")

    return te.compute(x.shape, at, name="mulhi")


def _call(e, op: str):
    return e if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == op else None


def _const_value(var2val, e) -> np.ndarray | None:
    e = var2val.get(e, e) if isinstance(e, relax.Var) else e
    return e.value.numpy() if isinstance(e, tvm.ir.expr.Constant) else None


class _MulhiRule:
    def __init__(self, var2val: dict):
        self.var2val = var2val

    def _value(self, e):
        return self.var2val.get(e, e) if isinstance(e, relax.Var) else e

    def __call__(self, _var, value, bb):
        cast = _call(value, "relax.astype")
        if cast is None or str(cast.attrs.dtype) != "int32":
            return None
        shr = _call(self._value(cast.args[0]), "relax.right_shift")
        if shr is None:
            return None
        amount = _const_value(self.var2val, shr.args[1])
        if amount is None or amount.size != 1 or int(amount.reshape(-1)[0]) != 32:
            return None
        mul = _call(self._value(shr.args[0]), "relax.multiply")
        if mul is None:
            return None
        widen = _call(self._value(mul.args[0]), "relax.astype")
        c = _const_value(self.var2val, mul.args[1])
        if widen is None or c is None or str(widen.attrs.dtype) != "int64" or str(widen.args[0].ty.dtype) != "int32":
            return None
        if c.dtype != np.int64 or c.size == 0 or c.min() < -(2**31) or c.max() > 2**31 - 1:
            return None
        x = widen.args[0]
        if len(c.shape) > len(x.ty.shape.values):
            return None
        return bb.call_te(mulhi_te, x, relax.const(c.astype(np.int32), "int32"), primfunc_name_hint="mulhi")


@tvm.transform.module_pass(opt_level=0, name="shiftc.UseMulhi")
class UseMulhi:
    """``astype(right_shift(multiply(astype(x_i32, int64), C), 32), int32)`` -> ``mulhi`` (module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        out, count = rewrite_bindings(mod, lambda func: _MulhiRule(relax.analysis.get_var2val(func)))
        return relax.transform.DeadCodeElimination()(out) if count else mod
