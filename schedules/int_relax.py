"""Lower the integer requantisers and residual adds to plain Relax ops, for CPU builds.

A per-target kernel-form pass: it lives in ``schedules`` (not ``passes``) because it chooses how a
target runs a kernel, after the model-level passes have fixed what the model computes.
``LowerIntElementwise()`` (``shiftc.LowerIntElementwise``) reads the ``Requantize`` / ``AddInt``
contract of each kernel:

    call_tir(requant_axis, [z, m, e])  ->  astype(min(max(right_shift(z64 * M + H, E), lo), hi), int<bits>)
    call_tir(requant,      [z])        ->  the same with scalar M, H, E
      (z of at most 32 bits: the int32 form of ``requant_i32``, the same integers with one
       32 x 32 -> high-32 multiply, ``UseMulhi`` later, instead of 64-bit arithmetic)
    call_tir(add_int,      [a, b])     ->  astype(min(max(rr(a64 * ma, ea) + rr(b64 * mb, eb), lo), hi), int<bits>)

with ``rr(v, e) = (v + H) >> e`` and ``H = 2^(e-1)`` (0 for ``e = 0``): the round-half-up shift of
``shiftc.reference``, in int64 like the TE kernels of ``shiftc/kernels/integer.py``, so results are equal bit
for bit. ``M``/``H``/``E`` are constants shaped to broadcast along the channel axis; ``e`` is
clamped to ``[0, 62]`` exactly as the TE kernel clamps it, so no shift is undefined. Per-tensor
parameters are one-element tensors too (never folded into the kernel's code), so a fused kernel's
structure, and with it its tuning-database key, does not depend on the calibration.

Why: a TE call is opaque to ``ConvertLayout`` and ``FuseOps``. As Relax ops the requantiser
takes the NHWC layout of the conv before it and fuses into the conv's kernel, instead of a
transpose / requantise / transpose kernel of its own after every conv.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.core.contract import AddInt, Requantize
from shiftc.core.relax_rewrite import rewrite_call_tir
from shiftc.reference.rounding import code_range

from . import requant_i32

MAX_SHIFT = 62
INT32_INPUTS = ("int32", "int16", "int8", "uint16", "uint8")  # requantiser inputs the int32 form takes


def _out_dtype(bits: int, unsigned: bool = False) -> str:
    return ("u" if unsigned else "") + ("int8" if bits <= 8 else "int16" if bits <= 16 else "int32")


def _saturate(v, bits: int, unsigned: bool = False):
    lo, hi = code_range(bits, unsigned)
    # maximum/minimum, not clip: ConvertLayout knows how to carry them through NHWC
    v = relax.op.minimum(relax.op.maximum(v, relax.const(lo, "int64")), relax.const(hi, "int64"))
    return relax.op.astype(v, _out_dtype(bits, unsigned))


def _rshift_round(v64, m, e, shape):
    """``(v64 * m + half(e)) >> e`` with int64 constants ``m``, ``e`` reshaped to ``shape``."""
    e = np.clip(np.asarray(e, np.int64), 0, MAX_SHIFT)
    half = np.where(e > 0, np.left_shift(np.int64(1), np.maximum(e - 1, 0)), 0).astype(np.int64)
    const = lambda a: relax.const(np.asarray(a, np.int64).reshape(shape), "int64")  # noqa: E731
    prod = relax.op.multiply(v64, const(m))
    return relax.op.right_shift(relax.op.add(prod, const(half)), const(e))


def _channel_shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return shape


def _const(e) -> np.ndarray | None:
    return e.value.numpy() if isinstance(e, tvm.ir.expr.Constant) else None


def _term_int32(x, sh, m, r, s, shape):
    """``(mulhi(x << sh, m) + r) >> s`` on int32 ``x`` (``requant_i32``), constants reshaped to ``shape``."""
    const = lambda a, dtype="int32": relax.const(np.asarray(a).astype(dtype).reshape(shape), dtype)  # noqa: E731
    xs = relax.op.left_shift(x, const(sh))
    # mulhi: the 64-bit product's high word (an int64 multiply of two int32 values, shifted by 32)
    prod = relax.op.multiply(relax.op.astype(xs, "int64"), const(m, "int64"))
    hi32 = relax.op.astype(relax.op.right_shift(prod, relax.const(32, "int64")), "int32")
    return relax.op.right_shift(relax.op.add(hi32, const(r)), const(s))


def _saturate32(v, bits: int, unsigned: bool = False):
    lo, hi = code_range(bits, unsigned)
    v = relax.op.minimum(relax.op.maximum(v, relax.const(lo, "int32")), relax.const(hi, "int32"))
    return relax.op.astype(v, _out_dtype(bits, unsigned))


def _int32(x):
    return x if _dtype(x) == "int32" else relax.op.astype(x, "int32")


def _requant_int32(z, form: requant_i32.Int32Requant, shape, bits: int, unsigned: bool):
    """``requant_i32``'s int32 form as Relax ops (constants reshaped to ``shape``)."""
    const = lambda a: relax.const(np.asarray(a).astype("int32").reshape(shape), "int32")  # noqa: E731
    zc = relax.op.minimum(relax.op.maximum(_int32(z), const(form.zlo)), const(form.zhi))
    return _saturate32(_term_int32(zc, form.sh, form.m, form.r, form.s, shape), bits, unsigned)


