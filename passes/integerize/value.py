"""What the integeriser knows about a value: ``Q`` (integers and their real scale), plus the pass's
options, its report, and small helpers on Relax types and per-channel scales."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from shiftc.reference.rounding import out_dtype

ACT_BITS = 8  # matmul / conv operands
WIDE_BITS = 16  # residual sums, inputs of non-linear ops


@dataclass
class Q:
    """An integer value: ``real = expr * scale`` (``scale`` per ``axis`` when it is an array).

    ``bound``: a proven ``max |expr|`` (int, or int64 per ``axis``) where the rule that made the
    value knows a tighter one than its width's ``2**(bits-1)`` (accumulators; NUMERICS.md §2.8).

    ``sign``: the integers are a ``Sign`` output in {-1, 0, 1} at scale 1 (a matmul with it is add-only).

    ``unsigned``: codes in ``[0, 2**bits - 1]`` (uint8: a value calibration proved non-negative,
    made only as the input of a u8 x s8 conv / matmul)."""

    expr: relax.Expr
    scale: float | np.ndarray
    bits: int
    axis: int | None = None
    bound: int | np.ndarray | None = None
    sign: bool = False
    unsigned: bool = False

    @property
    def per_axis(self) -> bool:
        return self.axis is not None

    @property
    def max_abs(self) -> int:
        """The largest ``|integer|`` this value can hold: its proven bound, else its width's."""
        if self.bound is not None:
            return int(np.max(self.bound))
        return (1 << int(self.bits)) - 1 if self.unsigned else 1 << (int(self.bits) - 1)

    @property
    def code_bits(self) -> int:
        """The signed width whose ``2**(bits-1)`` bounds ``|code|`` (accumulator proofs): one more
        for unsigned codes (``2**bits - 1 < 2**bits``)."""
        return int(self.bits) + 1 if self.unsigned else int(self.bits)

    def scales_like(self, like) -> np.ndarray:
        """The scale as an array that broadcasts against ``like`` (per axis: along its axis)."""
        if not self.per_axis:
            return np.asarray(float(self.scale), np.float64)
        return along(np.asarray(self.scale, np.float64), self.axis, like)


@dataclass
class IntOptions:
    gelu: str = "shift"  # shift | lambda | ibert
    upsample: str = "keep"  # keep | nearest
    l2norm: str = "keep"  # keep | remove
    requant: str = "dyadic"  # dyadic | pow2
    float_fallback: bool = False
    lambdas: dict = field(default_factory=dict)  # gelu input name -> lambda terms
    wide: frozenset = frozenset()  # values carried at int16 into their matmul / conv (mixed precision)


@dataclass
class IntReport:
    rows: list = field(default_factory=list)  # one per rewritten op
    float_ops: list = field(default_factory=list)  # (op, value, reason)
    notes: list = field(default_factory=list)


def shape(expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape.values)


def dtype(expr) -> str:
    return str(expr.ty.dtype)


def int_dtype(bits: int, unsigned: bool = False) -> str:
    """The narrowest integer dtype for ``bits``-bit signed (or unsigned) values."""
    return str(np.dtype(out_dtype(bits, unsigned)))


def along(values: np.ndarray, axis: int, like) -> np.ndarray:
    """Per-channel ``values`` shaped to broadcast along ``axis`` of a value of ``like``'s rank."""
    s = [1] * len(shape(like))
    s[axis] = -1
    return np.asarray(values).reshape(s)


def is_float_type(ty) -> bool:
    if isinstance(ty, relax.TupleType):
        return any(is_float_type(t) for t in ty.fields)
    return isinstance(ty, relax.TensorType) and str(ty.dtype).startswith(("float", "bfloat"))


def op_name(call) -> str:
    op = call.op
    return op.name if isinstance(op, tvm.ir.Op) else ""


def scalar(c) -> float | None:
    """A one-element constant as a float (None for anything else)."""
    return float(c.reshape(-1)[0]) if isinstance(c, np.ndarray) and c.size == 1 else None
