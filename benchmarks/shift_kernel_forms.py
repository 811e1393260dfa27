"""Benchmark the shift-add and the equivalent dot-product kernel forms on this host (x86 LLVM).

Integer activations: ``sign * (x << (P - p))`` (shift form) vs int8 ``x * (+-2^q)`` (dot form);
both bit-exact to ``shiftc.reference``.  Float activations: exponent-shift vs an FP32 multiply by
the decoded weight (same loop nest).  Both forms get the same default CPU schedule.  Writes the
measurements and the faster integer form per target to ``schedules/shift_kernel_choice.json``
(read by ``shift_kernels.int_kernel_form``).

Usage: python benchmarks/shift_kernel_forms.py [--repeat 20] [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tvm
from tvm import te

from dot_kernels import shift_conv2d_int_dot
from shiftc.reference import shift as R
from shiftc.kernels import shift as K
from shiftc.schedules.shift_schedule import schedule_cpu

CHOICE = Path(__file__).resolve().parents[1] / "schedules" / "shift_kernel_choice.json"
CASES = [  # (name, C, O, H, k, stride, groups)
    ("pointwise 64->128 @28", 64, 128, 28, 1, 1, 1),
    ("3x3 32->32 @56", 32, 32, 56, 3, 1, 1),
    ("depthwise 3x3 144 @56 s2", 144, 144, 56, 3, 2, 144),
]


def timeit(func, arrays, out_shape, out_dtype, target, repeat):
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in arrays] + [tvm.runtime.tensor(np.zeros(out_shape, out_dtype), dev)]
    ev = lib.mod.time_evaluator("main", dev, number=repeat, repeat=3)
    return min(ev(*args).results) * 1e3, args[-1].numpy()


def float_dot_conv(x, w, alpha, stride, pad, groups):
    """FP32 multiply by decoded weights, shaped like the shift kernel (named dot_acc for the schedule)."""
    O, Ig, kh, kw = (int(d) for d in w.shape)
    xp = K._pad(x, pad, 0.0)
    n, _, h, ww, oh, ow, *_ = K._conv_shape(x, (kh, kw), stride, pad, (1, 1))
    ic, r, s = te.reduce_axis((0, Ig), "ic"), te.reduce_axis((0, kh), "r"), te.reduce_axis((0, kw), "s")
    og = O // groups
    acc = te.compute((n, O, oh, ow), lambda b, o, y, z: te.sum(xp[b, (o // og) * Ig + ic, y * stride[0] + r, z * stride[1] + s] * w[o, ic, r, s], axis=[ic, r, s]), name="dot_acc")
    return te.compute(acc.shape, lambda b, o, y, z: acc[b, o, y, z] * alpha[o], name="shift_scale")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--write", action="store_true", help=f"record the choice in {CHOICE.name}")
    args = ap.parse_args(argv)
    from tvm.target import codegen

    cpu = str(codegen.llvm_get_system_cpu())
    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": cpu, "num-cores": 2})
    rng = np.random.default_rng(0)
    rows = []
    for name, C, O, H, k, st, g in CASES:
        pad = (k // 2,) * 4
        x8 = rng.integers(-128, 128, size=(1, C, H, H)).astype(np.int8)
        codes, alpha = R.encode_pot(rng.normal(size=(O, C // g, k, k)), 4, True)
        P = 6  # q = P - p <= 6 keeps the dot form in int8; codes with p > 6 are clamped for this timing
        codes = np.clip(codes, -7, 7).astype(np.int8)
        want = R.shift_conv2d_int(x8, codes, P, st, pad, 1, g)
        conv = dict(stride=(st, st), padding=pad, groups=g)
        X = te.placeholder(x8.shape, "int8", "x")
        W = te.placeholder((1, *codes.shape), "int8", "w")
        Y = K.shift_conv2d_int(X, W, weight_shape=codes.shape, P=P, **conv)
        t_shift, y1 = timeit(schedule_cpu(te.create_prim_func([X, W, Y])), [x8, codes[None]], want.shape, "int32", target, args.repeat)
        wd = K.dot_weights(codes[None], P)
        D = te.placeholder(wd.shape, str(wd.dtype), "wdot")
        Y = shift_conv2d_int_dot(X, D, P=P, **conv)
        t_dot, y2 = timeit(schedule_cpu(te.create_prim_func([X, D, Y])), [x8, wd], want.shape, "int32", target, args.repeat)
        assert np.array_equal(y1, want) and np.array_equal(y2, want)
        xf = rng.normal(size=(1, C, H, H)).astype(np.float32)
        Xf = te.placeholder(xf.shape, "float32", "x")
        A = te.placeholder(alpha.shape, "float32", "alpha")
        Yf = K.shift_conv2d_float(Xf, W, A, weight_shape=codes.shape, terms=1, bits=4, zero_free=True, packed=False, **conv)
        t_fshift, _ = timeit(schedule_cpu(te.create_prim_func([Xf, W, A, Yf])), [xf, codes[None], alpha], want.shape, "float32", target, args.repeat)
        unit = R.decode_pot(codes, np.ones(O, np.float32))
        Wf = te.placeholder(unit.shape, "float32", "wf")
        Yd = float_dot_conv(Xf, Wf, A, (st, st), pad, g)
        t_fdot, _ = timeit(schedule_cpu(te.create_prim_func([Xf, Wf, A, Yd])), [xf, unit, alpha], want.shape, "float32", target, args.repeat)
        row = {"case": name, "int_shift_ms": round(t_shift, 3), "int_dot_ms": round(t_dot, 3), "float_shift_ms": round(t_fshift, 3), "float_mul_ms": round(t_fdot, 3)}
        rows.append(row)
        print(row, flush=True)
    total = {k: sum(r[k] for r in rows) for k in ("int_shift_ms", "int_dot_ms", "float_shift_ms", "float_mul_ms")}
    choice = {"int": "shift" if total["int_shift_ms"] <= total["int_dot_ms"] else "dot", "cpu": cpu, "total_ms": total, "cases": rows}
    print(json.dumps(choice, indent=1))
    if args.write:
        data = json.loads(CHOICE.read_text()) if CHOICE.exists() else {}
        data["x86"] = choice
        CHOICE.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {CHOICE}")


if __name__ == "__main__":
    main()
