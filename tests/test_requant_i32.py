"""The requantisers' and residual adds' int32 form (schedules/requant_i32.py) and its high-word
multiply kernel (schedules/mulhi.py) give the reference's integers bit for bit: the NumPy model of
the form over random and extreme multipliers / shifts / inputs, and CPU builds (conv + per-channel
requantiser, depthwise conv + unsigned one, residual add, per-tensor requantiser on int32 extremes)
against shiftc.reference."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from test_cpu_lowerings import _module

from shiftc.kernels import integer as K
from shiftc.reference import requant, rounding
from shiftc.schedules import requant_i32
from shiftc.targets.x86 import flatten_outputs

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _params(rng, n=300):
    m = np.concatenate([rng.integers(0, 2**31, n), [0, 1, 2, 3, 2**30, INT32_MAX, 12345, 2**20]])
    e = np.concatenate([rng.integers(0, 63, n), [1, 0, 62, 40, 33, 32, 17, 5]])
    mm, ee = rounding.dyadic(10 ** rng.uniform(-7, 2, n))  # the scales calibration produces
    return np.concatenate([m, mm]), np.concatenate([e, ee])


def _inputs(rng, channels):
    z = rng.integers(INT32_MIN, INT32_MAX + 1, (600, channels), dtype=np.int64)
    z[:200] = rng.integers(-(2**17), 2**17, (200, channels))  # accumulator-sized values
    z[200:300] = rng.integers(-300, 300, (100, channels))
    z[0], z[1] = INT32_MIN, INT32_MAX
    return z.astype(np.int32)


@pytest.mark.parametrize("bits,unsigned", [(8, False), (8, True), (16, False), (4, False)])
def test_int32_form_equals_the_reference(bits, unsigned):
    rng = np.random.default_rng(bits + unsigned)
    m, e = _params(rng)
    lo, hi = rounding.code_range(bits, unsigned)
    ok = np.array([requant_i32._channel(int(a), int(b), lo, hi) is not None for a, b in zip(m, e)])
    # the only channels without an int32 form: scales of 2^28 and more (e <= 2 with a large m)
    assert not ok.all() and np.all(m[~ok] * 2.0 ** -e[~ok].astype(float) >= 2**28)
    assert requant_i32.int32_form(m, e, bits, unsigned) is None  # one such channel: the int64 form
    m, e = m[ok], e[ok]
    form = requant_i32.int32_form(m, e, bits, unsigned)
    z = _inputs(rng, len(m))
    want = rounding.requantize(z, m, e, bits, axis=1, unsigned=unsigned)
    np.testing.assert_array_equal(requant_i32.apply(form, z, bits, unsigned, axis=1), want)


def _requant_axis(bb, z, m, e, axis, bits=8, unsigned=False):
    attrs = {"shiftc.requant": "per_axis", "shiftc.axis": axis, "shiftc.bits": bits, **({"shiftc.unsigned": 1} if unsigned else {})}
    return bb.call_te(K.requantize_per_axis, z, relax.const(m), relax.const(e), axis, bits, unsigned=unsigned,
                      primfunc_name_hint="requant_axis", primfunc_attrs=attrs)


@pytest.mark.parametrize("cpu", ["x86-64-v3", "host"])
def test_cpu_build_of_conv_and_requantisers_is_bit_exact(cpu):
    """A conv (NHWC after the CPU layout) with a per-channel requantiser, a depthwise conv with an
    unsigned one, a residual add of the two (int8 + uint8 -> int16), and a per-tensor requantiser of
    int32 extremes: each runs its int32 form with the high-word multiply kernel fused in, no layout
    transpose is left, and every output equals the reference."""
    from shiftc.schedules import lower
    from shiftc.targets.x86 import X86

    target = X86(cpu=cpu).tvm_target() if cpu != "host" else X86().tvm_target()
    rng = np.random.default_rng(3)
    C = 16
    w = rng.integers(-127, 128, (C, 8, 1, 1)).astype(np.int8)
    wd = rng.integers(-127, 128, (C, 1, 3, 3)).astype(np.int8)
    m, e = rounding.dyadic(10 ** rng.uniform(-4, -1, C))
    md, ed = rounding.dyadic(10 ** rng.uniform(-4, 0, C))
    ms, es = rounding.dyadic(0.37)
    (ma, ea), (mb, eb) = rounding.dyadic(0.8), rounding.dyadic(153.0)  # 153: a left-shifted operand

    def build(bb, x, z):
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), out_dtype="int32"))
        q = bb.emit(_requant_axis(bb, y, m, e, 1))
        d = bb.emit(relax.op.nn.conv2d(q, relax.const(wd), padding=[1, 1, 1, 1], groups=C, out_dtype="int32"))
        u = bb.emit(_requant_axis(bb, d, md, ed, 1, unsigned=True))
        t = bb.emit(bb.call_te(K.requantize, z, ms, es, 8, primfunc_name_hint="requant",
                               primfunc_attrs={"shiftc.requant": "per_tensor", "shiftc.m": ms, "shiftc.e": es, "shiftc.bits": 8}))
        r = bb.emit(bb.call_te(K.add_int, q, u, ma, ea, mb, eb, 16, primfunc_name_hint="add_int",
                               primfunc_attrs={"shiftc.add_int": [ma, ea, mb, eb, 16]}))
        return relax.Tuple([q, u, t, r])

    mod = _module(build, ((1, 8, 6, 7), "int8"), ((4, 33), "int32"))
    prepared = lower.prepare(mod, target, None, lower.ScheduleReport())
    names = [gv.name_hint for gv, f in prepared.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    # every requantiser and both terms of the add: int32 form, multiply fused; NHWC throughout (the
    # only transposes: the NCHW graph input, and the outputs after their last op)
    assert sum(n.count("mulhi") for n in names) == 5, names
    assert not any("transpose" in n.split("mulhi")[0] for n in names if "mulhi" in n), names
    with target, tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(prepared, target=target, relax_pipeline=lower.lowering_pipeline(target))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = rng.integers(-128, 128, (1, 8, 6, 7)).astype(np.int8)
    z = rng.integers(INT32_MIN, INT32_MAX + 1, (4, 33), dtype=np.int64).astype(np.int32)
    z[0, :3] = [INT32_MIN, INT32_MAX, 0]
    q, u, t, r = flatten_outputs(vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(z)))
    acc = np.einsum("nchw,oc->nohw", x.astype(np.int64), w[:, :, 0, 0].astype(np.int64))
    want_q = rounding.requantize(acc, m, e, 8, axis=1)
    qp = np.pad(want_q.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    dw = sum(qp[:, :, i:i + 6, j:j + 7] * wd[None, :, 0, i, j, None, None] for i in range(3) for j in range(3))
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(u, rounding.requantize(dw, md, ed, 8, axis=1, unsigned=True))
    np.testing.assert_array_equal(t, rounding.requantize(z, ms, es, 8))
    np.testing.assert_array_equal(r, requant.add_int_dyadic(want_q, ma, ea, u, mb, eb, 16))
