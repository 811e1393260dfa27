"""TE integer kernels (shiftc.kernels.integer, and the plain shift kernels of tests/helpers) vs the
NumPy reference, bit for bit."""

import re

import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from tvm import te

from helpers import int_shift_te as SK
from shiftc import reference as R
from shiftc.kernels import integer as K
from shiftc.kernels.igelu import i_gelu as i_gelu_kernel
from shiftc.kernels import resize as KR
from shiftc.reference import resize as RR

TARGET = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
DEV = tvm.cpu()
EX = settings(max_examples=25, deadline=None)

_CACHE: dict = {}
_FUNCS: dict = {}


def build(key, make):
    """Build (once per key) ``make() -> (inputs, output)`` and return a NumPy-level callable."""
    if key not in _CACHE:
        ins, out = make()
        f = te.create_prim_func(list(ins) + [out])
        _FUNCS[key] = f
        lib = tvm.compile(f, target=TARGET)
        shapes = [(tuple(int(d) for d in t.shape), str(t.dtype)) for t in ins]
        oshape, odt = tuple(int(d) for d in out.shape), str(out.dtype)

        def run(*arrays, lib=lib, shapes=shapes, oshape=oshape, odt=odt):
            args = [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=dt).reshape(sh), DEV) for a, (sh, dt) in zip(arrays, shapes)]
            o = tvm.runtime.tensor(np.zeros(oshape, odt), DEV)
            lib(*args, o)
            return o.numpy()

        _CACHE[key] = run
    return _CACHE[key]


def ph(shape, dtype, name="x"):
    return te.placeholder(shape, dtype, name=name)


def i8(shape):
    return hnp.arrays(np.int8, shape, elements=st.integers(-128, 127))


def extreme_rows(shape):
    """Hypothesis arrays plus hand-picked rows: all -128, all 127, all equal, one huge max."""
    rows = st.sampled_from(["rand", "min", "max", "equal", "spike"])

    @st.composite
    def strat(draw):
        a = draw(i8(shape))
        kind = draw(rows)
        if kind == "min":
            a[...] = -128
        elif kind == "max":
            a[...] = 127
        elif kind == "equal":
            a[...] = draw(st.integers(-128, 127))
        elif kind == "spike":
            a[..., 0] = 127
            a[..., 1:] = np.clip(a[..., 1:], -20, 20)
        return a

    return strat()


# ------------------------------------------------------------------ requantisation / add
RQ_SCALES = [1e-5, 0.0123, 0.5, 7.0]  # a few fixed scales: one build each


@EX
@given(hnp.arrays(np.int32, (4, 16), elements=st.integers(-(2**31), 2**31 - 1)), st.sampled_from(RQ_SCALES), st.sampled_from([8, 16]))
def test_requantize(z, scale, bits):
    m, e = R.dyadic(scale)

    def make():
        x = ph((4, 16), "int32")
        return (x,), K.requantize(x, m, e, bits)

    run = build(("rq", m, e, bits), make)
    assert np.array_equal(run(z), R.requantize(z, m, e, bits))


def test_requantize_fixed_extremes():
    z = np.array([[-(2**31), 2**31 - 1, 0, 1, -1, 3, -3, 2**20]], np.int32)
    for scale in (0.5, 1e-4, 3.0, 2.0**-31):
        m, e = R.dyadic(scale)
        x = ph((1, 8), "int32")
        run = build(("rqx", m, e), lambda: ((x,), K.requantize(x, m, e, 8)))
        assert np.array_equal(run(z), R.requantize(z, m, e, 8))


@EX
@given(hnp.arrays(np.int32, (2, 3, 5), elements=st.integers(-(2**31), 2**31 - 1)), st.lists(st.floats(1e-6, 1.0), min_size=3, max_size=3))
def test_requantize_per_axis(z, scales):
    m, e = R.dyadic(np.array(scales))
    scales = np.array(scales)

    def make():
        x = ph((2, 3, 5), "int32")
        mt = ph((3,), "int32", "m")
        et = ph((3,), "int32", "e")
        return (x, mt, et), K.requantize_per_axis(x, mt, et, axis=1, bits=8)

    run = build("rq_axis", make)
    assert np.array_equal(run(z, m.astype(np.int32), e.astype(np.int32)), R.requantize(z, m, e, 8, axis=1))


