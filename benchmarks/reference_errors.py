"""Reproduce the error numbers quoted in docs/NUMERICS.md (measured on ``shiftc.reference``).

Usage: python benchmarks/reference_errors.py   (about 5 s, NumPy only)
"""

from __future__ import annotations

import math

import numpy as np

from shiftc.reference import nonlinear as N
from shiftc.reference import resize as RZ
from shiftc.reference import shift as S


def exp_poly_continuous():
    """Max relative error of 2**-t approximations on t in [0, 1] (continuous, no rounding)."""
    t = np.linspace(0.0, 1.0, 200001)
    ex = 2.0**-t
    polys = {
        "chord 1 - t/2 (used; I-ViT)": 1 - t / 2,
        "2nd order 1 - 3t/4 + t^2/4": 1 - 0.75 * t + 0.25 * t * t,
        "2nd order 1 - 11t/16 + 3t^2/16": 1 - 11 / 16 * t + 3 / 16 * t * t,
    }
    return {k: float(np.max(np.abs(v / ex - 1))) for k, v in polys.items()}


def _int_exp_order2(x, x0, n):
    """int_exp_shift with 2**(r s) ~= 1 + 11/16 u + 3/16 u^2 (u = r s in (-1, 0]).

    In units of s (|x0| ~ 1/s): ``|x0| + (11 r >> 4) + (3 r*r // (16 |x0|))``: one integer
    multiply ``r*r`` and one constant division (or dyadic multiply) more than the chord.
    """
    x = np.minimum(np.asarray(x, np.int64), 0)
    xh = x + (x >> 1) - (x >> 4)
    xh = np.maximum(xh, n * x0)
    q = xh // x0
    r = xh - x0 * q
    base = -x0 + ((11 * r) >> 4) + (3 * r * r) // (16 * -x0)
    return base << (n - q)


def exp_poly_integer(scales=(0.005, 0.01, 0.02, 0.05)):
    """Max relative error of the integer exps vs exp(x s) for x s in [-8, 0], n = 23.

    The reference value uses the scale the kernel implies (``1/|x0|`` per log2 unit and
    ``log2 e ~= 1.4375``), so only the polynomial + integer rounding is measured; separately the
    error vs the true ``exp(x s)`` (includes x0 = floor(-1/s) and the 1.4375 approximation).
    """
    out = {}
    for s in scales:
        x0 = N.exp_x0(s, 23)
        x = -np.arange(0, int(8 / s) + 1)
        for name, e in (("chord", N.int_exp_shift_int(x, x0, 23)), ("order2", _int_exp_order2(x, x0, 23))):
            got = e / (-x0) / 2.0**23
            implied = np.exp(x * (1.0 / -x0) * (math.log(2) * 1.4375))
            true = np.exp(x * s)
            out[(s, name)] = (float(np.max(np.abs(got / implied - 1))), float(np.max(np.abs(got / true - 1))))
    return out


def shiftmax_error():
    """Worst |out/128 - softmax| over two-level rows (one 0, L-1 at -d), per range of s."""
    res = {}
    for lo, hi in [(0.005, 0.01), (0.01, 0.02), (0.02, 0.04), (0.04, 0.07), (0.07, 0.1)]:
        worst = 0.0
        for s in np.linspace(lo, hi, 21):
            d = np.arange(0, 256)
            for L in [2, 4, 8, 16, 32, 64, 128]:
                x = np.zeros((256, L), np.int64)
                x[:, 1:] = -d[:, None]
                out = N.shiftmax(x, s)
                xf = x * s
                sm = np.exp(xf - xf.max(1, keepdims=True))
                sm /= sm.sum(1, keepdims=True)
                worst = max(worst, float(np.abs(out / 128 - sm).max()))
        res[(lo, hi)] = worst
    return res


def gelu_errors():
    """lambda-ShiftGELU vs ShiftGELU vs erf-GELU."""
    res = {}
    xs = np.linspace(-8, 8, 40001)
    g = N.gelu_erf(xs)
    lams = np.linspace(1.6, 1.9, 301)
    errs = [np.max(np.abs(xs / (1 + np.exp(-lam * xs)) - g)) for lam in lams]
    res["minimax lambda"] = (float(lams[int(np.argmin(errs))]), float(min(errs)))
    for lam in (1.702, 1.75, 1.6875, 1.625):
        res[f"sigmoid form lambda={lam}"] = N.sigmoid_form_error(lam)
    lt = ((1, 0), (1, -1), (1, -2))
    worst_int = worst_tot = 0.0
    for s in (0.005, 0.01, 0.03, 0.05, 0.1, 0.2):
        x = np.arange(int(-8 / s), int(8 / s) + 1)
        y = N.lambda_shift_gelu(x, s, lt) * s * 2.0**-15
        worst_tot = max(worst_tot, float(np.max(np.abs(y - N.gelu_erf(x * s)))))
        worst_int = max(worst_int, float(np.max(np.abs(y - x * s / (1 + np.exp(-1.75 * x * s))))))
    res["lambda=1.75 int vs sigmoid form (max over s)"] = worst_int
    res["lambda=1.75 int vs erf-GELU (max over s)"] = worst_tot
    s = 0.1
    small = np.arange(-30, 31)
    for spike in (0, 127, 2000):
        row = np.concatenate([small, [spike]]) if spike else small
        sg = N.shift_gelu(row[None, :], s)[0] * s * 2.0**-15
        lg = N.lambda_shift_gelu(row, s, lt) * s * 2.0**-15
        ref = N.gelu_erf(row * s)
        res[f"s=0.1 row [-3,3] + max {spike * s:g}: shift_gelu / lambda"] = (
            float(np.max(np.abs(sg - ref))),
            float(np.max(np.abs(lg - ref))),
        )
    return res


