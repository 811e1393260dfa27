"""The CPU build's integer lowerings are exact: requantisers / residual adds as Relax ops
(schedules/int_relax.py) and integer shift kernels as int dot products (schedules/shift_dot.py)
give the same integers, bit for bit, as the TE kernels they replace and as the NumPy reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from shiftc.reference import rounding, shift as ref
from shiftc.kernels import integer as K
from shiftc.kernels import shift as SK
from shiftc.schedules.int_relax import LowerIntElementwise
from shiftc.schedules.shift_dot import LowerShiftToDot
from shiftc.targets.x86 import flatten_outputs

ROOT = Path(__file__).resolve().parents[1]


def _run(mod, *arrays):
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return flatten_outputs(vm["main"](*[tvm.runtime.tensor(a) for a in arrays]))


def _call_tir_names(mod) -> list[str]:
    return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


def _module(build, *specs):
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(shape, dtype)) for i, (shape, dtype) in enumerate(specs)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def test_requantisers_and_residual_add_as_relax_ops_are_bit_exact():
    rng = np.random.default_rng(0)
    C = 6
    m = np.array([1, 3, 2**31 - 1, 12345, 7, 2**20], np.int64)
    e = np.array([0, 1, 40, 62, 3, 17], np.int32)  # both ends of the shift range
    add = [1 << 20, 14, 3 << 18, 25, 16]

    def build(bb, z, a, b):
        q = bb.emit(bb.call_te(K.requantize_per_axis, z, relax.const(m), relax.const(e), 1, 8, primfunc_name_hint="requant_axis",
                               primfunc_attrs={"shiftc.requant": "per_axis", "shiftc.axis": 1, "shiftc.bits": 8}))
        t = bb.emit(bb.call_te(K.requantize, z, 1 << 29, 33, 16, primfunc_name_hint="requant",
                               primfunc_attrs={"shiftc.requant": "per_tensor", "shiftc.m": 1 << 29, "shiftc.e": 33, "shiftc.bits": 16}))
        s = bb.emit(bb.call_te(K.add_int, a, b, *add[:4], add[4], primfunc_name_hint="add_int", primfunc_attrs={"shiftc.add_int": add}))
        return relax.Tuple([q, t, s])

    mod = _module(build, ((2, C, 3, 5), "int32"), ((2, C, 3, 5), "int16"), ((2, C, 3, 5), "int16"))
    lowered = LowerIntElementwise()(mod)
    assert _call_tir_names(mod) == ["add_int", "requant", "requant_axis"]
    assert _call_tir_names(lowered) == []  # every one became Relax ops
    assert "R.right_shift" in lowered.script()

    z = rng.integers(-(2**31), 2**31 - 1, (2, C, 3, 5), dtype=np.int64).astype(np.int32)
    a = rng.integers(-(2**15), 2**15 - 1, (2, C, 3, 5)).astype(np.int16)
    b = rng.integers(-(2**15), 2**15 - 1, (2, C, 3, 5)).astype(np.int16)
    te_out = _run(mod, z, a, b)
    relax_out = _run(lowered, z, a, b)
    want = [rounding.requantize(z, m, e, 8, axis=1), rounding.requantize(z, 1 << 29, 33, 16)]
    for got_te, got_relax, ref_ in zip(te_out, relax_out, want):
        np.testing.assert_array_equal(got_relax, got_te)
        np.testing.assert_array_equal(got_relax, ref_)
    np.testing.assert_array_equal(relax_out[2], te_out[2])


def _shift_call(bb, x, op, codes, P, bits, zero_free, **conv):
    packed = np.frombuffer(ref.pack_codes(codes, bits, zero_free) + b"\0", np.uint8)
    terms, *oi = codes.shape
    wshape = oi if op == "conv2d" else [oi[1], oi[0]]
    attrs = {"shiftc.kernel": "shift_int", "shiftc.P": P, "shiftc.op": op, "shiftc.bits": bits, "shiftc.terms": terms,
             "shiftc.zero_free": int(zero_free), "shiftc.weight_shape": wshape}
    common = dict(P=P, terms=terms, bits=bits, zero_free=zero_free, packed=True)
    if op == "conv2d":
        attrs.update({"shiftc.strides": conv["stride"], "shiftc.padding": conv["padding"], "shiftc.dilation": [1, 1],
                      "shiftc.groups": conv["groups"]})
        return bb.call_te(SK.shift_conv2d_int, x, relax.const(packed, "uint8"), weight_shape=wshape, primfunc_name_hint="shift_conv2d_int",
                          primfunc_attrs=attrs, **conv, **common)
    return bb.call_te(SK.shift_matmul_int, x, relax.const(packed, "uint8"), out_features=oi[0], primfunc_name_hint="shift_matmul_int",
                      primfunc_attrs=attrs, **common)


@pytest.mark.parametrize("bits,zero_free,terms,weight_dtype", [(4, False, 1, "int8"), (4, True, 1, "int16"), (3, True, 2, "int8")])
def test_shift_kernels_as_dot_products_are_bit_exact(bits, zero_free, terms, weight_dtype):
    rng = np.random.default_rng(bits + terms)
    pmax = ref.p_limit(bits, zero_free)
    lo = 0 if zero_free else -(pmax + 1)

    def codes(shape):
        c = rng.integers(lo, pmax + 2, (terms, *shape))
        c = np.where(rng.random(c.shape) < 0.5, -c, c)
        if zero_free:
            c[c == 0] = 1
        return c.astype(np.int8)

    wc, wd, wm = codes((8, 4, 3, 3)), codes((4, 1, 3, 3)), codes((5, 8))
    P = pmax  # the largest exponent: the widest dot weights

    def build(bb, x, v):
        y = bb.emit(_shift_call(bb, x, "conv2d", wc, P, bits, zero_free, stride=[1, 1], padding=[1, 1, 1, 1], groups=1))
        d = bb.emit(_shift_call(bb, x, "conv2d", wd, P, bits, zero_free, stride=[2, 2], padding=[1, 1, 1, 1], groups=4))
        mm = bb.emit(_shift_call(bb, v, "matmul", wm, P, bits, zero_free))
        return relax.Tuple([y, d, mm])

    mod = _module(build, ((1, 4, 7, 9), "int8"), ((3, 8), "int8"))
    lowered = LowerShiftToDot()(mod)
    assert _call_tir_names(lowered) == []
    script = lowered.script()
    assert script.count("R.nn.conv2d") == 2 and script.count("R.matmul") == 1
    assert f'dtype="{weight_dtype}"' in script  # the dot weights' type: int16 only where 2^P > 127
    x = rng.integers(-128, 128, (1, 4, 7, 9)).astype(np.int8)
    v = rng.integers(-128, 128, (3, 8)).astype(np.int8)
    for got, want in zip(_run(lowered, x, v), _run(mod, x, v)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_run(lowered, x, v)[2], ref.shift_matmul_int_multi(v, wm, P) if terms > 1 else ref.shift_matmul_int(v, wm[0], P))


@pytest.mark.slow
def test_fashion_cnn_integer_shift_model_is_bit_exact_in_both_forms(monkeypatch, tmp_path):
    """Real model: the 4-bit shift, integer-only Fashion-MNIST CNN gives the same outputs with the
    x86 build's dot form (requantisers fused as Relax ops) as with the shift form."""
    import shiftc
    sys.path.insert(0, str(ROOT))
    from examples import fashion_mnist as fm

    x, _ = fm.load("test")
    images = fm.preprocess(x[:16])
    calib = [{"input": images[i : i + 1]} for i in range(8)]
    opts = dict(shift_bits=4, integer_only=True, calibration=calib)
    dot = shiftc.compile(str(ROOT / "examples/models/cnn.onnx"), "x86", output=tmp_path / "dot", **opts)
    assert any("int dot product" in n for n in next(s for s in dot.report.stages if s.name == "schedule").notes)
    monkeypatch.setattr("shiftc.schedules.shift_form.int_kernel_form", lambda _name: "shift")
    shift = shiftc.compile(str(ROOT / "examples/models/cnn.onnx"), "x86", output=tmp_path / "shift", **opts)
    assert not any("int dot product" in n for n in next(s for s in shift.report.stages if s.name == "schedule").notes)
    for i in range(len(images)):
        a, b = dot.run(images[i : i + 1]), shift.run(images[i : i + 1])
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("cpu,limit", [("znver5", 127), ("x86-64-v3", 64)])
def test_int8_pointwise_conv_and_matmul_on_the_dot_intrinsic_are_exact(cpu, limit, dtype):
    """int8 1x1 conv (NHWC after the CPU layout) and matmul -> the tensorized u8 x s8 GEMM with the
    +128 offset correction (uint8 activations: none), int16 matmul -> the int16 pair GEMM: equal to
    the NumPy result. VNNI
    (znver5) takes full-range int8 weights on vpdpbusd; AVX2 (x86-64-v3) only |w| <= 64 on
    vpmaddubsw, wider weights go to the int16 pair GEMM with the activations widened."""
    from shiftc.schedules import lower
    from shiftc.schedules.cpu_features import int8_dot_instruction
    from shiftc.targets.x86 import X86

    target = X86(cpu=cpu).tvm_target()
    if int8_dot_instruction(target) == "none" or (cpu == "znver5" and int8_dot_instruction(target) != "avx512vnni"):
        pytest.skip(f"LLVM gives {cpu} no int8 dot instruction here")
    rng = np.random.default_rng(1)
    wc = rng.integers(-limit, limit + 1, (32, 16, 1, 1)).astype(np.int8)
    wm = rng.integers(-limit, limit + 1, (32, 16)).astype(np.int8)
    wide = np.full((32, 16), 127, np.int8)
    w16 = (np.sign(rng.standard_normal((32, 16))) * 2 ** rng.integers(0, 16, (32, 16))).clip(-32768, 32767).astype(np.int16)
    w16[0, :2] = -32768

    def build(bb, x, v):
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(wc), out_dtype="int32"))
        y = bb.emit(relax.op.maximum(y, relax.const(-5000, "int32")))  # a fused epilogue
        m = bb.emit(relax.op.matmul(v, relax.const(wm.T.copy()), out_dtype="int32"))
        m2 = bb.emit(relax.op.matmul(v, relax.const(wide.T.copy()), out_dtype="int32"))
        m3 = bb.emit(relax.op.matmul(relax.op.astype(v, "int16"), relax.const(w16.T.copy()), out_dtype="int32"))
        return relax.Tuple([y, m, m2, m3])

    mod = _module(build, ((1, 16, 6, 8), dtype), ((5, 16), dtype))
    report = lower.ScheduleReport()
    prepared = lower.prepare(mod, target, None, report)
    # kernels: conv, one int8 GEMM shared by both matmuls (same structure), int16 GEMM; on AVX2 the
    # wide matmul (its 127 weights would saturate vpmaddubsw's int16 pair sums) shares the int16 GEMM
    assert report.default["tensorized"] == 3
    assert report.default["reduction"] == 0
    wide_kernels = [g.name_hint for g, _ in prepared.functions_items() if "int16_dot_gemm" in g.name_hint]
    assert len(wide_kernels) == 1, wide_kernels
    with target, tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(prepared, target=target, relax_pipeline=lower.lowering_pipeline(target))
    from shiftc.bench.machine import cpuinfo

    needs = {"znver5": {"avx512bw", "avx512_vnni"}, "x86-64-v3": {"avx2", "fma"}}[cpu]
    if not needs <= set(cpuinfo().get("flags", [])):
        pytest.skip(f"this CPU lacks {sorted(needs)}: the {cpu} build and its kernels were checked, not run")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    x = rng.integers(lo, hi + 1, (1, 16, 6, 8)).astype(dtype)
    v = rng.integers(lo, hi + 1, (5, 16)).astype(dtype)
    v[0] = lo if lo else hi  # the extreme int16 pair: (-128 or 255) * (-32768) twice (w16[0, :2] below)
    y, m, m2, m3 = flatten_outputs(vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(v)))
    conv = np.einsum("nchw,oc->nohw", x.astype(np.int32), wc[:, :, 0, 0].astype(np.int32))
    np.testing.assert_array_equal(y, np.maximum(conv, -5000))
    np.testing.assert_array_equal(m, v.astype(np.int32) @ wm.T.astype(np.int32))
    np.testing.assert_array_equal(m2, v.astype(np.int32) @ wide.T.astype(np.int32))
    np.testing.assert_array_equal(m3, v.astype(np.int64) @ w16.T.astype(np.int64))


