"""The integer shift kernels in their dot-product form: ``x * wdot`` with the integer weights
``sign * 2^(P - p)`` (``shiftc.kernels.shift.dot_weights``) instead of shifts.

The same sums as the shift kernels, bit for bit: ``shift_kernel_forms.py`` times both forms,
and the tests use them as the control that multiplies.
"""

from __future__ import annotations

from tvm import te

from shiftc.kernels import shift as SK


def shift_matmul_int_dot(x: te.Tensor, wdot: te.Tensor, *, P: int, terms: int = 1):
    """``shiftc.kernels.shift.shift_matmul_int`` as an int dot product with ``wdot (O, K)``."""
    O, K = (int(d) for d in wdot.shape)
    SK.check_headroom(K * terms, P)
    k = te.reduce_axis((0, K), name="k")
    lead = [int(d) for d in x.shape[:-1]]
    return te.compute(
        (*lead, O),
        lambda *i: te.sum(x[(*i[:-1], k)].astype("int32") * wdot[i[-1], k].astype("int32"), axis=k),
        name="dot_acc",
    )


def shift_conv2d_int_dot(x: te.Tensor, wdot: te.Tensor, *, P: int, terms: int = 1, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1):
    """``shiftc.kernels.shift.shift_conv2d_int`` as an int dot product with ``wdot (O, I/g, kh, kw)``."""
    O, Ig, kh, kw = (int(d) for d in wdot.shape)
    SK.check_headroom(Ig * kh * kw * terms, P)
    n, c, h, w, oh, ow, *_ = SK._conv_shape(x, (kh, kw), stride, padding, dilation)
    og = O // groups
    xp = SK._pad(x, padding, 0)
    ic = te.reduce_axis((0, Ig), name="ic")
    r = te.reduce_axis((0, kh), name="r")
    s = te.reduce_axis((0, kw), name="s")
    sh, sw = stride
    dh, dw = dilation
    return te.compute(
        (n, O, oh, ow),
        lambda b, o, y, z: te.sum(
            xp[b, (o // og) * Ig + ic, y * sh + r * dh, z * sw + s * dw].astype("int32") * wdot[o, ic, r, s].astype("int32"),
            axis=[ic, r, s],
        ),
        name="dot_acc",
    )