@EX
@given(i8((3, 8)), i8((3, 8)), st.sampled_from([0.013, 0.2]), st.sampled_from([0.07, 0.19]))
def test_add_int(a, b, sa, sb):
    so = 0.15
    ma, ea = R.requant_params(sa, so)
    mb, eb = R.requant_params(sb, so)

    def make():
        x = ph((3, 8), "int8", "a")
        y = ph((3, 8), "int8", "b")
        return (x, y), K.add_int(x, y, ma, ea, mb, eb, 8)

    run = build(("add", ma, ea, mb, eb), make)
    assert np.array_equal(run(a, b), R.add_int(a, sa, b, sb, so))


# ------------------------------------------------------------------ exp / shiftmax / gelu
SM_S = 0.04
SM_X0 = R.exp_x0(SM_S, 15)


def _sm_run():
    def make():
        x = ph((4, 33), "int8")
        return (x,), K.shiftmax(x, SM_X0, 15)

    return build("shiftmax", make)


@EX
@given(extreme_rows((4, 33)))
def test_shiftmax(x):
    assert np.array_equal(_sm_run()(x), R.shiftmax(x, SM_S, 15))


def _sm_u8_run():
    def make():
        x = ph((4, 33), "int16")
        return (x,), K.shiftmax(x, SM_X0, 12, unsigned=True)

    return build("shiftmax_u8", make)


@EX
@given(extreme_rows((4, 33)))
def test_shiftmax_unsigned(x):
    """uint8 probabilities at 2**-8 (the u8 operand of attention's P V), bit-exact."""
    got = _sm_u8_run()(x.astype(np.int16))
    want = R.shiftmax(x.astype(np.int16), SM_S, 12, unsigned=True)
    assert got.dtype == np.uint8 and np.array_equal(got, want)


@EX
@given(hnp.arrays(np.int32, (64,), elements=st.integers(-(2**30), 2**20)), st.sampled_from([(0.01, 15), (0.3, 23), (0.05, 23)]))
def test_int_exp(x, sn):
    s, n = sn
    try:
        x0 = R.exp_x0(s, n)
    except ValueError:
        return

    def make():
        t = ph((64,), "int32")
        return (t,), K.int_exp(t, x0, n)

    run = build(("exp", x0, n), make)
    assert np.array_equal(run(x), R.int_exp_shift_int(x, x0, n))


GELU_S = 0.05
GELU_X0 = R.exp_x0(GELU_S, 23)


@EX
@given(extreme_rows((3, 40)))
def test_shift_gelu(x):
    def make():
        t = ph((3, 40), "int8")
        return (t,), K.shift_gelu(t, GELU_X0, 23)

    run = build("shift_gelu", make)
    assert np.array_equal(run(x), R.shift_gelu(x, GELU_S, 23))


def test_shift_gelu_int32_huge_max():
    x = np.array([[-3000, -20, -5, 0, 3, 17, 60, 30000]], np.int32)

    def make():
        t = ph((1, 8), "int32")
        return (t,), K.shift_gelu(t, GELU_X0, 23)

    assert np.array_equal(build("shift_gelu32", make)(x), R.shift_gelu(x, GELU_S, 23))


LAMS = [((1, 0), (1, -1), (1, -2)), ((-1, -2), (1, 1)), ((1, 1), (-1, -2), (1, -5))]


@EX
@given(hnp.arrays(np.int32, (3, 40), elements=st.one_of(st.integers(-128, 127), st.integers(-4000, 4000))), st.sampled_from([(0, 0.05), (1, 0.003), (2, 0.4)]))
def test_lambda_gelu(x, ls):
    li, s = ls
    p = R.lambda_gelu_params(s, LAMS[li])
    x = np.clip(x, -p.x_max, p.x_max).astype(np.int32)
    x[0, 0], x[0, 1] = p.x_max, -p.x_max

    def make():
        t = ph((3, 40), "int32")
        return (t,), K.lambda_shift_gelu(t, p)

    run = build(("lgelu", p), make)
    assert np.array_equal(run(x), R.lambda_shift_gelu(x, s, LAMS[li]))


@EX
@given(hnp.arrays(np.int32, (3, 40), elements=st.one_of(st.integers(-128, 127), st.integers(-65535, 65535))),
       st.sampled_from([0.19, 0.012, 7.6e-4, 5.5e-5]))
