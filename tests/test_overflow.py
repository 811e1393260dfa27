"""The static int32 accumulator proof (docs/NUMERICS.md §2.8): the bound functions of
``shiftc.reference.overflow`` against int64 / exact arithmetic at the int8 extremes, the emitted
split kernel bit-equal to its int64 reference, big MatMul / Conv models that used to wrap round
compiled exactly, and the shipped models left unsplit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import shiftc
from shiftc.reference import overflow as ov
from shiftc.reference.rounding import INT32_MAX, rshift_round

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
THRESHOLD = ov.max_uniform_k(8)  # 132,104: the largest K of full-scale int8 weights that fits


# --------------------------------------------------------------------------- bound functions
def _weights(draw, K, N):
    kind = draw(st.sampled_from(["full", "positive", "mixed", "sparse"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "full":
        w = np.where(rng.random((K, N)) < 0.5, -127, 127)
    elif kind == "positive":
        w = np.full((K, N), 127)
    elif kind == "mixed":
        w = rng.integers(-127, 128, (K, N))
    else:
        w = np.where(rng.random((K, N)) < 0.02, 127, 0)
    return w.astype(np.int8)


@st.composite
def dot_cases(draw):
    K = draw(st.one_of(st.integers(1, 64), st.integers(THRESHOLD - 3, THRESHOLD + 3), st.integers(THRESHOLD, 3 * THRESHOLD)))
    return _weights(draw, K, draw(st.integers(1, 3)))


@settings(max_examples=25, deadline=None)
@given(dot_cases())
def test_dot_bound_is_the_exact_worst_case(w):
    """``128 * sum|W|`` per channel is never exceeded, and the worst int8 input (-128 against a
    positive weight, 127 against a negative one) reaches it up to ``sum of |negative W|``."""
    w64 = w.astype(np.int64)
    bound = ov.dot_bound(w, axis=1)
    worst = np.einsum("kn,kn->n", np.where(w64 > 0, -128, 127), -w64)  # = sum 128|w+| + 127|w-|
    assert np.all(worst <= bound)
    assert np.array_equal(bound - worst, np.where(w64 < 0, -w64, 0).sum(0))
    x = np.random.default_rng(0).integers(-128, 128, w.shape[0])
    assert np.all(np.abs(x @ w64) <= bound)
    if worst.max() > INT32_MAX:
        assert not ov.fits_int32(bound)
    if ov.fits_int32(bound):
        assert worst.max() <= INT32_MAX


@settings(max_examples=25, deadline=None)
@given(dot_cases(), st.sampled_from([8, 7, 4]))
def test_chunks_fit_and_the_split_is_exact(w, x_bits):
    """Every chunk of ``k_chunks`` provably fits int32, the chunks tile K greedily, and the split
    sum narrowed by ``narrow_shift`` equals the exact int64 product rounded once."""
    K = w.shape[0]
    chunks = ov.k_chunks(np.abs(w.astype(np.int64)), x_bits)
    assert chunks[0][0] == 0 and chunks[-1][1] == K and all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    for i, (a, b) in enumerate(chunks):
        assert ov.fits_int32(ov.dot_bound(w[a:b], axis=1, x_bits=x_bits))
        if i + 1 < len(chunks):  # greedy: one more unit would not fit
            assert not ov.fits_int32(ov.dot_bound(w[a:b + 1], axis=1, x_bits=x_bits))
    lo, hi = -(1 << (x_bits - 1)), (1 << (x_bits - 1)) - 1
    x = np.where(w.astype(np.int64).T[:1] > 0, lo, hi)  # the extremes, (1, K)
    bound = int(ov.dot_bound(w, axis=1, x_bits=x_bits).max())
    r = ov.narrow_shift(bound)
    got = ov.chunked_matmul_int(x, w, chunks, r)
    exact = [sum(int(a) * int(b) for a, b in zip(x[0], w[:, n])) for n in range(w.shape[1])]  # Python ints
    assert np.array_equal(got[0], rshift_round(np.array(exact, np.int64), r))
    assert np.all(np.abs(got) <= ov.NARROW_LIMIT)
    assert all(abs(int(g) * 2**r - e) <= 2 ** max(r - 1, 0) for g, e in zip(got[0], exact))


def test_act_and_sum_bounds():
    assert ov.act_dot_bound(131_071, 8, 8) <= INT32_MAX < ov.act_dot_bound(131_072, 8, 8)
    assert ov.fits_int32(ov.sum_bound(65_535, 16)) and not ov.fits_int32(ov.sum_bound(65_536, 16))
    assert ov.max_uniform_k(8) == INT32_MAX // (128 * 127) == 132_104
    assert ov.narrow_shift(INT32_MAX, INT32_MAX) == 0 and ov.narrow_shift(2**31, INT32_MAX) == 1


# --------------------------------------------------------------------------- the emitted kernel
def _emitted_matmul(x_int: np.ndarray, w_int: np.ndarray):
    """The matmul rule on an int8 input (scale 1) and integer weights whose columns reach 127
    (scale 1): the emitted int32 result, its scale and the report row."""
    from shiftc.passes.integerize import IntOptions, Q
    from shiftc.passes.integerize.context import Context
    from shiftc.passes.integerize.rules_linear import matmul

    K, N = w_int.shape
    ctx = Context(tvm.IRModule(), None, IntOptions())
    xv = relax.Var("x", relax.TensorType((1, K), "int8"))
    fv = relax.Var("xf", relax.TensorType((1, K), "float32"))
    call = relax.op.matmul(fv, relax.const(w_int.astype(np.float32)))
    var = relax.Var("big_mm", relax.TensorType((1, N), "float32"))
    with ctx.bb.function("main", [xv]):
        with ctx.bb.dataflow():
            q = matmul(ctx, var, call, [Q(xv, 1.0, 8), w_int.astype(np.float32)])
            out = ctx.bb.emit_output(q.expr)
        ctx.bb.emit_func_output(out)
    ex = tvm.compile(ctx.bb.get(), target="llvm")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x_int.astype(np.int8))).numpy()
    return got, q, ctx.report.rows[-1]


@settings(max_examples=4, deadline=None)
@given(st.integers(THRESHOLD - 2, THRESHOLD + 2), st.sampled_from(["extreme", "random"]), st.integers(0, 2**16))
def test_emitted_split_kernel_is_bit_equal_to_int64(K, pattern, seed):
    rng = np.random.default_rng(seed)
    w = np.where(rng.random((K, 2)) < 0.5, -127, 127) if pattern == "random" else np.full((K, 2), 127)
    w[0] = 127  # every column reaches 127: weight scale 1, codes == w
    x = rng.integers(-128, 128, (1, K)) if pattern == "random" else np.full((1, K), -128)
    got, q, row = _emitted_matmul(x, w)
    exact = x.astype(np.int64) @ w.astype(np.int64)
    bound = ov.dot_bound(w.astype(np.int8), axis=1)
    if ov.fits_int32(bound):
        assert "split" not in row and np.array_equal(got, exact)
        return
    r = row["shift"]
    chunks = ov.k_chunks(np.abs(w.astype(np.int64)), 8)
    assert row["split"] == len(chunks) >= 2 and row["bound"] == int(bound.max())
    assert np.allclose(np.asarray(q.scale), 2.0**r)
    assert np.array_equal(got, ov.chunked_matmul_int(x, w, chunks, r))
    assert np.all(np.abs(got.astype(np.int64) * 2**r - exact) <= 2 ** (r - 1))


# --------------------------------------------------------------------------- the must-show models
def _model(node, x_shape, y_shape, weight):
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(weight, "W")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _compile_all_ones(model, x_shape):
    x = np.ones(x_shape, np.float32)
    try:
        cm = shiftc.compile(model, "x86", calibration=[{"x": x}], integer_only=True)
    except shiftc.UnsupportedModelError as exc:  # the other allowed answer: a one-line refusal
        assert "\n" not in str(exc) and str(exc).startswith("integerize: ")
        return None, None
    return cm.run(x)["y"], cm


@pytest.mark.parametrize("build, x_shape, expected", [
    (lambda: _model(helper.make_node("MatMul", ["x", "W"], ["y"]), [1, 140_000], [1, 2],
                    np.ones((140_000, 2), np.float32)), (1, 140_000), 140_000.0),
    (lambda: _model(helper.make_node("Conv", ["x", "W"], ["y"]), [1, 16_384, 3, 3], [1, 2, 1, 1],
                    np.ones((2, 16_384, 3, 3), np.float32)), (1, 16_384, 3, 3), 147_456.0),
], ids=["matmul_K140000", "conv_16384x3x3"])
def test_big_reductions_compile_exactly(build, x_shape, expected):
    """These wrapped round to about -126,000 before: now split (or refused), never wrong."""
    y, cm = _compile_all_ones(build(), x_shape)
    assert y is not None, "split expected for constant weights"
    step = expected / 127  # one output quantisation step, generously
    assert np.all(np.abs(y - expected) <= step), y
    stage = next(s for s in cm.report.stages if s.name == "integerize")
    rows = [r for r in stage.rows if r.get("split")]
    assert len(rows) == 1 and rows[0]["bound"] > INT32_MAX and rows[0]["split"] == 2
    assert any(n.startswith(rows[0]["value"] + ": ") and "split into 2 chunks" in n for n in stage.notes)


def test_unsplittable_reduction_is_refused_with_the_layer_name():
    """A depthwise-style grouped conv is not split: past the bound it is refused in one line."""
    C = 2
    W = np.ones((C, 1, 400, 400), np.float32)  # 160,000 taps per channel
    node = helper.make_node("Conv", ["x", "W"], ["y"], group=C)
    m = _model(node, [1, C, 400, 400], [1, C, 1, 1], W)
    x = np.ones((1, C, 400, 400), np.float32)
    with pytest.raises(shiftc.UnsupportedModelError) as exc:
        shiftc.compile(m, "x86", calibration=[{"x": x}], integer_only=True)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("integerize: ") and "grouped conv2d" in msg and "132,104" in msg


# --------------------------------------------------------------------------- normal models stay unsplit
@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_shipped_models_are_not_split(name):
    import shiftc.passes  # noqa: F401  (registers the stages)
    from shiftc import frontend
    from shiftc.core.report import StageReport
    from shiftc.pipeline import STAGES, PassOptions, StageContext

    data = np.load(MODELS / f"{name}_sample.npz")
    samples = [{"input": v[None]} for v in data["input"]]
    loaded = frontend.load(MODELS / f"{name}.onnx")
    mod = frontend.to_relax(loaded)
    options = PassOptions.from_kwargs(dict(integer_only=True))
    for stage in STAGES:
        if stage.enabled(options):
            rep = StageReport(stage.name)
            mod = stage.apply(mod, StageContext(options, samples, loaded, rep))
    assert rep.name == "integerize"
    assert not [r for r in rep.rows if r.get("split")]
    assert not [n for n in rep.notes if "narrowed" in n or "could leave int32" in n]
    assert any(r["op"] in ("matmul", "conv2d") for r in rep.rows)
