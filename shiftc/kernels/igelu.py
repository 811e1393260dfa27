"""TE kernel of i-GELU (reference ``shiftc.reference.igelu.i_gelu_int``, bit for bit). Integer TIR
only; elementwise, every shift a host constant."""

from __future__ import annotations

from tvm import te
from tvm import tirx as tir

from shiftc.reference.igelu import C_MAX, IGeluParams
from shiftc.reference.nonlinear import SIG_BITS

__all__ = ["i_gelu"]


def i_gelu(x: te.Tensor, p: IGeluParams, name: str = "i_gelu") -> te.Tensor:
    """``x * sig`` as int32 at scale ``s * 2**-15``, ``sig = x >= 0 ? 2**15 - t : t`` with
    ``t = rshift_round(D * D * m, e)``, ``D = max(c - |x|, 0)`` (``p`` from ``i_gelu_params``)."""
    if not (1 <= p.c <= C_MAX and 0 <= p.m < 2**31 and 1 <= p.e <= 62):
        raise ValueError(f"invalid i-GELU parameters {p}")

    def at(*i):
        v = x[i].astype("int64")
        d = tir.max(tir.const(p.c, "int64") - tir.abs(v), tir.const(0, "int64"))
        t = tir.shift_right(d * d * tir.const(p.m, "int64") + tir.const(1 << (p.e - 1), "int64"), tir.const(p.e, "int64"))
        sig = tir.Select(v >= tir.const(0, "int64"), tir.const(1 << SIG_BITS, "int64") - t, t)
        return (v * sig).astype("int32")

    return te.compute(x.shape, at, name=name)