def test_i_gelu(x, s):
    p = R.i_gelu_params(s)
    x[0, 0], x[0, 1], x[0, 2], x[0, 3], x[0, 4] = p.x_max, -p.x_max, 0, p.c, -p.c  # both ends, the clip codes

    def make():
        t = ph((3, 40), "int32")
        return (t,), i_gelu_kernel(t, p)

    assert np.array_equal(build(("igelu", p), make)(x), R.i_gelu_int(x, p))


def test_i_gelu_int16_input():
    p = R.i_gelu_params(7.6e-4)
    x = np.arange(-32768, 32768, dtype=np.int16).reshape(256, 256)

    def make():
        t = ph((256, 256), "int16")
        return (t,), i_gelu_kernel(t, p)

    assert np.array_equal(build(("igelu16", p), make)(x), R.i_gelu_int(x, p))


# ------------------------------------------------------------------ isqrt / norms
@EX
@given(hnp.arrays(np.int64, (32,), elements=st.one_of(st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1), st.sampled_from([0, 1, 2, 3, 2**62, 2**63 - 1]))))
def test_isqrt(v):
    def make():
        t = ph((32,), "int64")
        return (t,), K.isqrt(t)

    assert np.array_equal(build("isqrt", make)(v), R.isqrt_newton(v))


@EX
@given(extreme_rows((3, 48)))
def test_i_layernorm(x):
    def make():
        t = ph((3, 48), "int8")
        return (t,), K.i_layernorm(t)

    assert np.array_equal(build("ln", make)(x), R.i_layernorm(x))


@EX
@given(extreme_rows((3, 48)))
def test_i_l1_norm(x):
    def make():
        t = ph((3, 48), "int8")
        return (t,), K.i_l1_norm(t)

    assert np.array_equal(build("l1", make)(x), R.i_l1_norm(x))


@EX
@given(hnp.arrays(np.int32, (2, 3, 6, 7), elements=st.integers(-(2**20), 2**20)))
def test_int_mean_pool_upsample(x):
    def mk_mean():
        t = ph((2, 3, 6, 7), "int32")
        return (t,), K.int_mean(t, (2, 3))

    def mk_last():
        t = ph((2, 3, 6, 7), "int32")
        return (t,), K.int_mean(t, -1)

    def mk_pool():
        t = ph((2, 3, 6, 7), "int32")
        return (t,), K.int_avgpool2d(t, (2, 3), (2, 2))

    def mk_up():
        t = ph((2, 3, 6, 7), "int32")
        return (t,), K.nearest_upsample(t, (2, 3))

    assert np.array_equal(build("mean", mk_mean)(x), R.int_mean(x, (2, 3)))
    assert np.array_equal(build("mean_last", mk_last)(x), R.int_mean(x, -1))
    assert np.array_equal(build("pool", mk_pool)(x), R.int_avgpool2d(x, (2, 3), (2, 2)))
    assert np.array_equal(build("up", mk_up)(x), R.nearest_upsample(x, (2, 3)))


RESIZES = [(5, 7, 8, 11), (4, 4, 1, 1), (1, 3, 4, 2), (6, 9, 3, 4), (3, 3, 3, 3)]  # h, w -> H, W


@pytest.mark.parametrize("mode", RR.RESIZE_MODES)
@pytest.mark.parametrize("dt", ["int8", "int16", "int32"])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_bilinear_resize(mode, dt, data):
    """Every coordinate mode, up- and down-sizing (to 1 x 1, from 1 row), int8 to int32 with the
    extreme values the int64 sum must hold: bit for bit the reference."""
    h, w, H, W = data.draw(st.sampled_from(RESIZES))
    info = np.iinfo(dt)
    ends = st.sampled_from([info.min, info.max, 0])
    x = data.draw(hnp.arrays(dt, (1, 2, h, w), elements=st.one_of(st.integers(info.min, info.max), ends)))

    def make():
        t = ph((1, 2, h, w), dt)
        return (t,), KR.bilinear_resize(t, (H, W), mode)

    got = build(("bilinear", mode, dt, h, w, H, W), make)(x)
    want = RR.bilinear_resize_int(x, (H, W), mode)
    assert got.dtype == np.dtype(dt) and np.array_equal(got, want)


