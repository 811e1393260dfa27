"""Where float meets integer: the graph's input quantisers and output dequantisers, and float
islands (an op with no integer form kept in float with ``float_fallback``: its inputs dequantised,
the float op, its output quantised again). Every such kernel is a ``Boundary`` (core/contract.py),
which the integer scan (passes/float_scan.py) reads.

The float island is the registry's default rule (registry.py). Without ``float_fallback`` it only
records the op; the pass then raises ``UnsupportedModelError`` naming every such op.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.core.contract import Boundary
from shiftc.core.errors import UnsupportedModelError
from shiftc.kernels import quant as KQ

from .context import Context
from .value import ACT_BITS, WIDE_BITS, Q, along, dtype, shape


def quantize_input(ctx: Context, param, new_param):
    """A float32 graph input -> int8 (int16 where mixed precision chose it) at its calibrated scale (other inputs stay as they are)."""
    if dtype(param) != "float32":
        return new_param  # integer / bool inputs (token ids, masks) are used as they are
    bits = ctx.operand_bits(param.name)  # int16 where mixed precision chose it
    s = ctx.act_scale(param.name, bits)
    out = ctx.emit_te(KQ.quantize, new_param, s, bits, name="quantize", attrs=Boundary("quantize").to_attrs())
    ctx.report.rows.append({"op": "quantize", "value": param.name, "scale": s, **({"bits": bits} if bits != ACT_BITS else {})})
    return Q(out, s, bits)


def dequantize(ctx: Context, q: Q, like, kind: str) -> relax.Var:
    """``q`` as float32 (a ``kind`` boundary kernel); a per-axis scale broadcasts against ``like``."""
    scale = relax.const(along(np.asarray(q.scale, np.float32), q.axis, like)) if q.per_axis else float(q.scale)
    return ctx.emit_te(KQ.dequantize, q.expr, scale, name="dequantize", attrs=Boundary(kind).to_attrs())


def dequantize_output(ctx: Context, expr):
    """A graph output: float32 values dequantised, integer ones passed through, tuples field by
    field (a tuple-valued variable too)."""
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([dequantize_output(ctx, f) for f in expr.fields])
    return _output_value(ctx, ctx.get(expr), expr)


def _output_value(ctx: Context, v, like):
    if isinstance(v, list):
        return relax.Tuple([_output_value(ctx, f, ctx.bb.normalize(relax.TupleGetItem(like, i))) for i, f in enumerate(v)])
    if isinstance(v, np.ndarray):
        return relax.const(v, str(v.dtype))
    if not isinstance(v, Q):
        return v
    if str(like.ty.dtype) != "float32":
        return v.expr
    return dequantize(ctx, v, like, "dequantize")


def float_island(ctx: Context, var, call, args, why: str):
    """Dequantise the inputs, run the original op in float, quantise the result (reported).

    Arguments that are not tensors of the graph (PrimValue bounds, shapes, constants) are passed
    as the original call had them; a tuple result is quantised field by field; integer results
    (indices, masks) stay as they are."""
    ctx.uncovered(var, why)
    if not ctx.opts.float_fallback:
        # keep going so every unsupported op is listed; the result is never built
        return placeholder(var.ty)
    new_args = [_float_arg(ctx, a, orig) for a, orig in zip(args, call.args)]
    f = ctx.emit(relax.Call(call.op, new_args, call.attrs, call.ty_args))
    if isinstance(var.ty, relax.TupleType):  # each field is quantised where it is taken out (requantized)
        return [ctx.emit(relax.TupleGetItem(f, i)) for i in range(len(var.ty.fields))]
    return requantized(ctx, f, var.name, var.ty)


def _float_arg(ctx: Context, a, orig):
    if isinstance(a, Q):
        return dequantize(ctx, a, orig, "float_island")
    if isinstance(a, list):  # a tuple argument (concat, ...)
        fields = orig.fields if isinstance(orig, relax.Tuple) else [relax.TupleGetItem(orig, i) for i in range(len(a))]
        return relax.Tuple([_float_arg(ctx, x, o) for x, o in zip(a, fields)])
    if isinstance(a, np.ndarray):
        return orig if not isinstance(orig, relax.Var) else relax.const(a, str(a.dtype))
    return a


def requantized(ctx: Context, f, name: str, ty):
    """A float island's result quantised at ``name``'s calibrated int16 scale (float32 tensors;
    anything else, e.g. an integer index, is returned as it is)."""
    if isinstance(f, (Q, np.ndarray, list)) or not (isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32"):
        return f
    s = ctx.act_scale(name, WIDE_BITS)
    q = ctx.emit_te(KQ.quantize, f, s, WIDE_BITS, name="quantize", attrs=Boundary("float_island").to_attrs())
    return Q(q, s, WIDE_BITS)


def placeholder(ty):
    """A stand-in of the right structure for a value that will never be built."""
    if isinstance(ty, relax.TupleType):
        return [placeholder(t) for t in ty.fields]
    dims = ty.shape.values if isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr) else None
    if dims is not None and all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return Q(relax.const(np.zeros([int(d) for d in dims], np.int8)), 1.0, 8)
    return Q(relax.const(np.zeros((), np.int8)), 1.0, 8)


def unsupported_error(unsupported: list) -> UnsupportedModelError:
    """One line naming every op without an integer form and every ONNX node it occurs at."""
    by_op: dict[str, list[str]] = {}
    for u in unsupported:
        by_op.setdefault(u.op, []).append(u.describe())
    listing = "; ".join(f"{op} ({len(where)}x): {', '.join(where)}" for op, where in by_op.items())
    return UnsupportedModelError(
        f"integer-only: no integer form for {listing} (pass --float-fallback to keep them in float)")
