"""Where float meets integer: the graph's input quantisers and output dequantisers, and float
islands (an op with no integer form kept in float with ``float_fallback``: its inputs dequantised,
the float op, its output quantised again). Every such kernel is a ``Boundary`` (core/contract.py),
which the integer scan (passes/float_scan.py) reads.

The float island is the registry's default rule (registry.py). Without ``float_fallback`` it only
records the op; the pass then raises ``UnsupportedModelError`` naming every such op.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from shiftc.core.contract import Boundary
from shiftc.core.errors import UnsupportedModelError
from shiftc.kernels import quant as KQ

from .context import Context
from .value import ACT_BITS, WIDE_BITS, Q, along, dtype, shape


def quantize_input(ctx: Context, param, new_param):
    """A float32 graph input -> int8 at its calibrated scale (other inputs stay as they are)."""
    if dtype(param) != "float32":
        return new_param  # integer / bool inputs (token ids, masks) are used as they are
    s = ctx.act_scale(param.name, ACT_BITS)
    out = ctx.emit_te(KQ.quantize, new_param, s, ACT_BITS, name="quantize", attrs=Boundary("quantize").to_attrs())
    ctx.report.rows.append({"op": "quantize", "value": param.name, "scale": s})
    return Q(out, s, ACT_BITS)


def dequantize(ctx: Context, q: Q, like, kind: str) -> relax.Var:
    """``q`` as float32 (a ``kind`` boundary kernel); a per-axis scale broadcasts against ``like``."""
    scale = relax.const(along(np.asarray(q.scale, np.float32), q.axis, like)) if q.per_axis else float(q.scale)
    return ctx.emit_te(KQ.dequantize, q.expr, scale, name="dequantize", attrs=Boundary(kind).to_attrs())


def dequantize_output(ctx: Context, expr):
    """A graph output: float32 values dequantised, integer ones and tuples passed through."""
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([dequantize_output(ctx, f) for f in expr.fields])
    v = ctx.get(expr)
    if isinstance(v, np.ndarray):
        return relax.const(v)
    if not isinstance(v, Q):
        return v
    if dtype(expr) != "float32":
        return v.expr
    return dequantize(ctx, v, expr, "dequantize")


def float_island(ctx: Context, var, call, args, why: str):
    """Dequantise the inputs, run the original op in float, quantise the result (reported)."""
    ctx.unsupported.append(f"{why} ({var.name})")
    ctx.report.float_ops.append({"op": why, "value": var.name})
    if not ctx.opts.float_fallback:
        # keep going so every unsupported op is listed; the result is never built
        return Q(relax.const(np.zeros(shape(var), np.int8)), 1.0, 8) if hasattr(var.ty, "shape") else None
    new_args = []
    for a, orig in zip(args, call.args):
        if isinstance(a, Q):
            new_args.append(dequantize(ctx, a, orig, "float_island"))
        elif isinstance(a, np.ndarray):
            new_args.append(relax.const(a))
        else:
            new_args.append(a)
    f = ctx.emit(relax.Call(call.op, new_args, call.attrs, call.ty_args))
    s = ctx.act_scale(var.name, WIDE_BITS)
    q = ctx.emit_te(KQ.quantize, f, s, WIDE_BITS, name="quantize", attrs=Boundary("float_island").to_attrs())
    return Q(q, s, WIDE_BITS)


def unsupported_error(unsupported: list[str]) -> UnsupportedModelError:
    more = f" and {len(unsupported) - 8} more" if len(unsupported) > 8 else ""
    return UnsupportedModelError(
        "integer-only: no integer form for " + "; ".join(unsupported[:8]) + more
        + " (pass --float-fallback to keep them in float)"
    )
