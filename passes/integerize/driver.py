"""The integerize driver: rebuild ``main`` binding by binding, each op by its registered rule
(registry.py), between input quantisers and output dequantisers (boundary.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax

from shiftc.calibrate import Calibration, float_values
from shiftc.core.contract import MarkedFunction
from shiftc.core.errors import UnsupportedModelError

from . import registry
from .boundary import dequantize_output, float_island, placeholder, quantize_input, requantized, unsupported_error
from .context import Context, Uncovered
from .fold import fold
from .value import IntOptions, IntReport, Q, is_float_type, op_name

FUNC = "main"


def integerize(mod: tvm.IRModule, calib: Calibration, opts: IntOptions, probe=()) -> tuple[tvm.IRModule, IntReport]:
    """Run the rewrite on ``main``; returns the new module and what it did.

    ``probe``: value names whose dequantised integer versions ``main`` also returns (after its
    own result), for per-value error analysis."""
    ctx = Context(mod, calib, opts)
    new = _rebuild(ctx, mod, probe)
    if ctx.unsupported and not opts.float_fallback:
        raise unsupported_error(ctx.unsupported)
    _name_nodes(ctx)
    return _with_helpers(mod, new), ctx.report


def coverage(mod: tvm.IRModule, opts: IntOptions) -> list[Uncovered]:
    """The ops ``integerize`` would leave without an integer form, found before calibration.

    The rewrite runs on nominal scales (every float value at threshold 1): each rule sees the
    call and its arguments as it will after calibration and accepts or declines it. What depends
    on the calibrated ranges is not decided here: a width search takes its widest width, and a
    range check that fails (a bias or scale out of range) is skipped -- both are settled by the
    real rewrite. Accumulator checks that depend only on weights and widths still raise."""
    names = float_values(mod[FUNC])
    nominal = Calibration("nominal", 0, {n: 1.0 for n in names})
    ctx = Context(mod, nominal, dataclasses.replace(opts, float_fallback=False, gelu="shift"), nominal=True)
    _rebuild(ctx, mod, ())
    return ctx.unsupported


def _rebuild(ctx: Context, mod: tvm.IRModule, probe) -> tvm.IRModule:
    func = mod[FUNC]
    params = [relax.Var(p.name, p.ty) for p in func.params]
    with ctx.bb.function(FUNC, params, attrs=dict(func.attrs) if func.attrs is not None else None):
        with ctx.bb.dataflow():
            for p, new_p in zip(func.params, params):
                ctx.vals[p] = quantize_input(ctx, p, new_p)
            _rewrite_bindings(ctx, func)
            out = ctx.bb.emit_output(_outputs(ctx, func.body.body, probe))
        ctx.bb.emit_func_output(out)
    return ctx.bb.get()


def _rewrite_bindings(ctx: Context, func) -> None:
    for block in func.body.blocks:
        for b in block.bindings:
            if not isinstance(b, relax.VarBinding):
                raise UnsupportedModelError(f"integerize: unsupported binding {type(b).__name__}")
            try:
                ctx.vals[b.var] = _visit(ctx, b.var, b.value)
            except (ValueError, OverflowError) as exc:  # reference range checks (scales, headroom)
                if ctx.nominal:  # depends on the calibrated ranges: settled by the real rewrite
                    ctx.vals[b.var] = placeholder(b.var.ty)
                    continue
                if ctx.unsupported:  # a consequence of an op already listed
                    raise unsupported_error(ctx.unsupported) from None
                why = str(exc).splitlines()[0][:200]
                raise UnsupportedModelError(f"integerize: cannot rewrite {ctx.node(b.var.name)}: {why}") from None


def _name_nodes(ctx: Context) -> None:
    """Every report row about a value also names its ONNX node (``node``; "" for shiftc's own)."""
    for row in ctx.report.rows:
        if "value" in row and "node" not in row:
            n = ctx.nodes.get(row["value"])
            row["node"] = n.name if n is not None else ""


def _outputs(ctx: Context, body, probe):
    result = dequantize_output(ctx, body)
    if not probe:
        return result
    named = {v.name: v for v in ctx.vals if isinstance(v, relax.Var)}
    return relax.Tuple([result] + [dequantize_output(ctx, named[n]) for n in probe])


def _with_helpers(old: tvm.IRModule, new: tvm.IRModule) -> tvm.IRModule:
    """``new`` plus the other functions of ``old`` (float islands may call them), minus dead code."""
    names = [g.name_hint for g in new.functions.keys()]
    for gv, f in old.functions.items():
        if gv.name_hint != FUNC and gv.name_hint not in names:
            new[gv] = f  # the GlobalVar itself: fallback calls refer to it; unused helpers go with DCE
    return relax.transform.DeadCodeElimination([FUNC])(new)


def _visit(ctx: Context, var, value):
    if isinstance(value, relax.TupleGetItem):  # a float island's tuple field is quantised here
        return requantized(ctx, ctx.get(value.tuple_value)[value.index], var.name, var.ty)
    if isinstance(value, relax.Var):
        return ctx.get(value)
    if isinstance(value, relax.Tuple):
        return [ctx.get(f) for f in value.fields]
    if not isinstance(value, relax.Call):
        raise UnsupportedModelError(f"integerize: unsupported expression {type(value).__name__} for {var.name}")
    if isinstance(value.op, relax.GlobalVar):
        return _function_call(ctx, var, value)
    op = op_name(value)
    if op == "relax.shape_of" and _static_shape(value.args[0]) is not None:
        return relax.ShapeExpr(_static_shape(value.args[0]))  # the shape of any value whose type is static
    args = [ctx.get(a) for a in value.args]
    if all(not isinstance(a, (Q, list)) for a in args):
        folded = fold(op, value, args)
        if folded is not None:
            return folded
        if not is_float_type(var.ty) and any(_is_tensor_expr(a) for a in args):
            # integer bookkeeping on integer inputs (index wrap-around, masks): unchanged
            new_args = [relax.const(a, str(a.dtype)) if isinstance(a, np.ndarray) else a for a in args]
            return ctx.emit(relax.Call(value.op, new_args, value.attrs, value.ty_args))
    return registry.rewrite(ctx, var, value, args, op)


def _static_shape(expr) -> list[int] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    dims = ty.shape.values
    return [int(d) for d in dims] if all(isinstance(d, tvm.tirx.IntImm) for d in dims) else None


def _is_tensor_expr(a) -> bool:
    return isinstance(a, relax.Expr) and not isinstance(a, (relax.ShapeExpr, relax.GlobalVar))


def _function_call(ctx: Context, var, call):
    """A call of another Relax function: a marked ``l2_normalize`` is removed with
    ``l2norm="remove"``; anything else is a float island."""
    f = ctx.mod[call.op]
    marked = MarkedFunction.from_func(f) if isinstance(f, relax.Function) else None
    args = [ctx.get(a) for a in call.args]
    if marked is not None and marked.op == "l2_normalize" and ctx.opts.l2norm == "remove" and isinstance(args[0], Q):
        ctx.report.rows.append({"op": "l2_normalize removed", "value": var.name})
        return args[0]
    return float_island(ctx, var, call, args, marked.op if marked is not None else call.op.name_hint)