@pytest.mark.slow
def test_kernel_profile_of_the_integer_cnn_names_its_fused_kernels(tmp_path):
    """benchmarks/kernel_profile.py on a real artifact: every row a kernel the VM called, the
    shares summing to one; the int8 CNN's kernels show the dot intrinsic and fused requantisers."""
    import shiftc

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import kernel_profile

    from examples import fashion_mnist as fm

    x, _ = fm.load("test")
    calib = [{"input": v[None]} for v in fm.preprocess(x[:8])]
    shiftc.compile(str(ROOT / "examples/models/cnn.onnx"), "x86", output=tmp_path / "cnn", integer_only=True, calibration=calib)
    rows = kernel_profile.profile(tmp_path / "cnn", repeats=2)
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-9 and all(r["calls"] >= 1 and r["ms"] > 0 for r in rows)
    fused = [r["name"] for r in rows if "conv2d" in r["name"] or "dot_gemm" in r["name"]]
    # the dense layer on the intrinsic (int16 pairs on AVX2: its int8 weights exceed |w| <= 64)
    assert any(n.startswith(("fused_int8_dot_gemm", "fused_int16_dot_gemm")) for n in fused), fused
    # requantisers fused into conv kernels (the first conv's is after its max pool)
    assert sum("right_shift" in n for n in fused) >= 2, fused


