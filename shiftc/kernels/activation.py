"""TE kernels of the integer activations (reference ``shiftc.reference.activation``, bit for bit):
a table lookup and the leaky ReLU / PReLU slope. Integer TIR only."""

from __future__ import annotations

from tvm import te
from tvm import tirx as tir

__all__ = ["lut", "leaky_relu"]


def lut(x: te.Tensor, table: te.Tensor, name: str = "lut") -> te.Tensor:
    """``table[x + len(table) // 2]``; the index is clamped to the table (a no-op on the codes of
    the table's input width, which is all the rule feeds it)."""
    n = int(table.shape[0])
    half = n // 2

    def at(*i):
        k = x[i].astype("int32") + tir.const(half, "int32")
        return table[tir.max(tir.min(k, tir.const(n - 1, "int32")), tir.const(0, "int32"))]

    return te.compute(x.shape, at, name=name)


def leaky_relu(x: te.Tensor, m: te.Tensor, e: te.Tensor, sign: te.Tensor, axis: int, name: str = "leaky_relu") -> te.Tensor:
    """``x`` where ``x >= 0``, else ``sign * rshift_round(x * m, e)`` in int64, as int32 (the rule
    bounds ``|x| * max(1, |alpha|)`` below 2**31); ``m``,
    ``e``, ``sign`` are int tensors along ``axis`` (length 1: one slope). ``e`` is clamped to
    ``[0, 62]`` (the rule's ``dyadic`` gives ``[1, 62]``)."""
    ax = axis % len(x.shape)
    one = int(m.shape[0]) == 1

    def at(*i):
        c = 0 if one else i[ax]
        v = x[i].astype("int64")
        ee = tir.max(tir.min(e[c].astype("int64"), tir.const(62, "int64")), tir.const(0, "int64"))
        half = tir.Select(ee > tir.const(0, "int64"),
                          tir.shift_left(tir.const(1, "int64"), tir.max(ee - tir.const(1, "int64"), tir.const(0, "int64"))),
                          tir.const(0, "int64"))
        neg = tir.shift_right(v * m[c].astype("int64") + half, ee) * sign[c].astype("int64")
        return tir.Select(v >= tir.const(0, "int64"), v, neg).astype("int32")

    return te.compute(x.shape, at, name=name)
