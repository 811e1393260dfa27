"""Epilogues of a rewritten layer: the bias add and clamp that follow it, folded into its kernel.

Recognised chain after ``y = conv2d/matmul(x, W)`` (each value used only by the next step):

    add(y, b) / add(b, y)  b a float32 constant that varies only along the output channel
    relu(y) / maximum(y, c) / minimum(y, c) / clip(y, lo, hi)     c a float32 scalar constant

``maximum``/``minimum`` also match the importer's legalised form, ``call_tir`` of a PrimFunc named
``maximum*``/``minimum*`` with a scalar constant (what ONNX Clip becomes).  The kernel then computes
``min(max(acc * alpha + b, lo), hi)`` once per output — exact, the same float operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax


@dataclass
class Epilogue:
    bias: np.ndarray | None = None
    lo: float | None = None
    hi: float | None = None
    consumed: list = field(default_factory=list)  # vars whose single consumer is folded


def _op_name(call) -> str:
    return call.op.name if isinstance(call, tvm.ir.expr.Call) and isinstance(call.op, tvm.ir.Op) else ""


def _scalar(expr) -> float | None:
    if isinstance(expr, tvm.ir.expr.Constant) and expr.value.dtype == "float32" and expr.value.numpy().size == 1:
        return float(expr.value.numpy().reshape(()))
    return None


def channel_bias(kind: str, out_shape, expr) -> np.ndarray | None:
    """The vector of a float32 constant that broadcasts along the output channel only."""
    if not isinstance(expr, tvm.ir.expr.Constant) or expr.value.dtype != "float32":
        return None
    b = expr.value.numpy()
    axis = 1 if kind == "conv2d" else len(out_shape) - 1
    want = [1] * len(out_shape)
    want[axis] = out_shape[axis]
    have = [1] * (len(out_shape) - b.ndim) + list(b.shape)
    return np.ascontiguousarray(b.reshape(-1).astype(np.float32)) if have == want else None


def _clamp_step(call, mod) -> tuple[str, float] | None:
    """("lo", v) / ("hi", v) if ``call`` clamps its first argument by a scalar constant."""
    name = _op_name(call)
    if name == "relax.nn.relu":
        return "lo", 0.0
    if name in ("relax.maximum", "relax.minimum") and _scalar(call.args[1]) is not None:
        return ("lo" if name == "relax.maximum" else "hi"), _scalar(call.args[1])
    if name == "relax.call_tir" and mod is not None:
        gv, args = call.args[0], call.args[1]
        fields = list(args.fields) if hasattr(args, "fields") else []
        prim = mod.functions.get(gv) if isinstance(gv, tvm.ir.GlobalVar) else None
        if prim is not None and len(fields) == 2 and _scalar(fields[1]) is not None:
            for prefix, side in (("maximum", "lo"), ("minimum", "hi")):
                if gv.name_hint.startswith(prefix):
                    return side, _scalar(fields[1])
    return None


def data_arg(call):
    """The data operand: ``call_tir``'s first tensor; for ``add`` the non-constant side."""
    if _op_name(call) == "relax.call_tir":
        args = call.args[1]
        return args.fields[0] if hasattr(args, "fields") and len(args.fields) else None
    if _op_name(call) == "relax.add" and isinstance(call.args[0], tvm.ir.expr.Constant):
        return call.args[1]
    return call.args[0] if isinstance(call, tvm.ir.expr.Call) and len(call.args) else None


def _other_arg(call, data):
    return call.args[1] if call.args[0].same_as(data) else call.args[0]


def find_epilogues(func, kinds: dict, mod=None) -> dict:
    """Candidate output var -> ``Epilogue`` for every candidate (``kinds``: var -> op kind)."""
    bindings = [b for blk in func.body.blocks for b in blk.bindings]
    uses: dict = {}
    for b in bindings:
        for v in relax.analysis.free_vars(b.value):
            uses[v] = uses.get(v, 0) + 1
    for v in relax.analysis.free_vars(func.body.body):
        uses[v] = uses.get(v, 0) + 1
    consumer = {}
    for b in bindings:
        first = data_arg(b.value)
        if isinstance(first, relax.Var):
            consumer.setdefault(first, []).append(b)
    out = {}
    for var, kind in kinds.items():
        ep = Epilogue()
        cur = var
        while uses.get(cur, 0) == 1 and len(consumer.get(cur, [])) == 1:
            b = consumer[cur][0]
            if _op_name(b.value) == "relax.add" and ep.bias is None and ep.lo is None and ep.hi is None:
                bias = channel_bias(kind, [int(d) for d in var.ty.shape], _other_arg(b.value, cur))
                if bias is None:
                    break
                ep.bias = bias
            else:
                step = _clamp_step(b.value, mod)
                if step is None or getattr(ep, step[0]) is not None:
                    break
                setattr(ep, step[0], step[1])
            ep.consumed.append(cur)
            cur = b.var
        if ep.lo is not None and ep.hi is not None and ep.lo > ep.hi:
            ep = Epilogue(bias=ep.bias, consumed=ep.consumed[:1]) if ep.bias is not None else Epilogue()
        out[var] = ep
    return out
