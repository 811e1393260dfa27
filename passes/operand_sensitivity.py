"""Measured sensitivity of each matmul / conv operand to its own int8 quantisation, for the
``--accuracy-budget`` choice of int16 operands (``integerize_precision``).

One float module is built in which every candidate operand ``x`` of a linear layer is read as

    x + g[i] * (Q(x) - x),    Q(x) = s * clip(floor(x / s + 1/2), lo, hi)

with ``s``, ``lo``, ``hi`` the operand's int8 codes at its calibrated threshold (unsigned ``[0, 255]``
where calibration proved it non-negative, as the integeriser codes it) and ``g`` a new input of the
function (one gate per operand). Run with ``g = 0`` it is the float model; with the one-hot ``g = e_i``
only operand ``i`` is quantised. An operand's sensitivity is the relative L2 error of the model's
outputs on the calibration samples with only that operand quantised: its effect where it matters,
at the output (an operand whose own rounding is coarse may feed a layer that hides it, and one
with a fine step may sit where every error is amplified). One build, ``operands + 1`` runs per sample.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.calibrate import Calibration
from shiftc.core.host import flatten_outputs, host_vm
from shiftc.reference.quant import pow2_up
from shiftc.reference.rounding import code_range

from .graph import rewrite_main

GATE = "shiftc_sensitivity_gate"
_LINEAR = ("relax.matmul", "relax.nn.conv2d", "relax.nn.conv2d_transpose")


def _fake_quant(bb, x, s: float, lo: int, hi: int, gate, i: int):
    """``x + gate[i] * (Q(x) - x)`` with ``Q`` the int8 codes at scale ``s``, back in float."""
    f32 = lambda v: relax.const(np.float32(v), "float32")  # noqa: E731
    t = bb.emit(relax.op.floor(relax.op.add(relax.op.multiply(x, f32(1.0 / s)), f32(0.5))))
    q = bb.emit(relax.op.multiply(relax.op.minimum(relax.op.maximum(t, f32(lo)), f32(hi)), f32(s)))
    g = bb.emit(relax.op.take(gate, relax.const(i, "int64"), axis=0))
    return bb.emit(relax.op.add(x, relax.op.multiply(g, relax.op.subtract(q, x))))


def gated(mod: tvm.IRModule, names: list[str], calib: Calibration, pow2: bool = False) -> tvm.IRModule:
    """``mod`` whose ``main`` takes one more input, the gate vector (``len(names)`` float32), and
    reads operand ``names[i]`` of its matmuls / convs through ``x + g[i] * (Q(x) - x)``."""
    func = mod["main"]
    gate = relax.Var(GATE, relax.TensorType((len(names),), "float32"))
    index = {n: i for i, n in enumerate(names)}
    with_gate = relax.Function(list(func.params) + [gate], func.body, func.ret_ty, func.is_pure, func.attrs)
    mod = mod.clone()
    mod["main"] = with_gate

    def rule(g, var, value, bb):
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op) or value.op.name not in _LINEAR:
            return None
        hit = [isinstance(a, relax.Var) and a.name in index for a in value.args]
        if not any(hit):
            return None
        args = [_fake_quant(bb, a, *_codes(calib, a.name, pow2), gate, index[a.name]) if h else a
                for a, h in zip(value.args, hit)]
        return relax.Call(value.op, args, value.attrs, value.ty_args)

    return rewrite_main(mod, rule)


def _codes(calib: Calibration, name: str, pow2: bool) -> tuple[float, int, int]:
    """The int8 scale and code range the integeriser gives operand ``name``."""
    unsigned = name in calib.nonnegative and not pow2
    s = calib.scale(name, 8, unsigned)
    return (pow2_up(s) if pow2 else s), *code_range(8, unsigned)


def measure(mod: tvm.IRModule, names: list[str], calib: Calibration, samples, error, pow2: bool = False) -> dict[str, float]:
    """``{operand: error(reference outputs, outputs with only it quantised)}`` over ``samples``;
    ``error(ref, got)`` takes per-sample lists of output arrays (``integerize_precision.output_error``)."""
    if not names:
        return {}
    vm = host_vm(gated(mod, names, calib, pow2))
    params = [p.name for p in mod["main"].params]
    dev = tvm.cpu()
    runs: list[list[list[np.ndarray]]] = [[] for _ in range(len(names) + 1)]  # [gate][sample][output]
    for s in samples:
        args = [tvm.runtime.tensor(np.ascontiguousarray(s[p]), dev) for p in params]
        for k in range(len(names) + 1):
            g = np.zeros(len(names), np.float32)
            if k:
                g[k - 1] = 1.0
            runs[k].append(flatten_outputs(vm["main"](*args, tvm.runtime.tensor(g, dev))))
    return {n: error(runs[0], runs[i + 1]) for i, n in enumerate(names)}
