"""schedules/fold_permute.py: ``permute_dims`` of constants (what ``ConvertLayout`` puts on a conv's
weights and per-channel constants) folded in NumPy gives the very module TVM's ``FoldConstant``
gives by building each transpose with LLVM, also through a chain of permutes."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.schedules.fold_permute import FoldConstantPermute
from shiftc.schedules.lower import CPU_CONV_LAYOUT


def _model():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal((1, 8, 1, 1)).astype(np.float32)
    q = rng.integers(-128, 128, (2, 3, 4), dtype=np.int8)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.nn.conv2d(x, relax.const(w)), relax.const(b)))
            t = bb.emit(relax.op.permute_dims(relax.const(q), [2, 0, 1]))
            t = bb.emit(relax.op.permute_dims(t))  # a chain; no axes: reversed
            out = bb.emit_output(relax.Tuple([y, t]))
        bb.emit_func_output(out)
    return relax.transform.ConvertLayout(CPU_CONV_LAYOUT)(bb.get())


def _permutes_of_constants(mod) -> int:
    permute, found = tvm.ir.Op.get("relax.permute_dims"), []

    def visit(e):
        if isinstance(e, relax.Call) and e.op.same_as(permute) and isinstance(e.args[0], tvm.ir.expr.Constant):
            found.append(e)

    relax.analysis.post_order_visit(mod["main"], visit)
    return len(found)


def test_permutes_of_constants_fold_to_what_fold_constant_gives():
    mod = _model()
    assert _permutes_of_constants(mod) >= 3  # the conv weight, the bias, q
    folded = FoldConstantPermute()(mod)
    assert _permutes_of_constants(folded) == 0
    tvm.ir.assert_structural_equal(relax.transform.FoldConstant()(folded), relax.transform.FoldConstant()(mod))
