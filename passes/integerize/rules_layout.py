"""Integer rules of layout ops: the same op on the integers, at the same scale (a per-axis value is
requantised to per tensor first, since its axis may move; a sign value stays one), and concat / split.

    reshape, permute_dims, squeeze, expand_dims, flatten, strided_slice, broadcast_to  ->  same op
    concat   ->  every part requantised to the result's calibrated int16 scale (constants quantised)
    split    ->  same op, one value per part
    pad      ->  same op (reflect / edge / zero pads keep a per-axis scale); a constant pad value
                 is quantised to the input's scale and width (round half up, saturated)
    shape_of ->  the static shape (a constant)
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from shiftc.reference.quant import quantize

from .registry import int_rule
from .value import WIDE_BITS, Q, shape


def _per_tensor(ctx, call, a) -> Q | None:
    """The layout op's integer input at a per-tensor scale (a per-axis one may have its axis moved);
    None when the input is not an integer value."""
    if not isinstance(a, Q):
        return None
    return ctx.as_int(call.args[0].name, a, WIDE_BITS) if a.per_axis else a


@int_rule("relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims", "relax.flatten",
          "relax.strided_slice", "relax.broadcast_to")
def same_layout_op(ctx, var, call, args):
    a = _per_tensor(ctx, call, args[0])
    if a is None:
        return None
    return Q(ctx.same_op(call, [a.expr]), a.scale, a.bits, bound=a.bound, sign=a.sign)


@int_rule("relax.shape_of")
def shape_of(ctx, var, call, args):
    """The static shape of an integer value (the importer's index arithmetic, e.g. Gather's
    negative-index wrap); what follows folds to constants."""
    if not isinstance(args[0], Q):
        return None
    return relax.ShapeExpr(list(shape(call.args[0])))


@int_rule("relax.split")
def split(ctx, var, call, args):
    a = _per_tensor(ctx, call, args[0])
    if a is None:
        return None
    t = ctx.same_op(call, [a.expr])
    return [Q(ctx.emit(relax.TupleGetItem(t, i)), a.scale, a.bits, bound=a.bound, sign=a.sign) for i in range(len(var.ty.fields))]


@int_rule("relax.concat")
def concat(ctx, var, call, args):
    parts = args[0]
    if not isinstance(parts, list) or not any(isinstance(p, Q) for p in parts):
        return None
    s_out = ctx.act_scale(var.name, WIDE_BITS)
    exprs = []
    for p in parts:
        if isinstance(p, np.ndarray):
            exprs.append(relax.const(quantize(p, s_out, WIDE_BITS)))
        else:
            same = not p.per_axis and p.bits <= WIDE_BITS and float(p.scale) == s_out
            r = p if same else ctx.requant(p, s_out, WIDE_BITS)
            exprs.append(ctx.as_dtype(r, WIDE_BITS))
    out = ctx.emit(relax.op.concat(relax.Tuple(exprs), call.attrs.axis))
    return Q(out, s_out, WIDE_BITS)


@int_rule("relax.nn.pad")
def pad(ctx, var, call, args):
    """ONNX Pad on the integers at the input's scale: reflect and edge copy integers, a constant is
    quantised like an input (``quantize``: round half up, saturated to the width, so -inf pads the
    width's minimum); only a non-zero constant needs one scale for every channel."""
    a, at = args[0], call.attrs
    if not isinstance(a, Q):
        return None
    value = float(at.pad_value)
    if str(at.pad_mode) != "constant" or value == 0.0:
        return Q(ctx.same_op(call, [a.expr]), a.scale, a.bits, a.axis, a.bound)
    a = _per_tensor(ctx, call, a)
    reach = float(a.scale) * (1 << a.bits)  # beyond it the code saturates anyway (no float overflow)
    code = int(quantize(np.float32(np.clip(value, -reach, reach)), float(a.scale), a.bits))
    out = ctx.emit(relax.op.nn.pad(a.expr, [int(p) for p in at.pad_width], "constant", float(code)))
    bound = None if a.bound is None else max(int(a.bound), abs(code))
    return Q(out, a.scale, a.bits, bound=bound)