def i_gelu_errors():
    """i-GELU (I-BERT): the polynomial form and the integer evaluation vs erf-GELU, per input-scale octave."""
    from shiftc.reference import igelu as G

    x = np.linspace(-4, 4, 100001)
    err = G.i_gelu_float(x) - N.gelu_erf(x)
    res = {"form on [-4, 4]: L_inf, L2": (float(np.abs(err).max()), float(np.sqrt(np.mean(err**2))))}
    for k in (2, 3, 4, 5, 6, 10, 14):
        worst = 0.0
        for s in np.geomspace(2.0**-k, 2.0 ** -(k - 1), 4):
            xi = np.arange(-int(min(8 / s, 65535)), int(min(8 / s, 65535)) + 1)
            out, so = G.i_gelu(xi, s)
            worst = max(worst, float(np.abs(out * so - N.gelu_erf(xi * s)).max()))
        res[f"integer vs erf-GELU, |x s| <= 8, s in [2^-{k}, 2^-{k - 1}]"] = worst
    return res


def layernorm_error(rows=2000, C=192, seed=0):
    """Max |i_layernorm - float LN| (standardized units) on int8 rows with std in [8, 60]."""
    rng = np.random.default_rng(seed)
    std = rng.uniform(8, 60, size=(rows, 1))
    x = np.clip(np.round(rng.normal(rng.uniform(-30, 30, (rows, 1)), std, (rows, C))), -128, 127).astype(np.int8)
    out = N.i_layernorm(x) * math.sqrt(C) * 2.0**-30
    xf = x.astype(np.float64)
    ref = (xf - xf.mean(1, keepdims=True)) / xf.std(1, keepdims=True)
    l1 = N.i_l1_norm(x) * C * 2.0**-30
    ref1 = N.l1_norm_float(xf, eps=0.0, correction=False)
    return float(np.max(np.abs(out - ref))), float(np.max(np.abs(l1 - ref1)))


def pot_weight_error(seed=0):
    """Relative L2 weight error ||w - decode|| / ||w|| on N(0,1) weights (64 x 576)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(64, 576)).astype(np.float32)
    res = {}
    nrm = float(np.linalg.norm(w))
    for zf, bits in ((True, 3), (True, 4), (False, 4), (True, 5), (False, 5)):
        for how in ("max", "pot", "mse"):
            c, a = S.encode_pot(w, bits, zf, alpha=how)
            res[(("zero-free" if zf else "with-zero"), bits, how)] = float(np.linalg.norm(w - S.decode_pot(c, a))) / nrm
    for t in (2, 3):
        c, a = S.encode_multi(w, t, 4, zero_free=False)
        res[("multi", 4, f"{t} terms")] = float(np.linalg.norm(w - S.decode_multi(c, a))) / nrm
    return res


def bilinear_error(seed=0):
    """What integer bilinear resize (Q0.15 weights, one rounding) adds to float64 bilinear of the
    same integers: max and RMS in output steps, and the max relative to the width's range
    ``2**(bits-1)``, over 8 channels of uniform codes (the largest tap differences), per coordinate
    mode and width, for a 128 -> 224 resize (the ViT saliency decoder's) and an 8 -> 56 one (x7,
    the Segmenter's)."""
    rng = np.random.default_rng(seed)
    res = {}
    for h, H in ((128, 224), (8, 56)):
        for bits in (8, 16, 32):
            lim = 1 << (bits - 1)
            x = rng.integers(-lim, lim, size=(1, 8, h, h), dtype=np.int64)
            for mode in RZ.RESIZE_MODES:
                err = RZ.bilinear_resize_int(x, (H, H), mode) - RZ.bilinear_resize_float(x, (H, H), mode)
                mx = float(np.abs(err).max())
                res[(f"{h}->{H}", f"int{bits}", mode)] = (mx, float(np.sqrt(np.mean(err**2))), mx / lim)
    return res


def main():
    print("== 2**-t approximations, continuous, max relative error on [0, 1]")
    for k, v in exp_poly_continuous().items():
        print(f"  {k:38s} {v * 100:.3f} %")
    print("== integer exp (n=23), x s in [-8, 0]: max rel err vs implied-scale exp / vs exp(x s)")
    for (s, name), (a, b) in exp_poly_integer().items():
        print(f"  s={s:<6} {name:7s} {a * 100:7.3f} %   {b * 100:7.3f} %")
    print("== shiftmax worst |out/128 - softmax|")
    for (lo, hi), v in shiftmax_error().items():
        print(f"  s in [{lo}, {hi}]: {v:.4f}")
    print("== GELU")
    for k, v in gelu_errors().items():
        print(f"  {k}: {v}")
    print("== i-GELU")
    for k, v in i_gelu_errors().items():
        print(f"  {k}: {v}")
    ln, l1 = layernorm_error()
    print(f"== i_layernorm max abs err (std units, int8 rows std 8..60, C=192): {ln:.4f}; i_l1_norm: {l1:.4f}")
    print("== integer bilinear resize vs float64 bilinear of the same integers: max, RMS (steps), max / 2**(bits-1)")
    for k, (mx, rms, rel) in bilinear_error().items():
        print(f"  {k}: {mx:.4g}, {rms:.4g}, {rel:.2e}")
    print("== PoT weight relative L2 error (N(0,1), 64x576)")
    for k, v in pot_weight_error().items():
        print(f"  {k}: {v:.4f}")


if __name__ == "__main__":
    main()
