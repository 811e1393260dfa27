"""Integer rules of reductions, pooling and resizing.

    mean / avg_pool2d  ->  int_mean / int_avgpool2d (round half up)
    sum                ->  int32 sum
    max_pool2d, max, min ->  the same op on the integers (same scale)
    resize2d nearest   ->  nearest_upsample (integer factors; exact)
    resize2d linear    ->  bilinear_resize (Q0.15 weights, round half up; same scale), or
                           nearest_upsample with upsample="nearest" (changes the model)
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from shiftc.kernels import integer as K
from shiftc.kernels import resize as KR
from shiftc.reference.resize import RESIZE_MODES

from .accumulate import summable_input
from .registry import int_rule
from .value import WIDE_BITS, Q, shape


def _reduced(call) -> tuple[list[int], int]:
    """The axes a mean/sum reduces (sorted, non-negative) and how many elements each output sums."""
    in_shape = shape(call.args[0])
    nd = len(in_shape)
    axes = list(range(nd)) if call.attrs.axis is None else sorted(int(d) % nd for d in call.attrs.axis)
    return axes, int(np.prod([in_shape[d] for d in axes]))


@int_rule("relax.mean")
def mean(ctx, var, call, args):
    (a,) = args
    if not isinstance(a, Q):
        return None
    axes, n = _reduced(call)
    x = summable_input(ctx, var, call.args[0].name, a, n, n // 2, "int_mean sum")
    out = ctx.emit_te(K.int_mean, x.expr, axes, name="int_mean")
    if call.attrs.keepdims:
        out = ctx.emit(relax.op.reshape(out, relax.ShapeExpr(shape(var))))
    ctx.report.rows.append({"op": "int_mean", "value": var.name})
    return Q(out, x.scale, 32, bound=x.max_abs)


@int_rule("relax.sum")
def sum_(ctx, var, call, args):
    (a,) = args
    if not isinstance(a, Q):
        return None
    _, n = _reduced(call)
    x = summable_input(ctx, var, call.args[0].name, a, n, 0, "sum")
    out = ctx.emit(relax.op.sum(ctx.as_dtype(x, 32), call.attrs.axis, call.attrs.keepdims))
    return Q(out, x.scale, 32, bound=n * x.max_abs)


@int_rule("relax.nn.avg_pool2d")
def avg_pool2d(ctx, var, call, args):
    (a,) = args
    at = call.attrs
    plain = at.layout == "NCHW" and not any(int(p) for p in at.padding) and all(int(d) == 1 for d in at.dilation)
    if not isinstance(a, Q) or not plain or at.ceil_mode:
        return None
    n = int(np.prod([int(k) for k in at.pool_size]))
    x = summable_input(ctx, var, call.args[0].name, a, n, n // 2, "avg_pool2d window sum")
    out = ctx.emit_te(K.int_avgpool2d, x.expr, [int(k) for k in at.pool_size], [int(s) for s in at.strides], name="int_avgpool2d")
    return Q(out, x.scale, 32, bound=x.max_abs)


@int_rule("relax.nn.max_pool2d")
def max_pool2d(ctx, var, call, args):
    (a,) = args
    if not isinstance(a, Q) or (a.per_axis and a.axis != 1) or call.attrs.layout != "NCHW":
        return None
    return Q(ctx.same_op(call, [a.expr]), a.scale, a.bits, a.axis, a.bound)


@int_rule("relax.max", "relax.min")
def max_min(ctx, var, call, args):
    """ReduceMax / ReduceMin: the same reduction on the integers (per tensor), same scale."""
    a = args[0]
    if not isinstance(a, Q):
        return None
    a = ctx.as_int(call.args[0].name, a, WIDE_BITS) if a.per_axis else a
    return Q(ctx.same_op(call, [a.expr]), a.scale, a.bits, bound=a.bound)


def _nearest_is_floor(at) -> bool:
    """Whether a nearest resize by integer factors reads source ``i // f``: half-pixel centres
    (``(i + 1/2) / f - 1/2`` lies strictly within 1/2 of ``i // f``, any rounding) or asymmetric
    coordinates with floor rounding."""
    mode, rounding = str(at.coordinate_transformation_mode), str(at.rounding_method)
    return str(at.method) == "nearest_neighbor" and (mode in ("half_pixel", "pytorch_half_pixel")
                                                     or (mode == "asymmetric" and rounding == "floor"))


def _channels_on_axis_1(ctx, call, a: Q) -> Q:
    """A resize works per channel (axis 1): a per-axis scale on another axis goes per tensor."""
    return ctx.as_int(call.args[0].name, a, WIDE_BITS) if a.per_axis and a.axis != 1 else a


@int_rule("relax.image.resize2d")
def resize2d(ctx, var, call, args):
    """Bilinear resize on the integers (any sizes; same scale), nearest resize by integer factors
    (exact), or bilinear replaced by nearest with ``upsample="nearest"`` where the factors are
    integers (changes the model, reported)."""
    a, at = args[0], call.attrs
    if not isinstance(a, Q) or at.layout != "NCHW":
        return None
    (_, _, h, w), (_, _, H, W) = shape(call.args[0]), shape(var)
    factors = not (H % h or W % w)
    if str(at.method) == "linear" and (ctx.opts.upsample != "nearest" or not factors):
        return _bilinear(ctx, var, call, a)  # upsample="nearest" needs integer factors
    exact = _nearest_is_floor(at)
    if (ctx.opts.upsample != "nearest" and not exact) or not factors:
        return None
    a = _channels_on_axis_1(ctx, call, a)
    out = ctx.emit_te(K.nearest_upsample, a.expr, (H // h, W // w), name="nearest_upsample")
    ctx.report.rows.append({"op": "nearest_upsample", "value": var.name, "replaces": None if exact else str(at.method)})
    return Q(out, a.scale, a.bits, a.axis, a.bound)


def _bilinear(ctx, var, call, a: Q):
    """``bilinear_resize`` for the coordinate modes with rational source coordinates (none with
    a region of interest): a convex combination per channel, so scale, width and bound stay."""
    mode = str(call.attrs.coordinate_transformation_mode)
    if mode not in RESIZE_MODES:
        return None
    a = _channels_on_axis_1(ctx, call, a)
    out = ctx.emit_te(KR.bilinear_resize, a.expr, shape(var)[2:], mode, name="bilinear_resize")
    ctx.report.rows.append({"op": "bilinear_resize", "value": var.name, "mode": mode})
    return Q(out, a.scale, a.bits, a.axis, a.bound)
