"""The kernel contract: what a pass records on a PrimFunc (or Relax function) for later passes,
schedules and targets to read. One dataclass per kernel kind; every writer calls ``to_attrs()``,
every reader calls ``from_func()``. docs/CONTRACTS.md lists the attributes.

    ShiftKernel     shift_float / shift_int kernels of the shift pass (codes, layout, epilogue, P)
    Requantize      requantisers (per tensor: m, e; per axis: axis) and their output width
    AddInt          residual adds of two requantised operands
    Boundary        quantize / dequantize / float_island kernels (exempt from the integer scan)
    MarkedFunction  Relax functions that canonicalize gave one meaning (e.g. l2_normalize)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

PREFIX = "shiftc."
KIND = PREFIX + "kernel"
OPAQUE = 8  # TVM's kOpaque pattern: keeps a kernel out of fusion


def _attrs(func):
    return getattr(func, "attrs", None)


def _get(attrs, key, default=None):
    return attrs[key] if attrs is not None and key in attrs else default


def _ints(v) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


def kernel_kind(func) -> str | None:
    """The ``shiftc.kernel`` tag of a PrimFunc (None when untagged)."""
    v = _get(_attrs(func), KIND)
    return None if v is None else str(v)


@dataclass(frozen=True)
class ShiftKernel:
    """A shift-add conv2d / matmul over packed b-bit power-of-two codes.

    ``kind``: ``shift_float`` (float activations, written by the shift pass) or ``shift_int``
    (int8 activations, written by integerize; then ``P`` = the largest code exponent).
    ``lo`` / ``hi``: the float clamp of a folded ReLU/Clip epilogue (float path only).
    ``uniform``: the packed stream holds one ``bits``-bit uniform level per weight, which the
    kernel expands into ``terms`` with-zero codes (``shiftc.reference.shift_uniform``)."""

    kind: str
    op: str  # conv2d | matmul
    bits: int
    terms: int
    zero_free: bool
    weight_shape: tuple[int, ...]
    strides: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    lo: float | None = None
    hi: float | None = None
    P: int | None = None
    uniform: bool = False

    KINDS: ClassVar[tuple[str, ...]] = ("shift_float", "shift_int")

    def to_attrs(self) -> dict:
        a = {KIND: self.kind, "op_pattern": OPAQUE, PREFIX + "op": self.op, PREFIX + "bits": int(self.bits),
             PREFIX + "terms": int(self.terms), PREFIX + "zero_free": int(self.zero_free),
             PREFIX + "weight_shape": [int(d) for d in self.weight_shape]}
        if self.op == "conv2d":
            a.update({PREFIX + "strides": list(_ints(self.strides)), PREFIX + "padding": list(_ints(self.padding)),
                      PREFIX + "dilation": list(_ints(self.dilation)), PREFIX + "groups": int(self.groups)})
        for key in ("lo", "hi"):
            if getattr(self, key) is not None:
                a[PREFIX + key] = float(getattr(self, key))
        if self.P is not None:
            a[PREFIX + "P"] = int(self.P)
        if self.uniform:
            a[PREFIX + "uniform"] = 1
        return a

    @classmethod
    def from_func(cls, func) -> "ShiftKernel | None":
        at = _attrs(func)
        kind = kernel_kind(func)
        if kind not in cls.KINDS:
            return None
        conv = str(at[PREFIX + "op"]) == "conv2d"
        opt = lambda k, f: None if _get(at, PREFIX + k) is None else f(at[PREFIX + k])  # noqa: E731
        return cls(
            kind=kind, op=str(at[PREFIX + "op"]), bits=int(at[PREFIX + "bits"]), terms=int(at[PREFIX + "terms"]),
            zero_free=bool(int(at[PREFIX + "zero_free"])), weight_shape=_ints(at[PREFIX + "weight_shape"]),
            strides=_ints(at[PREFIX + "strides"]) if conv else (), padding=_ints(at[PREFIX + "padding"]) if conv else (),
            dilation=_ints(at[PREFIX + "dilation"]) if conv else (), groups=int(at[PREFIX + "groups"]) if conv else 1,
            lo=opt("lo", float), hi=opt("hi", float), P=opt("P", int), uniform=bool(opt("uniform", int)),
        )

    def oi_shape(self) -> tuple[int, ...]:
        """The weight shape with the output channels first (OIHW; (O, I) for matmul)."""
        w = self.weight_shape
        return tuple(w) if self.op == "conv2d" else (w[1], w[0])


@dataclass(frozen=True)
class Requantize:
    """``y = saturate_bits(round_half_up(z * m / 2**e))``: per tensor (``m``, ``e`` recorded), or
    per ``axis`` (``m``, ``e`` are the kernel's tensor arguments); ``unsigned``: saturated to
    ``[0, 2**bits - 1]`` (a u8 operand of a u8 x s8 conv / matmul)."""

    bits: int
    m: int | None = None
    e: int | None = None
    axis: int | None = None
    unsigned: bool = False

    KEY: ClassVar[str] = PREFIX + "requant"

    @property
    def per_axis(self) -> bool:
        return self.axis is not None

    def to_attrs(self) -> dict:
        sign = {PREFIX + "unsigned": 1} if self.unsigned else {}
        if self.per_axis:
            return {self.KEY: "per_axis", PREFIX + "axis": int(self.axis), PREFIX + "bits": int(self.bits), **sign}
        return {self.KEY: "per_tensor", PREFIX + "m": int(self.m), PREFIX + "e": int(self.e), PREFIX + "bits": int(self.bits), **sign}

    @classmethod
    def from_func(cls, func) -> "Requantize | None":
        at = _attrs(func)
        mode = _get(at, cls.KEY)
        if mode is None:
            return None
        unsigned = _get(at, PREFIX + "unsigned") is not None
        if str(mode) == "per_axis":
            return cls(bits=int(at[PREFIX + "bits"]), axis=int(at[PREFIX + "axis"]), unsigned=unsigned)
        return cls(bits=int(at[PREFIX + "bits"]), m=int(at[PREFIX + "m"]), e=int(at[PREFIX + "e"]), unsigned=unsigned)


@dataclass(frozen=True)
class AddInt:
    """``saturate_bits(rq(a; ma, ea) + rq(b; mb, eb))``: a residual add of two integer operands."""

    ma: int
    ea: int
    mb: int
    eb: int
    bits: int

    KEY: ClassVar[str] = PREFIX + "add_int"

    def params(self) -> list[int]:
        return [int(self.ma), int(self.ea), int(self.mb), int(self.eb), int(self.bits)]

    def to_attrs(self) -> dict:
        return {self.KEY: self.params()}

    @classmethod
    def from_func(cls, func) -> "AddInt | None":
        v = _get(_attrs(func), cls.KEY)
        return None if v is None else cls(*(int(x) for x in v))


@dataclass(frozen=True)
class Boundary:
    """A float <-> integer boundary kernel: the graph's input ``quantize``, output ``dequantize``,
    or either side of a ``float_island`` (an op kept in float with --float-fallback). The integer
    scan (passes/float_scan.py) exempts ``quantize`` / ``dequantize``; it reports float islands."""

    kind: str

    KINDS: ClassVar[tuple[str, ...]] = ("quantize", "dequantize", "float_island")

    def to_attrs(self) -> dict:
        return {KIND: self.kind, "op_pattern": OPAQUE}

    @classmethod
    def from_func(cls, func) -> "Boundary | None":
        kind = kernel_kind(func)
        return cls(kind) if kind in cls.KINDS else None


@dataclass(frozen=True)
class MarkedFunction:
    """A Relax function that stands for one op (canonicalize's ``l2_normalize``)."""

    op: str
    axes: tuple[int, ...] = ()
    eps: float = 0.0

    KEY: ClassVar[str] = PREFIX + "op"

    def to_attrs(self) -> dict:
        return {self.KEY: self.op, PREFIX + "axes": [int(a) for a in self.axes], PREFIX + "eps": float(self.eps)}

    @classmethod
    def from_func(cls, func) -> "MarkedFunction | None":
        at = _attrs(func)
        if _get(at, cls.KEY) is None or kernel_kind(func) is not None:
            return None
        return cls(str(at[cls.KEY]), _ints(_get(at, PREFIX + "axes", ())), float(_get(at, PREFIX + "eps", 0.0)))