def test_bilinear_weights_are_the_rounded_rational_coordinates():
    """The taps of a 128 -> 224 half-pixel axis (the ViT saliency decoder's): source (8i - 3) / 14,
    the upper weight round_half_up(2**15 * frac) with frac in sevenths, the first output clamped."""
    lo, hi, wt = RR.bilinear_taps(128, 224, "half_pixel")
    pos = (8 * np.arange(224) - 3) / 14
    assert (lo[0], hi[0]) == (0, 0) and np.array_equal(lo[1:], np.floor(pos[1:]).astype(np.int64))
    frac = pos - np.floor(pos)
    assert np.array_equal(wt, np.floor(frac * 2**15 + 0.5).astype(np.int64))
    with pytest.raises(ValueError, match="tf_crop_and_resize"):
        RR.bilinear_coords(4, 8, "tf_crop_and_resize")


# ------------------------------------------------------------------ shift matmul
MM_P = 9


@EX
@given(i8((5, 24)), hnp.arrays(np.int8, (7, 24), elements=st.integers(-(MM_P + 1), MM_P + 1)))
def test_shift_matmul(x, codes):
    def make():
        a = ph((5, 24), "int8")
        c = ph((7, 24), "int8", "codes")
        return (a, c), SK.shift_matmul_int(a, c, MM_P)

    run = build("smm", make)
    assert np.array_equal(run(x, codes), R.shift_matmul_int(x, codes, MM_P))
    x2 = np.full_like(x, -128)
    c2 = np.full_like(codes, -1)
    assert np.array_equal(run(x2, c2), R.shift_matmul_int(x2, c2, MM_P))


CONV_CASES = [((2, 4, 7, 6), (6, 2, 3, 3), 2, 1, 1, 2), ((1, 4, 8, 8), (4, 4, 3, 2), (1, 2), (1, 2, 0, 1), 2, 1)]


@EX
@given(st.sampled_from(range(len(CONV_CASES))), st.integers(0, 2**31 - 1))
def test_shift_conv2d(ci, seed):
    xs, cs, stride, padding, dil, groups = CONV_CASES[ci]
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=xs).astype(np.int8)
    if seed % 5 == 0:
        x[...] = -128
    codes = rng.integers(-(MM_P + 1), MM_P + 2, size=cs).astype(np.int8)

    def make():
        a = ph(xs, "int8")
        c = ph(cs, "int8", "codes")
        return (a, c), SK.shift_conv2d_int(a, c, MM_P, stride, padding, dil, groups)

    run = build(("conv", ci), make)
    want = R.shift_conv2d_int(x, codes, MM_P, stride, padding, dil, groups)
    assert np.array_equal(run(x, codes), want)


def test_shift_matmul_headroom_rejected():
    with pytest.raises(OverflowError):
        SK.shift_matmul_int(ph((1, 4096), "int8"), ph((1, 4096), "int8", "c"), 12)


# ------------------------------------------------------------------ no float anywhere
FLOAT_RE = re.compile(r"float\d|bfloat|e4m3|e5m2")
LL_FLOAT_RE = re.compile(r"\b(half|bfloat|float|double|fp128|x86_fp80)\b")


def _llvm_defs(ll: str):
    """Bodies of the functions defined in an LLVM IR module (``define ... }``)."""
    out, cur = [], None
    for line in ll.splitlines():
        if line.startswith("define "):
            cur = [line]
        elif cur is not None:
            cur.append(line)
            if line.startswith("}"):
                out.append("\n".join(cur))
                cur = None
    return out


