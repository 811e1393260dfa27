"""Each Relax pass on a tiny module: the module after the pass equals the expected module, written
out here (TVMScript, or a BlockBuilder where the expected module calls a TE kernel). Fast: no
compile, no model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from shiftc.core.relax_rewrite import rewrite_bindings
from shiftc.kernels import integer as IK
from shiftc.kernels import shift as SK
from shiftc.kernels.norm import l1_norm
from shiftc.passes.canonicalize import Canonicalize
from shiftc.passes.fold_norm import FoldNorm
from shiftc.passes.ln_to_l1 import LnToL1
from shiftc.passes.shift import RewriteShiftLayers, ShiftConfig
from shiftc.reference import shift as ref
from shiftc.schedules.int8_gemm import UseInt8DotIntrinsic
from shiftc.schedules.int_relax import LowerIntElementwise
from shiftc.schedules.shift_dot import LowerShiftToDot
from shiftc.schedules.shift_schedule import ScheduleShiftKernels

F32 = "float32"


def _main(params, build) -> tvm.IRModule:
    """A module whose ``main(*params)`` is one dataflow block: ``build(bb, *vars)`` -> output."""
    bb = relax.BlockBuilder()
    xs = [relax.Var(name, relax.TensorType(shape, dtype)) for name, shape, dtype in params]
    with bb.function("main", xs):
        with bb.dataflow():
            out = bb.emit_output(build(bb, *xs))
        bb.emit_func_output(out)
    return bb.get()


def test_every_pass_is_named_shiftc_and_its_class():
    llvm = tvm.target.Target({"kind": "llvm"})
    passes = [Canonicalize(), FoldNorm(), LnToL1(), RewriteShiftLayers({}, {}), LowerShiftToDot(), LowerIntElementwise(),
              UseInt8DotIntrinsic(llvm), ScheduleShiftKernels(llvm)]
    assert [p.info.name for p in passes] == [f"shiftc.{type(p).__name__}" for p in passes]


def test_rewrite_bindings_keeps_the_var_skips_aliases_and_drops_dead_bindings():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), F32)) -> R.Tensor((4,), F32):
            with R.dataflow():
                a = R.multiply(x, R.const(2.0, F32))
                dead = R.exp(x)
                b = a
                y = R.add(b, R.const(1.0, F32))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4,), F32)) -> R.Tensor((4,), F32):
            with R.dataflow():
                a = R.add(x, x)
                b = a
                y = R.add(b, R.const(1.0, F32))
                R.output(y)
            return y

    def rule(_var, value, _bb):
        is_mul = isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.multiply"))
        return relax.op.add(value.args[0], value.args[0]) if is_mul else None

    after, count = rewrite_bindings(Before, lambda _func: rule)
    assert count == 1
    tvm.ir.assert_structural_equal(after, Expected)


def test_canonicalize_erf_gelu_becomes_one_op():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), F32)) -> R.Tensor((2, 4), F32):
            with R.dataflow():
                z = R.divide(x, R.const(math.sqrt(2.0), F32))
                e = R.erf(z)
                c = R.add(e, R.const(1.0, F32))
                d = R.multiply(x, c)
                y = R.multiply(d, R.const(0.5, F32))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), F32)) -> R.Tensor((2, 4), F32):
            with R.dataflow():
                y = R.nn.gelu(x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(Canonicalize()(Before), Expected)


def test_canonicalize_written_out_layer_norm_becomes_one_op():
    gamma, beta = np.array([1.0, 2.0, 3.0, 4.0], F32), np.array([0.5, 0.0, -0.5, 1.0], F32)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), F32)) -> R.Tensor((2, 4), F32):
            with R.dataflow():
                mu = R.mean(x, axis=[-1], keepdims=True)
                d = R.subtract(x, mu)
                d2 = R.power(d, R.const(2.0, F32))
                v = R.mean(d2, axis=[-1], keepdims=True)
                ve = R.add(v, R.const(1e-5, F32))
                sd = R.sqrt(ve)
                n = R.divide(d, sd)
                g = R.multiply(n, R.const(gamma))
                y = R.add(g, R.const(beta))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), F32)) -> R.Tensor((2, 4), F32):
            with R.dataflow():
                y = R.nn.layer_norm(x, R.const(gamma), R.const(beta), axes=[1], epsilon=float(np.float32(1e-5)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(Canonicalize()(Before), Expected)


def test_canonicalize_l2_normalisation_becomes_a_marked_function():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), F32)) -> R.Tensor((2, 4), F32):
            with R.dataflow():
                sq = R.multiply(x, x)
                s = R.sum(sq, axis=[1], keepdims=True)
                n = R.sqrt(s)
                m = R.maximum(n, R.const(1e-12, F32))
                y = R.divide(x, m)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function(private=True)
        def l2_normalize(x: R.Tensor((2, 4), F32)) -> R.Tensor((2, 4), F32):
            R.func_attr({"shiftc.op": "l2_normalize", "shiftc.axes": [1], "shiftc.eps": float(np.float32(1e-12))})
            with R.dataflow():
                sq = R.multiply(x, x)
                s = R.sum(sq, axis=[1], keepdims=True)
                n = R.sqrt(s)
                m = R.maximum(n, R.const(float(np.float32(1e-12)), F32))
                y = R.divide(x, m)
                R.output(y)
            return y

        @R.function
        def main(x: R.Tensor((2, 4), F32)) -> R.Tensor((2, 4), F32):
            cls = Expected
            with R.dataflow():
                y = cls.l2_normalize(x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(Canonicalize()(Before), Expected)


def test_canonicalize_folds_a_constant_weight_transpose():
    w = np.arange(6, dtype=F32).reshape(3, 2)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2), F32)) -> R.Tensor((1, 3), F32):
            with R.dataflow():
                wt = R.permute_dims(R.const(w), axes=[1, 0])
                y = R.matmul(x, wt)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2), F32)) -> R.Tensor((1, 3), F32):
            with R.dataflow():
                wt = R.const(np.ascontiguousarray(w.T))  # inlined into its reader, left for dead-code removal
                y = R.matmul(x, R.const(np.ascontiguousarray(w.T)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(Canonicalize()(Before), Expected)


def test_fold_norm_batch_norm_into_the_conv_before_it():
    w = np.array([1.0, -2.0], F32).reshape(2, 1, 1, 1)
    gamma, beta = np.array([2.0, 0.5], F32), np.array([1.0, -1.0], F32)
    mean, var = np.array([0.25, -0.5], F32), np.array([3.0, 1.0], F32)
    eps = 1e-5

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 1, 2, 2), F32)) -> R.Tensor((1, 2, 2, 2), F32):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(w))
                bn = R.nn.batch_norm(c, R.const(gamma), R.const(beta), R.const(mean), R.const(var), axis=1, epsilon=eps, training=False)
                y = bn[0]
                R.output(y)
            return y

    # y = (conv(x, W) - mean) * s + beta,  s = gamma / sqrt(var + eps), in float64
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    w_folded = (w.astype(np.float64) * s.reshape(2, 1, 1, 1)).astype(F32)
    bias = (beta - mean.astype(np.float64) * s).astype(F32).reshape(1, 2, 1, 1)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 1, 2, 2), F32)) -> R.Tensor((1, 2, 2, 2), F32):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(w_folded))
                y = R.add(c, R.const(bias))
                R.output(y)
            return y

    fold = FoldNorm()
    tvm.ir.assert_structural_equal(fold(Before), Expected)
    assert fold.folded == {"batch_norm_into_conv": 1, "affine_into_consumer": 0, "affine_moved_past_mean": 0}


def test_fold_norm_affine_forward_into_the_matmul_after_it():
    scale, shift = np.array([2.0, 0.5], F32), np.array([1.0, -1.0], F32)
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], F32)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2), F32)) -> R.Tensor((1, 3), F32):
            with R.dataflow():
                a = R.multiply(x, R.const(scale))
                b = R.add(a, R.const(shift))
                y = R.matmul(b, R.const(w))
                R.output(y)
            return y

    # matmul(x * s + beta, W) = matmul(x, diag(s) W) + beta W
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2), F32)) -> R.Tensor((1, 3), F32):
            with R.dataflow():
                m = R.matmul(x, R.const(np.array([[2.0, 4.0, 6.0], [2.0, 2.5, 3.0]], F32)))
                y = R.add(m, R.const(np.array([[-3.0, -3.0, -3.0]], F32)))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldNorm()(Before), Expected)


def test_ln_to_l1_calls_the_l1_kernel_with_rescaled_gamma_and_eps():
    gamma, beta = np.array([1.0, 2.0, 3.0, 4.0], F32), np.array([0.5, 0.0, -0.5, 1.0], F32)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), F32)) -> R.Tensor((2, 4), F32):
            with R.dataflow():
                y = R.nn.layer_norm(x, R.const(gamma), R.const(beta), axes=[-1], epsilon=1e-5)
                R.output(y)
            return y

    k = math.sqrt(math.pi / 2)  # sigma = sqrt(pi/2) * mean|x - mu| for Gaussian rows
    expected = _main([("x", (2, 4), F32)], lambda bb, x: bb.call_te(
        l1_norm, x, relax.const((gamma / k).astype(F32)), relax.const(beta), eps=1e-5 / k))
    convert = LnToL1()
    tvm.ir.assert_structural_equal(convert(Before), expected)
    assert convert.converted == 1


def test_rewrite_shift_layers_folds_bias_and_relu_into_the_kernel():
    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 0.3, (6, 4)).astype(F32), np.array([0.1, -0.2, 0.3, 0.0], F32)
    before = _main([("x", (2, 6), F32)], lambda bb, x: relax.op.nn.relu(
        bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, relax.const(w))), relax.const(b)))))
    codes, alpha = ref.encode_pot(np.ascontiguousarray(w.T), 4, True)  # per output channel: (N, K) codes
    packed = np.frombuffer(ref.pack_codes(codes[None], 4, True) + b"\0", np.uint8)
    attrs = {"shiftc.kernel": "shift_float", "op_pattern": 8, "shiftc.op": "matmul", "shiftc.bits": 4, "shiftc.terms": 1,
             "shiftc.zero_free": 1, "shiftc.weight_shape": [6, 4], "shiftc.lo": 0.0}
    expected = _main([("x", (2, 6), F32)], lambda bb, x: bb.call_te(
        SK.shift_matmul_float, x, relax.const(packed, "uint8"), relax.const(alpha.astype(F32)), relax.const(b),
        out_features=4, terms=1, bits=4, zero_free=True, packed=True, lo=0.0, hi=None,
        primfunc_name_hint="shift_matmul_float", primfunc_attrs=attrs))
    after = RewriteShiftLayers({"matmul_0": ShiftConfig(4)}, {"matmul_0": (codes[None], alpha)})(before)
    tvm.ir.assert_structural_equal(after, expected)


def test_lower_shift_to_dot_turns_a_shift_int_matmul_into_an_int_matmul():
    codes = np.array([[[1, -2, 3], [-4, 1, 2]]], np.int8)  # (terms, O, K), zero-free 3-bit: p = |c| - 1
    P = 3
    packed = np.frombuffer(ref.pack_codes(codes, 3, True) + b"\0", np.uint8)
    attrs = {"shiftc.kernel": "shift_int", "op_pattern": 8, "shiftc.op": "matmul", "shiftc.bits": 3, "shiftc.terms": 1,
             "shiftc.zero_free": 1, "shiftc.weight_shape": [3, 2], "shiftc.P": P}
    before = _main([("x", (5, 3), "int8")], lambda bb, x: bb.call_te(
        SK.shift_matmul_int, x, relax.const(packed, "uint8"), out_features=2, P=P, terms=1, bits=3, zero_free=True, packed=True,
        primfunc_name_hint="shift_matmul_int", primfunc_attrs=attrs))
    # W[o, k] = sign * 2^(P - p): [[8, -4, 2], [-1, 8, 4]], as the (K, O) right-hand side
    wt = np.array([[8, -1], [-4, 8], [2, 4]], np.int8)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((5, 3), "int8")) -> R.Tensor((5, 2), "int32"):
            with R.dataflow():
                y = R.matmul(x, R.const(wt, "int8"), out_dtype="int32")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerShiftToDot()(before), Expected)


def test_lower_int_elementwise_turns_a_requantiser_into_relax_ops():
    attrs = {"shiftc.requant": "per_tensor", "shiftc.m": 3, "shiftc.e": 2, "shiftc.bits": 8}
    before = _main([("z", (2, 4), "int32")], lambda bb, z: bb.call_te(
        IK.requantize, z, 3, 2, 8, primfunc_name_hint="requant", primfunc_attrs=attrs))
    i32 = lambda v: R.const(np.array([[v]], np.int32), "int32")  # noqa: E731  (one element, z's rank)

    # saturate_8(round_half_up(z * 3 / 2^2)) in the int32 form (schedules/requant_i32.py):
    # z saturates outside [-171, 169]; m' = 3 * 2^29, e' = 33, so z << 2 into the high-word multiply,
    # then (hi + 2^0) >> 1
    @I.ir_module
    class Expected:
        @R.function
        def main(z: R.Tensor((2, 4), "int32")) -> R.Tensor((2, 4), "int8"):
            with R.dataflow():
                zc = R.minimum(R.maximum(z, i32(-171)), i32(169))
                zs = R.left_shift(zc, i32(2))
                p = R.multiply(R.astype(zs, "int64"), R.const(np.array([[3 << 29]], np.int64), "int64"))
                h = R.astype(R.right_shift(p, R.const(32, "int64")), "int32")
                s = R.right_shift(R.add(h, i32(1)), i32(1))
                lo = R.maximum(s, R.const(-128, "int32"))
                hi = R.minimum(lo, R.const(127, "int32"))
                y = R.astype(hi, "int8")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerIntElementwise()(before), Expected)


@pytest.mark.parametrize("pass_", [LowerShiftToDot(), LowerIntElementwise()])
def test_kernel_form_passes_leave_a_module_without_their_kernels_as_it_is(pass_):
    mod = _main([("x", (2, 4), F32)], lambda bb, x: relax.op.nn.relu(x))
    assert pass_(mod).same_as(mod)
