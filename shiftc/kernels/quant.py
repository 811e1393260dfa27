"""TE kernels of the float boundary: the input quantiser and the output dequantiser (the only
float arithmetic of an integer-only graph). ``quantize`` matches ``shiftc.reference.quant.quantize``
bit for bit."""

from __future__ import annotations

import numpy as np
from tvm import te
from tvm import tirx as tir

from shiftc.reference.quant import qmax
from shiftc.reference.rounding import out_dtype

__all__ = ["quantize", "dequantize"]


def quantize(x: te.Tensor, scale: float, bits: int) -> te.Tensor:
    """float32 ``x`` -> ``saturate(round_half_up(x * float32(1/s)), bits)`` as int8/int16/int32."""
    inv = tir.const(float(np.float32(1.0 / scale)), "float32")
    lo, hi = tir.const(-qmax(bits) - 1, "float32"), tir.const(qmax(bits), "float32")
    dtype = str(np.dtype(out_dtype(bits)))

    def f(*i):
        t = x[i] * inv
        fl = tir.floor(t)
        r = fl + tir.Select(t - fl >= tir.const(0.5, "float32"), tir.const(1.0, "float32"), tir.const(0.0, "float32"))
        return tir.max(tir.min(r, hi), lo).astype(dtype)

    return te.compute(x.shape, f, name="quantize")


def dequantize(q: te.Tensor, scale) -> te.Tensor:
    """``float32(q) * s`` (``s`` scalar, or a float32 TE tensor broadcast against ``q``)."""
    if isinstance(scale, te.Tensor):
        nd, sd = len(q.shape), len(scale.shape)

        def f(*i):
            j = tuple(0 if int(scale.shape[k]) == 1 else i[nd - sd + k] for k in range(sd))
            return q[i].astype("float32") * scale[j]

        return te.compute(q.shape, f, name="dequantize")
    s = tir.const(float(np.float32(scale)), "float32")
    return te.compute(q.shape, lambda *i: q[i].astype("float32") * s, name="dequantize")
