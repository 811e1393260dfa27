"""ConvTranspose as stride x stride ordinary convolutions (sub-pixel phases), for CPU builds.

TVM legalises ``conv2d_transpose`` as a convolution over the zero-dilated input: with stride s,
(s*s - 1)/(s*s) of its multiply-adds read an inserted zero, behind a bound and a parity test in
the innermost loop, and it stays NCHW (ViT-S saliency: 66 % of the model's time in three such
kernels). ``ConvTransposeToPhases`` rewrites one with constant weights into the s*s phases of its
output: output rows ``q*s + r`` (columns likewise) only ever meet kernel taps ``kh = kh0 + s*j``
with ``kh0 = (r + pad_top) % s``, so each phase is an ordinary stride-1 ``conv2d`` of the input
with the flipped sub-kernel of those taps, and the phases interleave back with concat + reshape.
The same products are summed (in another order: FP32 round-off only). The phase convs are built
channel-last (NHWC/HWIO, the CPU conv layout) and get the default schedules of every other conv.

Rewritten: groups 1, dilation 1, NCHW/IOHW, output extents divisible by the stride, every phase
at least one tap and no negative padding. Others stay ``conv2d_transpose``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.core.relax_rewrite import rewrite_bindings


def _phase(r: int, pad: int, s: int, k: int, n_in: int, n_out: int):
    """(first tap, taps, left pad, right pad, conv output length) of output phase ``r`` along one axis."""
    kh0 = (r + pad) % s
    taps = -(-(k - kh0) // s)
    c = (r + pad - kh0) // s
    left = taps - 1 - c
    right = max(0, n_out // s - 1 + c - (n_in - 1))
    return kh0, taps, left, right, n_in + left + right - taps + 1


def _phases_or_none(attrs, w_shape, x_shape, out_shape):
    """Per axis, the phases (see ``_phase``) of one conv2d_transpose; None when it is not rewritten."""
    if (int(attrs.groups) != 1 or any(int(d) != 1 for d in attrs.dilation) or attrs.data_layout != "NCHW"
            or attrs.kernel_layout != "IOHW" or attrs.out_layout != "NCHW"):
        return None
    axes = []
    for ax in range(2):
        s, k, pad = int(attrs.strides[ax]), w_shape[2 + ax], int(attrs.padding[ax])
        n_in, n_out = x_shape[2 + ax], out_shape[2 + ax]
        if s < 2 or n_out % s or k < s:
            return None
        phases = [_phase(r, pad, s, k, n_in, n_out) for r in range(s)]
        if any(p[1] < 1 or p[2] < 0 or p[4] < n_out // s for p in phases):
            return None
        axes.append((s, phases))
    return axes


def _sub_kernel(w: np.ndarray, ph, pw, s_h: int, s_w: int) -> np.ndarray:
    """HWIO weights of one phase: the IOHW taps ``kh0 + s*j``, flipped (a correlation)."""
    rows = [ph[0] + s_h * j for j in range(ph[1])][::-1]
    cols = [pw[0] + s_w * j for j in range(pw[1])][::-1]
    return np.ascontiguousarray(w[:, :, rows][:, :, :, cols].transpose(2, 3, 0, 1))


def _phases_expr(bb, x, w: np.ndarray, axes, out_shape, out_dtype):
    """The phase convs, channel-last (the CPU conv layout), interleaved by concat + reshape, as NCHW."""
    (s_h, rows), (s_w, cols) = axes
    n, c, q_h, q_w = out_shape[0], out_shape[1], out_shape[2] // s_h, out_shape[3] // s_w
    x_nhwc = bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))
    stacked_rows = []
    for ph in rows:
        outs = []
        for pw in cols:
            y = bb.emit(relax.op.nn.conv2d(x_nhwc, relax.const(_sub_kernel(w, ph, pw, s_h, s_w)),
                                           padding=[ph[2], pw[2], ph[3], pw[3]], data_layout="NHWC",
                                           kernel_layout="HWIO", out_dtype=out_dtype))
            if ph[4] != q_h or pw[4] != q_w:
                y = bb.emit(relax.op.strided_slice(y, axes=[1, 2], begin=[0, 0], end=[q_h, q_w]))
            outs.append(y)
        row = bb.emit(relax.op.concat(outs, axis=3))  # N, Qh, Qw, s_w * C: the phases side by side
        stacked_rows.append(bb.emit(relax.op.reshape(row, [n, q_h, q_w * s_w, c])))
    both = bb.emit(relax.op.reshape(bb.emit(relax.op.concat(stacked_rows, axis=2)), [n, out_shape[2], out_shape[3], c]))
    return relax.op.permute_dims(both, [0, 3, 1, 2])


def _rule(_var, value, bb):
    if not (isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.nn.conv2d_transpose"))):
        return None
    x, w = value.args
    if not isinstance(w, tvm.ir.expr.Constant):
        return None
    try:
        x_shape = [int(d) for d in x.ty.shape.values]
        out_shape = [int(d) for d in value.ty.shape.values]
    except (TypeError, AttributeError):  # a symbolic shape
        return None
    w_np = w.value.numpy()
    axes = _phases_or_none(value.attrs, list(w_np.shape), x_shape, out_shape)
    if axes is None:
        return None
    return _phases_expr(bb, x, w_np, axes, out_shape, str(value.ty.dtype))


@tvm.transform.module_pass(opt_level=0, name="shiftc.ConvTransposeToPhases")
class ConvTransposeToPhases:
    """Every rewritable ``conv2d_transpose`` with constant weights becomes s*s phase convs (see module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        out, count = rewrite_bindings(mod, lambda _func: _rule)
        return relax.transform.DeadCodeElimination()(out) if count else mod
