"""The integerize op-rule registry: which ops have integer rules (and what ``shiftc inspect`` says),
how a new rule plugs in, the float island as the default, and one rule's rewrite in full."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from shiftc.calibrate import Calibration
from shiftc.core.contract import Boundary
from shiftc.core.errors import UnsupportedModelError
from shiftc.kernels import quant as kq
from shiftc.op_report import integer_form
from shiftc.passes.integerize import RULES, IntOptions, Q, has_integer_form, int_rule, integerize
from shiftc.reference import quant as rq

F32 = "float32"
RULED = {
    "relax.add", "relax.astype", "relax.broadcast_to", "relax.call_tir", "relax.clip", "relax.concat", "relax.divide",
    "relax.erf", "relax.expand_dims", "relax.flatten", "relax.image.resize2d", "relax.matmul", "relax.maximum",
    "relax.mean", "relax.minimum", "relax.multiply", "relax.nn.avg_pool2d", "relax.nn.conv2d", "relax.nn.gelu",
    "relax.nn.gelu_tanh", "relax.nn.layer_norm", "relax.nn.leakyrelu", "relax.nn.max_pool2d", "relax.nn.prelu",
    "relax.nn.relu", "relax.nn.softmax", "relax.permute_dims", "relax.reshape", "relax.sigmoid", "relax.split",
    "relax.squeeze", "relax.strided_slice", "relax.subtract", "relax.sum", "relax.take", "relax.tanh",
    "relax.nn.conv2d_transpose", "relax.max", "relax.min", "relax.shape_of", "relax.nn.pad", "relax.sign",
}


def unary(op, shape=(2, 3)):
    """``main(x) = op(x)`` over float32 ``x``; the result is named ``y``."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, F32))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(op(x), name_hint="y")
        bb.emit_func_output(y)
    return bb.get()


def calib(**thresholds):
    return Calibration("minmax", 1, dict(thresholds))


def run(mod, x):
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def boundary_kinds(mod) -> list[str]:
    return sorted(b.kind for b in (Boundary.from_func(f) for f in mod.functions.values()) if b is not None)


def called_ops(mod) -> set[str]:
    return {b.value.op.name for block in mod["main"].body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)}


def test_registry_lists_the_ruled_ops_and_op_report_agrees():
    assert set(RULES) == RULED
    for op in RULED:
        assert has_integer_form(op) and integer_form(op)
    for op in ("relax.cos", "relax.nn.silu", "relax.exp", "l2_normalize"):
        assert not has_integer_form(op) and not integer_form(op)


def test_an_op_has_one_rule():
    with pytest.raises(ValueError, match="relax.nn.relu already has an integer rule"):
        int_rule("relax.nn.relu")(lambda ctx, var, call, args: None)
    assert RULES["relax.nn.relu"].__name__ == "relu"


def test_a_registered_rule_is_used_for_a_new_op():
    mod = unary(relax.op.negative)
    c = calib(x=1.27, y=1.27)
    assert not has_integer_form("relax.negative")
    try:
        @int_rule("relax.negative")
        def negative(ctx, var, call, args):
            (a,) = args
            return Q(ctx.emit(relax.op.negative(a.expr)), a.scale, a.bits, a.axis)

        new, rep = integerize(mod, c, IntOptions())
    finally:
        RULES.pop("relax.negative", None)
    assert not has_integer_form("relax.negative")
    assert rep.float_ops == [] and boundary_kinds(new) == ["dequantize", "quantize"]
    assert "relax.negative" in called_ops(new)
    x = np.array([[0.5, -1.0, 0.014], [1.3, -0.004, 0.0]], np.float32)
    np.testing.assert_array_equal(run(new, x), -rq.quantize(x, 0.01, 8).astype(np.float32) * np.float32(0.01))


@pytest.mark.parametrize("op, name", [(relax.op.cos, "relax.cos"),  # no rule
                                      (lambda x: relax.op.multiply(x, relax.const(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], F32))), "relax.multiply")])  # declines: varies on 2 axes
def test_float_island_is_the_default(op, name):
    mod = unary(op)
    c = calib(x=1.27, y=1.0)
    with pytest.raises(UnsupportedModelError, match=rf"no integer form for {name} \(1x\): value y "):
        integerize(mod, c, IntOptions())
    new, rep = integerize(mod, c, IntOptions(float_fallback=True))
    assert rep.float_ops == [{"op": name, "value": "y", "node": "", "onnx_op": ""}]  # not from an ONNX node
    assert boundary_kinds(new) == ["dequantize", "float_island", "float_island", "quantize"]
    assert name in called_ops(new)


@I.ir_module
class ReluBefore:
    @R.function
    def main(x: R.Tensor((2, 3), "float32")) -> R.Tensor((2, 3), "float32"):
        with R.dataflow():
            y = R.nn.relu(x)
            R.output(y)
        return y


def relu_expected(scale: float, attrs) -> tvm.IRModule:
    """quantize -> maximum(x_i8, 0) -> dequantize, both boundary kernels at the input's scale."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), F32))
    with bb.function("main", [x], attrs=attrs):
        with bb.dataflow():
            xq = bb.emit(bb.call_te(kq.quantize, x, scale, 8, primfunc_name_hint="quantize",
                                    primfunc_attrs=Boundary("quantize").to_attrs()))
            r = bb.emit(relax.op.maximum(xq, relax.const(0, "int8")))
            y = bb.emit(bb.call_te(kq.dequantize, r, scale, primfunc_name_hint="dequantize",
                                   primfunc_attrs=Boundary("dequantize").to_attrs()))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def test_relu_rule_rewrites_to_a_maximum_on_the_integers():
    c = calib(x=1.27, y=1.27)
    new, rep = integerize(ReluBefore, c, IntOptions())
    attrs = dict(ReluBefore["main"].attrs) if ReluBefore["main"].attrs is not None else None
    tvm.ir.assert_structural_equal(new, relu_expected(c.scale("x"), attrs))
    assert rep.rows == [{"op": "quantize", "value": "x", "scale": c.scale("x"), "node": ""}]  # "" : not an ONNX node