def test_no_float_dtype_in_any_kernel():
    # make sure every kernel has been built at least once in this module
    p = R.lambda_gelu_params(0.05, LAMS[0])
    makers = {
        "rq": lambda: (lambda t: ((t,), K.requantize(t, 2**30, 31)))(ph((4,), "int32")),
        "rqa": lambda: (lambda t, m, e: ((t, m, e), K.requantize_per_axis(t, m, e, 0)))(ph((3, 4), "int32"), ph((3,), "int32", "m"), ph((3,), "int32", "e")),
        "add": lambda: (lambda a, b: ((a, b), K.add_int(a, b, 2**30, 31, 2**30, 30)))(ph((4,), "int8", "a"), ph((4,), "int8", "b")),
        "exp": lambda: (lambda t: ((t,), K.int_exp(t, -20, 15)))(ph((4,), "int32")),
        "sm": lambda: (lambda t: ((t,), K.shiftmax(t, -20, 15)))(ph((2, 4), "int8")),
        "sg": lambda: (lambda t: ((t,), K.shift_gelu(t, -20, 23)))(ph((2, 4), "int8")),
        "lg": lambda: (lambda t: ((t,), K.lambda_shift_gelu(t, p)))(ph((2, 4), "int8")),
        "ig": lambda: (lambda t: ((t,), i_gelu_kernel(t, R.i_gelu_params(0.01))))(ph((2, 4), "int16")),
        "isqrt": lambda: (lambda t: ((t,), K.isqrt(t)))(ph((4,), "int64")),
        "ln": lambda: (lambda t: ((t,), K.i_layernorm(t)))(ph((2, 4), "int8")),
        "l1": lambda: (lambda t: ((t,), K.i_l1_norm(t)))(ph((2, 4), "int8")),
        "mean": lambda: (lambda t: ((t,), K.int_mean(t, (2, 3))))(ph((1, 2, 3, 3), "int8")),
        "pool": lambda: (lambda t: ((t,), K.int_avgpool2d(t, 2)))(ph((1, 2, 4, 4), "int8")),
        "up": lambda: (lambda t: ((t,), K.nearest_upsample(t, 2)))(ph((1, 2, 2, 2), "int8")),
        "bil": lambda: (lambda t: ((t,), KR.bilinear_resize(t, (5, 3), "half_pixel")))(ph((1, 2, 2, 4), "int16")),
        "smm": lambda: (lambda a, c: ((a, c), SK.shift_matmul_int(a, c, 5)))(ph((2, 8), "int8"), ph((3, 8), "int8", "c")),
        "conv": lambda: (lambda a, c: ((a, c), SK.shift_conv2d_int(a, c, 5, 1, 1, 1, 2)))(ph((1, 4, 5, 5), "int8"), ph((4, 2, 3, 3), "int8", "c")),
    }
    assert set(makers) >= {"rq", "rqa", "add", "exp", "sm", "sg", "lg", "ig", "isqrt", "ln", "l1", "mean", "pool", "up", "bil", "smm"}
    for name, make in makers.items():
        ins, out = make()
        f = te.create_prim_func(list(ins) + [out])
        text = f.script()
        assert not FLOAT_RE.search(text), f"{name}: float dtype in PrimFunc:\n" + "\n".join(
            l for l in text.splitlines() if FLOAT_RE.search(l)
        )
        # after full lowering: the LLVM IR of the kernel's own functions (TVM always links its
        # fp16<->fp32 conversion helpers, section .text.tvm.fp16.conv; those are not ours)
        ll = tvm.compile(f, target=TARGET).mod.inspect_source("ll")
        bad = [fn for fn in _llvm_defs(ll) if LL_FLOAT_RE.search(fn) and ".text.tvm.fp16.conv" not in fn.splitlines()[0]]
        assert not bad, f"{name}: float type in lowered LLVM IR:\n" + bad[0][:2000]
    # and the detector itself works
    xf = ph((4,), "float32")
    yf = te.compute((4,), lambda i: xf[i] * 2.0)
    ff = te.create_prim_func([xf, yf])
    assert FLOAT_RE.search(ff.script())
    ll = tvm.compile(ff, target=TARGET).mod.inspect_source("ll")
    assert any(LL_FLOAT_RE.search(fn) and ".text.tvm.fp16.conv" not in fn.splitlines()[0] for fn in _llvm_defs(ll))


def test_usable_with_relax_call_te():
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 16), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_te(K.shiftmax, x, SM_X0, 15)
            z = bb.emit_te(K.i_layernorm, y)
            gv = bb.emit_output(z)
        bb.emit_func_output(gv)
    mod = bb.get()
    ex = tvm.compile(mod, target=TARGET)
    vm = relax.VirtualMachine(ex, DEV)
    a = np.random.default_rng(0).integers(-128, 128, size=(2, 16)).astype(np.int8)
    out = vm["main"](tvm.runtime.tensor(a, DEV)).numpy()
    assert np.array_equal(out, R.i_layernorm(R.shiftmax(a, SM_S, 15)))
