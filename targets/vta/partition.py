"""Find the VTA layers in an integerised Relax ``main`` (structurally: op names, dtypes, constants,
requantiser attributes) and decide, op by op, what runs on VTA and what stays on the host.

A VTA layer is a chain of single-use values::

    conv2d(x:int8 NCHW, W:const int8 OIHW, groups=1, out int32)  |  matmul(x:int8 (N,K), W:const int8 (K,M), out int32)
      [-> add(., const int32 bias per channel)]
      [-> maximum(., 0)]                                            ReLU: 0 a scalar, or zeros per channel
                                                                    (a shift kernel's folded clamp at lo = 0)
      [-> max_pool2d(.)]*                                           (moved after the requantiser, see below)
      [-> requantiser: call_tir of a Requantize kernel (shiftc.core.contract), per axis (channel) | per tensor,
          m = 1 (pow2: a rounding right shift by e <= 31) or m = 2**k, e = 0 (a saturating
          left shift by k <= 30), bits 8 or 16]

It becomes one VTA program ``sat_bits(round_half_up((x * W + b) >> e))`` (ReLU: lower bound 0).
A chain without an accepted requantiser ends at the int32 value (stored as 4 byte planes) and the
host runs whatever follows. Max pools between the ReLU and the requantiser run on the host after
the VTA layer, on its int8/int16 output: the requantiser is monotone per channel, so
``requant(maxpool(z)) == maxpool(requant(z))`` exactly. ReLU commutes with it too (requant(0) = 0).

Everything else (quantise/dequantise boundaries, grouped/depthwise conv, integer means, residual
adds, ...) stays on the host; :func:`find_layers` returns a reason for every host op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from shiftc.core.contract import Requantize, ShiftKernel


@dataclass
class Chain:
    """One VTA layer found in the graph (all values are Relax vars of the original ``main``)."""

    kind: str                   # "conv2d" | "dense"
    anchor: relax.Var           # the conv2d / matmul value
    x: relax.Expr               # its int8 input
    weight: np.ndarray          # OIHW (conv) or (M, K) (dense), int8
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    bias: np.ndarray | None = None
    relu: bool = False
    pools: list = field(default_factory=list)   # max_pool2d calls moved after the requantiser
    pool_vars: list = field(default_factory=list)  # their original vars (members, but host ops)
    shift_e: object = 0                         # int or per-channel array
    out_bits: int = 32
    wgt_mode: str = "int8"      # "shift": weight holds shift codes, integer weights sign * 2**(P - p)
    shift_P: int | None = None
    members: list = field(default_factory=list)  # vars absorbed, in order; the last one is replaced
    notes: list = field(default_factory=list)

    @property
    def last(self) -> relax.Var:
        return self.members[-1]

    @property
    def ops(self) -> list[str]:
        return [m.name for m in self.members]


def _op(value) -> str:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return ""


def _dtype(e) -> str:
    return str(getattr(e.ty, "dtype", ""))


def _shape(e) -> tuple:
    return tuple(int(d) for d in e.ty.shape.values)


def _const(e) -> np.ndarray | None:
    return e.value.numpy() if isinstance(e, tvm.ir.expr.Constant) else None


def _vars_in(e) -> list:
    return [e] if isinstance(e, relax.Var) else list(relax.analysis.free_vars(e))


def _uses(func: relax.Function) -> dict:
    """How often each var is used (bindings and the function result)."""
    counts: dict = {}

    def count(e):
        for v in _vars_in(e):
            counts[v] = counts.get(v, 0) + 1

    for block in func.body.blocks:
        for b in block.bindings:
            count(b.value)
    count(func.body.body)
    return counts


def call_label(mod, value) -> str:
    """A short name for a bound value: the op name, or the call_tir kernel's name."""
    if isinstance(value, relax.Call):
        if _op(value) == "relax.call_tir":
            return f"call_tir {value.args[0].name_hint}"
        if isinstance(value.op, tvm.ir.Op):
            return value.op.name.replace("relax.", "")
        return getattr(value.op, "name_hint", str(value.op))
    return type(value).__name__