# largest |value| of the residual add's operand types (the int32 form's bound on its shifted input)
OPERAND_MAX = {"int8": 128, "uint8": 255, "int16": 2**15, "uint16": 2**16 - 1}


def _add_int32(a, b, add: AddInt, shape):
    """The residual add with both rounding terms in the int32 form, or None where it does not apply
    (an operand type without a bound, a shift that could overflow, or a sum that could leave int32)."""
    bounds = [OPERAND_MAX.get(_dtype(t)) for t in (a, b)]
    if None in bounds:
        return None
    terms = [requant_i32.rounding_term(m, e, zmax) for m, e, zmax in ((add.ma, add.ea, bounds[0]), (add.mb, add.eb, bounds[1]))]
    if None in terms or sum(((z * m) >> e) + 2 for z, m, e in ((bounds[0], add.ma, add.ea), (bounds[1], add.mb, add.eb))) > requant_i32.INT32_MAX:
        return None
    ta, tb = (_term_int32(_int32(t), *term, shape) for t, term in zip((a, b), terms))
    return _saturate32(relax.op.add(ta, tb), add.bits)


def _dtype(e) -> str:
    return str(e.ty.dtype)


def _ndim(e) -> int:
    return len(e.ty.shape.values)


def _requant(z, m, e, shape, bits: int, unsigned: bool):
    """The int32 form where it exists (``requant_i32``), else the int64 reference form."""
    form = requant_i32.int32_form(m, e, bits, unsigned) if _dtype(z) in INT32_INPUTS else None
    if form is not None:
        return _requant_int32(z, form, shape, bits, unsigned)
    return _saturate(_rshift_round(relax.op.astype(z, "int64"), m, e, shape), bits, unsigned)


def lowered(func: tvm.tirx.PrimFunc, args) -> relax.Expr | None:
    """The Relax form of one requantiser / residual-add call, or None if it is not one."""
    rq = Requantize.from_func(func)
    if rq is not None:
        z = args[0]
        if not rq.per_axis:  # one-element constants of z's rank: ConvertLayout carries them through NHWC
            return _requant(z, rq.m, rq.e, [1] * _ndim(z), rq.bits, rq.unsigned)
        m, e = _const(args[1]), _const(args[2])
        if m is None or e is None:
            return None
        shape = _channel_shape(len(z.ty.shape.values), rq.axis)
        return _requant(z, m, e, shape, rq.bits, rq.unsigned)
    add = AddInt.from_func(func)
    if add is not None:
        shape = [1] * _ndim(args[0])
        fast = _add_int32(*args, add, shape)
        if fast is not None:
            return fast
        a, b = (relax.op.astype(t, "int64") for t in args)
        return _saturate(relax.op.add(_rshift_round(a, add.ma, add.ea, shape), _rshift_round(b, add.mb, add.eb, shape)), add.bits)
    return None


@tvm.transform.module_pass(opt_level=0, name="shiftc.LowerIntElementwise")
class LowerIntElementwise:
    """Requantisers and residual adds become Relax ops (see the module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_call_tir(mod, lambda _bb, func, args: lowered(func, args))
