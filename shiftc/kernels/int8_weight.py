"""Float kernels over per-channel int8 weights: the layers the bit allocator keeps as multiplies.

``y = clamp(scale[o] * sum x * float(q[o, ...]) (+ bias[o]), lo, hi)``: the weights stay int8 in
the artifact (one float32 scale per output channel) and are widened to float32 inside the
reduction; activations stay float. This is the "int8 (multiply)" primitive of the mixed plan
(``shiftc.passes.shift_bits``), not a shift kernel: its reduction multiplies on purpose.
NumPy truth: ``op(x, q * scale)`` (``shiftc.passes.shift_measure.layer_forward``), up to float32
summation order.
"""

from __future__ import annotations

from tvm import te

from .shift import _conv_shape, _epilogue, _pad


def int8w_matmul_float(x: te.Tensor, q: te.Tensor, scale: te.Tensor, bias: te.Tensor | None = None, *, lo=None, hi=None):
    """``y[..., o] = scale[o] * sum_k x[..., k] * q[o, k] (+ bias[o])`` for int8 ``q (O, K)``."""
    O, K = (int(d) for d in q.shape)
    k = te.reduce_axis((0, K), name="k")
    lead = [int(d) for d in x.shape[:-1]]
    acc = te.compute((*lead, O), lambda *i: te.sum(x[(*i[:-1], k)] * q[i[-1], k].astype("float32"), axis=k), name="int8w_acc")
    return _epilogue(acc, scale, bias, lambda i: i[-1], lo, hi)


def int8w_conv2d_float(x: te.Tensor, q: te.Tensor, scale: te.Tensor, bias: te.Tensor | None = None, *, stride=(1, 1),
                       padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1, lo=None, hi=None):
    """NCHW float conv over int8 OIHW ``q``, then ``* scale[o] (+ bias[o])``; zero padding."""
    O, Ig, kh, kw = (int(d) for d in q.shape)
    n, c, h, w, oh, ow, *_ = _conv_shape(x, (kh, kw), stride, padding, dilation)
    og = O // groups
    xp = _pad(x, padding, 0.0)
    ic = te.reduce_axis((0, Ig), name="ic")
    r = te.reduce_axis((0, kh), name="r")
    s = te.reduce_axis((0, kw), name="s")
    (sh, sw), (dh, dw) = stride, dilation
    acc = te.compute(
        (n, O, oh, ow),
        lambda b, o, y, z: te.sum(
            xp[b, (o // og) * Ig + ic, y * sh + r * dh, z * sw + s * dw] * q[o, ic, r, s].astype("float32"), axis=[ic, r, s]),
        name="int8w_acc",
    )
    return _epilogue(acc, scale, bias, lambda i: i[1], lo, hi)