class _Finder:
    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.func = mod["main"]
        self.bindings = [b for blk in self.func.body.blocks for b in blk.bindings]
        self.uses = _uses(self.func)
        self.consumer = {}
        for b in self.bindings:
            for v in _vars_in(b.value):
                self.consumer.setdefault(v, b)

    def next_of(self, var):
        """The single consumer binding of ``var`` (None when it has several or is the output;
        bindings of non-dataflow vars are never absorbed)."""
        b = self.consumer.get(var) if self.uses.get(var, 0) == 1 else None
        return b if b is not None and isinstance(b.var, relax.DataflowVar) else None

    def anchor(self, b) -> tuple[Chain | None, str]:
        """A conv2d / matmul binding as the start of a chain, or why it cannot be one."""
        v, op = b.value, _op(b.value)
        if not isinstance(b.var, relax.DataflowVar):
            return None, "bound outside a dataflow block (not offloaded)"
        if op == "relax.call_tir":
            return self.shift_anchor(b)
        x, w = v.args[0], _const(v.args[1])
        if _dtype(b.var) != "int32" or _dtype(x) != "int8":
            return None, f"{op.replace('relax.', '')} is not int8 x int8 -> int32"
        if w is None or w.dtype != np.int8:
            return None, "weights are not a constant int8 tensor"
        if op == "relax.nn.conv2d":
            at = v.attrs
            if at.data_layout != "NCHW" or at.kernel_layout != "OIHW":
                return None, f"layout {at.data_layout}/{at.kernel_layout} (VTA lowering takes NCHW/OIHW)"
            if int(at.groups) != 1:
                return None, f"groups={int(at.groups)} (grouped/depthwise conv is not lowered to VTA)"
            if any(int(d) != 1 for d in at.dilation):
                return None, "dilated conv is not lowered to VTA"
            return Chain("conv2d", b.var, x, w, tuple(int(s) for s in at.strides),
                         tuple(int(p) for p in at.padding), members=[b.var]), ""
        if len(_shape(x)) != 2 or w.ndim != 2:
            return None, f"matmul of rank {len(_shape(x))} x {w.ndim} (VTA dense takes (N, K) x (K, M))"
        return Chain("dense", b.var, x, np.ascontiguousarray(w.T), members=[b.var]), ""

    def shift_anchor(self, b) -> tuple[Chain | None, str]:
        """An integer shift kernel (``ShiftKernel`` of kind ``shift_int``) with constant codes."""
        from shiftc.reference import unpack_codes

        v = b.value
        kernel = ShiftKernel.from_func(self.mod[v.args[0]])
        x, packed = v.args[1].fields[0], _const(v.args[1].fields[1])
        if kernel.terms != 1:
            return None, f"{kernel.terms}-term shift codes (the VTA shift core takes one code per weight)"
        if packed is None or _dtype(x) != "int8":
            return None, "shift kernel without int8 input and constant codes"
        oi = kernel.oi_shape()
        codes = unpack_codes(packed.tobytes(), kernel.bits, int(np.prod(oi)), kernel.zero_free, shape=oi).astype(np.int8)
        common = dict(members=[b.var], wgt_mode="shift", shift_P=kernel.P)
        if kernel.op == "conv2d":
            if kernel.groups != 1:
                return None, f"groups={kernel.groups} (grouped/depthwise conv is not lowered to VTA)"
            if any(d != 1 for d in kernel.dilation):
                return None, "dilated conv is not lowered to VTA"
            return Chain("conv2d", b.var, x, codes, kernel.strides, kernel.padding, **common), ""
        if len(_shape(x)) != 2:
            return None, f"shift matmul of rank {len(_shape(x))} (VTA dense takes (N, K))"
        return Chain("dense", b.var, x, codes, **common), ""

    def extend(self, c: Chain) -> Chain:
        """Absorb bias, ReLU, max pools and a shift-only requantiser after the anchor."""
        channels = c.weight.shape[0]
        caxis = 1  # channel axis of NCHW and of (N, M)
        nd = 4 if c.kind == "conv2d" else 2
        cur = c.anchor
        b = self.next_of(cur)
        if b is not None and _op(b.value) == "relax.add" and b.value.args[0].same_as(cur):
            bias = _const(b.value.args[1])
            if bias is not None and bias.dtype == np.int32 and _per_channel(bias, nd, caxis, channels):
                c.bias = bias.reshape(-1) if bias.size == channels else np.broadcast_to(bias.reshape(-1), (channels,))
                c.members.append(b.var)
                cur = b.var
                b = self.next_of(cur)
        if b is not None and _op(b.value) == "relax.maximum" and b.value.args[0].same_as(cur):
            lower = _const(b.value.args[1])
            if lower is not None and _per_channel(lower, nd, caxis, channels) and not lower.any():
                c.relu = True
                c.members.append(b.var)
                cur = b.var
                b = self.next_of(cur)
            elif lower is not None:
                c.notes.append(f"clamp {b.var.name} (a lower bound other than 0) and what follows "
                               "stay on the host: VTA lowers only ReLU (MAX 0) before the requantiser")
        if b is not None and _op(b.value) == "relax.minimum" and b.value.args[0].same_as(cur):
            c.notes.append(f"clamp {b.var.name} (an upper bound) and what follows stay on the host: "
                           "VTA lowers only ReLU (MAX 0) before the requantiser")
        pools = []
        while c.kind == "conv2d" and b is not None and _op(b.value) == "relax.nn.max_pool2d" \
                and b.value.attrs.layout == "NCHW":
            pools.append(b)
            b = self.next_of(b.var)
        if b is not None:
            e, bits, why = self.requantiser(b, channels, caxis, nd, pools[-1].var if pools else cur)
            if e is not None:
                c.shift_e, c.out_bits = e, bits
                c.pools = [p.value for p in pools]
                c.pool_vars = [p.var for p in pools]
                c.members.extend([p.var for p in pools] + [b.var])
                return c
            if why:
                c.notes.append(f"requantiser {b.var.name} stays on the host: {why}")
        return c

    def requantiser(self, b, channels, caxis, nd, src):
        """(e, bits, "") for a VTA-compatible requantiser binding, else (None, None, reason)."""
        v = b.value
        if _op(v) != "relax.call_tir" or not v.args[1].fields[0].same_as(src):
            return None, None, ""
        rq = Requantize.from_func(self.mod[v.args[0]])
        if rq is None:
            return None, None, ""
        bits = rq.bits
        if rq.unsigned:
            return None, None, "unsigned output (VTA stores signed results)"
        if bits not in (8, 16):
            return None, None, f"{bits}-bit output (VTA stores 8- or 16-bit results here)"
        if not rq.per_axis:
            m, e = rq.m, rq.e
        else:
            if rq.axis % nd != caxis:
                return None, None, "per-axis requantiser on a non-channel axis"
            m, e = _const(v.args[1].fields[1]), _const(v.args[1].fields[2])
            if m is None or e is None or m.size != channels:
                return None, None, "per-axis parameters are not constants of one value per channel"
            e = e.astype(np.int64)
        m, e = np.asarray(m, np.int64), np.asarray(e, np.int64)
        if not np.all((m >= 1) & ((m & (m - 1)) == 0)) or np.any((m > 1) & (e != 0)):
            return None, None, "multiplier m is not a power of two (not a pure shift: use requant='pow2')"
        amount = e - np.log2(m).round().astype(np.int64)  # signed: < 0 is a left shift (m = 2**k)
        if np.any(amount < -30) or np.any(amount > 31):
            return None, None, "shift outside [-30, 31]"
        return (int(amount) if amount.ndim == 0 else amount), bits, ""


