"""Integer rules of linear ops: int8 x int8 -> int32 matmul and conv2d, and the shift pass's
kernels as integer shift-accumulate kernels.

    matmul(x, W_const) [+ b]   ->  matmul(x_i8, W_i8, out=int32) [+ b_i32]    scale s_x * s_w[c]
    (x_i8 is uint8 in [0, 255] at s_x = T / 255 where calibration proved x non-negative: u8 x s8)
    conv2d(x, W_const) [+ b]   ->  conv2d(x_i8, W_i8, out=int32) [+ b_i32]    scale s_x * s_w[c]
    conv2d_transpose(x, W)     ->  the same on int8 x int8 -> int32             scale s_x * s_w[c]
    matmul(a, b)               ->  matmul(a_i8, b_i8, out=int32)              scale s_a * s_b
    matmul(sign(q), b)         ->  sign_matmul (select and add, rules_attention)  scale s_b
    (a Shiftmax output is u8 at 2**-8; mixed precision (IntOptions.wide) makes chosen operands int16)
    shift kernel (shift pass)  ->  shift_matmul_int / shift_conv2d_int on x_i8 scale s_x * alpha_c * 2**-P
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tvm import relax

from shiftc import reference as ref
from shiftc.core.contract import ShiftKernel
from shiftc.kernels import shift as SK
from shiftc.reference.rounding import INT32_MAX

from .accumulate import reduce_int32, refuse_unless_fits, sliced, weight_safe
from .registry import int_rule
from .rules_attention import sign_matmul
from .rules_activation import legalized_clamp
from .scales import weight_codes
from .value import ACT_BITS, Q, along, shape


@int_rule("relax.matmul")
def matmul(ctx, var, call, args):
    a, b = args
    if isinstance(a, Q) and a.sign and isinstance(b, Q):
        return sign_matmul(ctx, var, call, a, b)
    if isinstance(a, Q) and isinstance(b, np.ndarray) and b.ndim == 2:
        x = ctx.as_int(call.args[0].name, a, ctx.operand_bits(call.args[0].name), unsigned_ok=True)
        wq, sw = weight_codes(b, axis=1, pow2=ctx.pow2)
        xe = ctx.as_dtype(x, x.bits)

        def chunk(k0, k1):
            w = relax.const(wq if k0 is None else np.ascontiguousarray(wq[k0:k1]))
            return ctx.emit(relax.op.matmul(sliced(ctx, xe, -1, k0, k1), w, out_dtype="int32"))

        row = {"op": "matmul", "value": var.name, "weights": "int8 per-channel", "input": _sign(x)}
        unit = np.abs(wq.astype(np.int64))  # (K, N)
        q = reduce_int32(ctx, var, chunk, unit, x.code_bits, x.scale * sw, len(shape(var)) - 1, row)
        ctx.report.rows.append(row)
        return q
    if isinstance(a, Q) and isinstance(b, Q):
        return _act_matmul(ctx, var, call, a, b)
    return None


def _sign(x: Q) -> str:
    """The report's name of an operand's code type."""
    return f"{'u' if x.unsigned else 's'}{x.bits}"


def _act_matmul(ctx, var, call, a: Q, b: Q):
    """Activation x activation: bound ``K * 2**(a-1) * 2**(b-1)`` (one more bit for an unsigned
    operand: Shiftmax's u8 probabilities), split along K above int32. Each operand is int8, or
    int16 where mixed precision chose it (``IntOptions.wide``)."""
    x = ctx.as_int(call.args[0].name, a, ctx.operand_bits(call.args[0].name), unsigned_ok=True)
    y = ctx.as_int(call.args[1].name, b, ctx.operand_bits(call.args[1].name), unsigned_ok=True)
    xe, ye = ctx.as_dtype(x, x.bits), ctx.as_dtype(y, y.bits)
    if len(shape(ye)) < 2:
        safe = f"K <= {INT32_MAX // (ref.code_max(x.code_bits) * ref.code_max(y.code_bits)):,} at {_sign(x)} x {_sign(y)}"
        refuse_unless_fits(var, ref.act_dot_bound(shape(xe)[-1], x.code_bits, y.code_bits), "a vector matmul", safe)

    def chunk(k0, k1):
        return ctx.emit(relax.op.matmul(sliced(ctx, xe, -1, k0, k1), sliced(ctx, ye, -2, k0, k1), out_dtype="int32"))

    row = {"op": "matmul", "value": var.name, "weights": "activation x activation", "input": f"{_sign(x)} x {_sign(y)}"}
    unit = np.full((shape(xe)[-1], 1), ref.code_max(y.code_bits), np.int64)  # every |b| <= 2**(b-1)
    q = reduce_int32(ctx, var, chunk, unit, x.code_bits, x.scale * y.scale, None, row)
    ctx.report.rows.append(row)
    return q


@int_rule("relax.nn.conv2d")
def conv2d(ctx, var, call, args):
    a, w = args
    at = call.attrs
    if not (isinstance(a, Q) and isinstance(w, np.ndarray)) or at.data_layout != "NCHW" or at.kernel_layout != "OIHW":
        return None
    x = ctx.as_int(call.args[0].name, a, ctx.operand_bits(call.args[0].name), unsigned_ok=True)
    wq, sw = weight_codes(w, axis=0, pow2=ctx.pow2)
    xe = ctx.as_dtype(x, x.bits)
    unit = np.abs(wq.astype(np.int64)).sum(axis=(2, 3)).T  # (input channel, output channel)
    if int(at.groups) != 1:
        refuse_unless_fits(var, ref.dot_bound(wq, 0, x.code_bits), "a grouped conv2d", weight_safe(x.code_bits))

    def chunk(c0, c1):
        wc = relax.const(wq if c0 is None else np.ascontiguousarray(wq[:, c0:c1]))
        return ctx.emit(relax.op.nn.conv2d(sliced(ctx, xe, 1, c0, c1), wc, at.strides, at.padding, at.dilation, at.groups,
                                           "NCHW", "OIHW", "NCHW", out_dtype="int32"))

    row = {"op": "conv2d", "value": var.name, "weights": "int8 per-channel", "input": _sign(x)}
    q = reduce_int32(ctx, var, chunk, unit, x.code_bits, x.scale * sw, 1, row)
    ctx.report.rows.append(row)
    return q


@int_rule("relax.nn.conv2d_transpose")
def conv2d_transpose(ctx, var, call, args):
    """int8 x int8 -> int32 transposed conv (ONNX ConvTranspose), weights per output channel
    (axis 1 of IOHW); the bound sums every tap of an input channel (at most that many reach an
    output), split along input channels above int32 as conv2d."""
    a, w = args
    at = call.attrs
    layouts = (at.data_layout, at.kernel_layout, at.out_layout) == ("NCHW", "IOHW", "NCHW")
    if not (isinstance(a, Q) and isinstance(w, np.ndarray)) or not layouts or int(at.groups) != 1:
        return None
    x = ctx.as_int(call.args[0].name, a, ACT_BITS, unsigned_ok=True)
    wq, sw = weight_codes(w, axis=1, pow2=ctx.pow2)
    xe = ctx.as_dtype(x, 8)

    def chunk(c0, c1):
        wc = relax.const(wq if c0 is None else np.ascontiguousarray(wq[c0:c1]))
        return ctx.emit(relax.op.nn.conv2d_transpose(sliced(ctx, xe, 1, c0, c1), wc, at.strides, at.padding, at.output_padding,
                                                     at.dilation, 1, "NCHW", "IOHW", "NCHW", out_dtype="int32"))

    row = {"op": "conv2d_transpose", "value": var.name, "weights": "int8 per-channel", "input": _sign(x)}
    q = reduce_int32(ctx, var, chunk, np.abs(wq.astype(np.int64)).sum(axis=(2, 3)), x.code_bits, x.scale * sw, 1, row)
    ctx.report.rows.append(row)
    return q


@int_rule("relax.call_tir")
def call_tir(ctx, var, call, args):
    """A legalized clamp (``maximum`` / ``minimum`` kernels) or a float shift kernel."""
    for op in ("maximum", "minimum"):
        if call.args[0].name_hint.startswith(op):
            return legalized_clamp(ctx, call, op)
    sk = ShiftKernel.from_func(ctx.mod[call.args[0]])
    if sk is None or sk.kind != "shift_float":
        return None
    x_q, packed, alpha, *bias = ctx.get(call.args[1])
    if not isinstance(x_q, Q) or not isinstance(packed, np.ndarray) or not isinstance(alpha, np.ndarray):
        return None
    x = ctx.as_int(call.args[1].fields[0].name, x_q, ACT_BITS)
    out, P, axis, bound = _shift_int(ctx, var, sk, x, packed)
    out, alpha = _dead_channels(ctx, var, out, axis, alpha.astype(np.float64))
    q = Q(out, float(x.scale) * alpha * 2.0**-P, 32, axis=axis, bound=bound)
    return _shift_epilogue(ctx, var, q, bias[0] if bias else None, sk)


def _largest_exponent(sk: ShiftKernel, packed: np.ndarray) -> tuple[int, np.ndarray]:
    """``P``: the largest code exponent of the layer (CONTRACTS.md, integer path), and the codes."""
    oi = sk.oi_shape()
    codes = ref.unpack_term_codes(packed.tobytes(), oi, sk.bits, sk.terms, sk.zero_free, sk.uniform)
    P = int(np.abs(codes.astype(np.int64)).max()) - 1 if codes.size else 0
    return max(P, 0), codes


def _shift_int(ctx, var, sk: ShiftKernel, x: Q, packed: np.ndarray):
    """The int32 shift-accumulate kernel on int8 ``x``; returns it, ``P``, its channel axis and
    its per-channel bound (the kernel itself refuses ``K * terms * 2**7 * 2**P > 2**31 - 1``)."""
    P, codes = _largest_exponent(sk, packed)
    common = dict(P=P, terms=sk.terms, bits=sk.bits, zero_free=sk.zero_free, packed=True, uniform=sk.uniform)
    attrs = dataclasses.replace(sk, kind="shift_int", P=P, lo=None, hi=None).to_attrs()
    xe, pk = ctx.as_dtype(x, 8), relax.const(packed, "uint8")
    if sk.op == "conv2d":
        out = ctx.emit_te(SK.shift_conv2d_int, xe, pk, name="shift_conv2d_int", attrs=attrs, weight_shape=list(sk.weight_shape),
                          stride=list(sk.strides), padding=list(sk.padding), dilation=list(sk.dilation), groups=sk.groups, **common)
        axis = 1
    else:
        out = ctx.emit_te(SK.shift_matmul_int, xe, pk, name="shift_matmul_int", attrs=attrs, out_features=sk.oi_shape()[0], **common)
        axis = len(shape(var)) - 1
    ctx.report.rows.append({"op": f"shift_{sk.op}_int", "value": var.name, "bits": sk.bits, "terms": sk.terms, "P": P})
    return out, P, axis, ref.shift_bound(codes, P, x.bits)


def _dead_channels(ctx, var, out, axis: int, alpha: np.ndarray):
    """An all-zero weight channel (alpha 0: its float output is 0) may still have non-zero
    (zero-free) codes: its sum is forced to 0 with a [0, 0] clamp, and it gets a usable alpha so
    that its bias is representable. Returns the accumulator and the alphas."""
    dead = alpha <= 0
    if dead.any():
        big = np.iinfo(np.int32)
        lo, hi = along(np.where(dead, 0, big.min), axis, var), along(np.where(dead, 0, big.max), axis, var)
        out = ctx.emit(relax.op.minimum(relax.op.maximum(out, relax.const(lo.astype(np.int32))), relax.const(hi.astype(np.int32))))
        alpha = np.where(dead, alpha.max() if alpha.max() > 0 else 1.0, alpha)
        ctx.report.notes.append(f"{var.name}: {int(dead.sum())} all-zero weight channel(s) output 0 (plus bias)")
    return out, alpha


def _shift_epilogue(ctx, var, q: Q, bias, sk: ShiftKernel) -> Q:
    """The shift kernel's folded epilogue ``min(max(y + b, lo), hi)`` on the int32 accumulator:
    ``+ round(b / s_c)``, then clamps at ``ceil(lo / s_c)`` and ``floor(hi / s_c)`` per channel."""
    if bias is not None:
        q = ctx.add_const(q, np.asarray(bias, np.float64).reshape([-1] + [1] * (len(shape(var)) - 1 - q.axis)), var)
    s = q.scales_like(var)
    expr = q.expr
    if sk.lo is not None:
        expr = ctx.emit(relax.op.maximum(expr, relax.const(np.ceil(sk.lo / s).astype(np.int32))))
    if sk.hi is not None:
        expr = ctx.emit(relax.op.minimum(expr, relax.const(np.floor(sk.hi / s).astype(np.int32))))
    return Q(expr, q.scale, 32, q.axis)