def test_two_constant_clamps_fold_into_one_with_the_same_integers():
    """FoldClamps: min(max(min(max(x, a), b), c), d) -> one clamp, for per-channel and scalar
    bounds, overlapping or disjoint intervals (a > d, b < c, ...): equal on every int32 value."""
    from shiftc.schedules.clamp_fold import FoldClamps

    rng = np.random.default_rng(5)
    C = 64
    a, b = rng.integers(-1000, 1000, (1, C, 1, 1)), rng.integers(-1000, 1000, (1, C, 1, 1))
    c, d = rng.integers(-1000, 1000, (1, C, 1, 1)), np.int64(300)
    a[0, :4, 0, 0], b[0, :4, 0, 0], c[0, :4, 0, 0] = [5, -5, 0, 900], [-5, 5, -700, 950], [0, 0, 800, -2000]

    def build(bb, x):
        y = bb.emit(relax.op.minimum(relax.op.maximum(x, relax.const(a.astype(np.int32))), relax.const(b.astype(np.int32))))
        z = bb.emit(relax.op.maximum(y, relax.const(c.astype(np.int32))))
        return relax.op.minimum(z, relax.const(d.astype(np.int32)))

    mod = _module(build, ((2, C, 3, 5), "int32"))
    folded = FoldClamps()(mod)
    assert folded.script().count("R.maximum") == 1 and folded.script().count("R.minimum") == 1
    x = rng.integers(-(2**31), 2**31 - 1, (2, C, 3, 5), dtype=np.int64).astype(np.int32)
    x[0, :, 0, :3] = [-(2**31), 2**31 - 1, 0]
    x[1] = rng.integers(-1200, 1200, (C, 3, 5))
    want = np.minimum(np.maximum(np.minimum(np.maximum(x, a), b), c), d)
    np.testing.assert_array_equal(_run(folded, x)[0], want)
    np.testing.assert_array_equal(_run(mod, x)[0], want)