def _per_channel(c: np.ndarray, nd: int, caxis: int, channels: int) -> bool:
    shape = [1] * nd
    shape[caxis] = channels
    try:
        return np.broadcast_shapes(c.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        return False


def _is_shift_kernel(mod, value) -> bool:
    if _op(value) != "relax.call_tir":
        return False
    kernel = ShiftKernel.from_func(mod[value.args[0]])
    return kernel is not None and kernel.kind == "shift_int" and kernel.P is not None


def find_layers(mod: tvm.IRModule) -> tuple[list[Chain], dict]:
    """The VTA chains of ``main`` and, for every other bound call, why it stays on the host."""
    f = _Finder(mod)
    chains, host = [], {}
    absorbed = set()
    for b in f.bindings:
        if b.var in absorbed:
            continue
        op = _op(b.value)
        if op in ("relax.nn.conv2d", "relax.matmul") or _is_shift_kernel(mod, b.value):
            c, why = f.anchor(b)
            if c is not None:
                c = f.extend(c)
                chains.append(c)
                absorbed.update(c.members)
                continue
            host[b.var] = why
        elif isinstance(b.value, relax.Call):
            host[b.var] = "no VTA lowering for this op (host CPU, LLVM)"
    return chains, host


@relax.expr_functor.mutator
class _Offload(relax.PyExprMutator):
    """Replace each chain by ``call_dps_packed(func, x)`` (+ the moved max pools)."""

    def __init__(self, mod, chains, funcs):
        super().__init__(mod)
        self.last = {c.last: (c, fn) for c, fn in zip(chains, funcs)}
        self.skip = {m for c in chains for m in c.members[:-1]}

    def visit_var_binding_(self, binding):
        var = binding.var
        if var in self.skip:
            return
        if var not in self.last:
            return super().visit_var_binding_(binding)
        c, fn = self.last[var]
        x = self.visit_expr(c.x)
        shape = _shape(c.pools[0].args[0]) if c.pools else _shape(var)
        dtype = {8: "int8", 16: "int16", 32: "int32"}[c.out_bits]
        out = self.builder_.emit(relax.call_dps_packed(fn, relax.Tuple([x]), out_ty=relax.TensorType(shape, dtype)),
                                 name_hint=f"vta_{var.name}")
        for p in c.pools:
            out = self.builder_.emit(relax.Call(p.op, [out], p.attrs, p.ty_args))
        self.set_var_remap(var, out)


def offload(mod: tvm.IRModule, chains: list[Chain], funcs: list[str]) -> tvm.IRModule:
    """``main`` with every chain replaced by a call of its packed function (dead code removed)."""
    new_main = _Offload(mod, chains, funcs).visit_expr(mod["main"])
    new = tvm.IRModule({gv: f for gv, f in mod.functions.items()}, attrs=mod.attrs)
    new["main"] = new_main
    return relax.transform.DeadCodeElimination(["main"])(new)
