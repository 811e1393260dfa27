"""TE compute definitions of every shiftc integer op (the shift kernels are in :mod:`.shift`).

Each function takes ``te.Tensor`` inputs plus the *integer* host parameters computed by
:mod:`shiftc.reference` (``dyadic``, ``exp_x0``, ``lambda_gelu_params``...) and returns a
``te.Tensor``; all are usable with Relax ``BlockBuilder.call_te``.  The arithmetic is a
transcription of the reference docstrings, op for op, so results match **bit for bit**
(``tests/test_int_kernels.py``).  Only integer TIR ops are used (no float dtype anywhere).

Shift safety: every ``shift_left`` / ``shift_right`` amount is either a constant validated at
definition time (``0 <= amount <= width - 1``) or a data-dependent amount explicitly clamped to its
proven range (``n - q`` to ``[0, n]``, per-axis ``e`` to ``[0, 62]``);
the clamps are no-ops on every input the reference accepts.

Row operations (Shiftmax, ShiftGELU, I-LayerNorm, I-L1-norm) reduce over the **last** axis.
No schedules are attached (plain TE); untuned CPU builds are naive loops.
"""

from __future__ import annotations

from tvm import te
from tvm import tirx as tir

from shiftc.reference.rounding import code_range
from shiftc.reference.nonlinear import GELU_SHIFTS, ISQRT_STEPS, SIG_BITS, LambdaGeluParams

__all__ = [
    "requantize",
    "requantize_per_axis",
    "add_int",
    "int_exp",
    "shiftmax",
    "shift_gelu",
    "lambda_shift_gelu",
    "isqrt",
    "i_layernorm",
    "i_l1_norm",
    "int_mean",
    "int_avgpool2d",
    "nearest_upsample",
]

INT32_MAX = 2**31 - 1


def _c(v, dtype="int32"):
    return tir.const(int(v), dtype)


def _i32(x):
    return x if x.dtype == "int32" else x.astype("int32")


def _i64(x):
    return x if x.dtype == "int64" else x.astype("int64")


def _out_dtype(bits, unsigned=False):
    return ("u" if unsigned else "") + ("int8" if bits <= 8 else "int16" if bits <= 16 else "int32")


def _sat(v64, bits, unsigned=False):
    lo, hi = code_range(bits, unsigned)
    return tir.max(tir.min(v64, _c(hi, "int64")), _c(lo, "int64")).astype(_out_dtype(bits, unsigned))


def _rshift_round_const(v64, e: int):
    """``(v + 2**(e-1)) >> e`` for a constant ``e`` in ``[0, 62]`` (int64)."""
    if not 0 <= e <= 62:
        raise ValueError(f"shift amount {e} outside [0, 62]")
    if e == 0:
        return v64
    return tir.shift_right(v64 + _c(1 << (e - 1), "int64"), _c(e, "int64"))


def _rshift_round_var(v64, e):
    """Round-half-up shift by a data-dependent ``e`` (clamped to ``[0, 62]``; int64)."""
    e = tir.max(tir.min(_i64(e), _c(62, "int64")), _c(0, "int64"))
    half = tir.Select(
        e > _c(0, "int64"), tir.shift_left(_c(1, "int64"), tir.max(e - _c(1, "int64"), _c(0, "int64"))), _c(0, "int64")
    )
    return tir.shift_right(v64 + half, e)


def _check_bits(bits):
    if not 2 <= bits <= 32:
        raise ValueError(f"bits must be in [2, 32], got {bits}")


def _check_m(m):
    if not 0 <= m <= INT32_MAX:
        raise ValueError(f"multiplier {m} outside [0, 2**31 - 1]")


# =========================================================================== requantisation
def requantize(z: te.Tensor, m: int, e: int, bits: int = 8, name: str = "requant", unsigned: bool = False) -> te.Tensor:
    """Per-tensor ``saturate(rshift_round(int64(z) * m, e), bits)`` (reference ``requantize``);
    ``unsigned``: saturated to ``[0, 2**bits - 1]`` as uint8/uint16."""
    _check_bits(bits)
    _check_m(m)
    return te.compute(
        z.shape, lambda *i: _sat(_rshift_round_const(_i64(z[i]) * _c(m, "int64"), e), bits, unsigned), name=name
    )


def requantize_per_axis(
    z: te.Tensor, m: te.Tensor, e: te.Tensor, axis: int, bits: int = 8, name: str = "requant_axis", unsigned: bool = False
) -> te.Tensor:
    """Per-axis requantisation: ``m``, ``e`` are int tensors of length ``z.shape[axis]``."""
    _check_bits(bits)
    ax = axis % len(z.shape)
    return te.compute(
        z.shape,
        lambda *i: _sat(_rshift_round_var(_i64(z[i]) * _i64(m[i[ax]]), e[i[ax]]), bits, unsigned),
        name=name,
    )


def add_int(a: te.Tensor, b: te.Tensor, ma: int, ea: int, mb: int, eb: int, bits: int = 8, name="add_int"):
    """Residual add: ``saturate(rshift_round(a*ma, ea) + rshift_round(b*mb, eb), bits)`` (int64)."""
    _check_bits(bits)
    _check_m(ma)
    _check_m(mb)
    return te.compute(
        a.shape,
        lambda *i: _sat(
            _rshift_round_const(_i64(a[i]) * _c(ma, "int64"), ea)
            + _rshift_round_const(_i64(b[i]) * _c(mb, "int64"), eb),
            bits,
        ),
        name=name,
    )


# =========================================================================== exponential
def _check_exp(x0, n):
    if not (x0 <= -1 and 0 <= n <= 30 and ((-x0) << n) <= INT32_MAX):
        raise ValueError(f"invalid int_exp parameters x0={x0}, n={n}")


def int_exp(x: te.Tensor, x0: int, n: int, name: str = "int_exp") -> te.Tensor:
    """Integer exponential (reference ``int_exp_shift_int``), int32 in, int32 out, elementwise.

    Two stages: ``x_hat`` (clamped), then ``e``; ``q`` is clamped to ``[0, n]`` (proven range).
    """
    _check_exp(x0, n)
    i32 = "int32"

    def xhat(*i):
        v = tir.min(_i32(x[i]), _c(0))
        v = v + tir.shift_right(v, _c(1)) - tir.shift_right(v, _c(4))
        return tir.max(v, _c(n * x0))

    xh = te.compute(x.shape, xhat, name=name + "_xhat")

    def expo(*i):
        v = xh[i]
        q = tir.max(tir.min(tir.floordiv(v, _c(x0)), _c(n)), _c(0))
        r = v - _c(x0) * q
        base = tir.shift_right(r, _c(1)) - _c(x0)
        return tir.max(tir.shift_left(base, _c(n, i32) - q), _c(0))

    return te.compute(x.shape, expo, name=name)


def _row_reduce(t: te.Tensor, fn, dtype_cast, name):
    k = te.reduce_axis((0, t.shape[-1]), name=name + "_k")
    return te.compute(t.shape[:-1], lambda *i: fn(dtype_cast(t[i + (k,)]), axis=k), name=name)


def shiftmax(x: te.Tensor, x0: int, n: int = 15, name: str = "shiftmax", f_bits: int = 31, unsigned: bool = False) -> te.Tensor:
    """Shiftmax over the last axis -> int8 at scale 2**-7, or uint8 at 2**-8 with ``unsigned``
    (reference ``shiftmax_int``); ``f_bits`` is the reciprocal's width (31, or up to 62 for long rows)."""
    if not 8 <= f_bits <= 62:
        raise ValueError(f"f_bits {f_bits} outside [8, 62]")
    top = _c((1 << f_bits) - 1, "int64")
    out = 8 if unsigned else 7  # the output's fraction bits
    mx = _row_reduce(x, te.max, _i32, name + "_max")
    d = te.compute(x.shape, lambda *i: _i32(x[i]) - mx[i[:-1]], name=name + "_d")
    e = int_exp(d, x0, n, name=name + "_exp")
    s = _row_reduce(e, te.sum, _i64, name + "_sum")
    f = te.compute(s.shape, lambda *i: tir.floordiv(top, tir.min(s[i], top)), name=name + "_f")
    return te.compute(
        x.shape, lambda *i: _sat(_rshift_round_const(_i64(e[i]) * f[i[:-1]], f_bits - out), 8, unsigned), name=name
    )


def _sigmoid_q(num64, den64):
    """``round_half_up(2**SIG_BITS * num / den)`` as ``(num * 2**(SIG_BITS+1) + den) // (2 den)``."""
    return tir.floordiv(
        tir.shift_left(num64, _c(SIG_BITS + 1, "int64")) + den64, den64 * _c(2, "int64")
    )


def shift_gelu(x: te.Tensor, x0: int, n: int = 23, name: str = "shift_gelu") -> te.Tensor:
    """Row-max ShiftGELU over the last axis -> int32 at scale ``s * 2**-15`` (reference ``shift_gelu_int``)."""
    _check_exp(x0, n)

    def zf(*i):
        v = _i32(x[i])
        acc = None
        for k in GELU_SHIFTS:
            t = v if k == 0 else tir.shift_right(v, _c(k))
            acc = t if acc is None else acc + t
        return acc

    z = te.compute(x.shape, zf, name=name + "_z")
    zm0 = _row_reduce(z, te.max, _i32, name + "_zmax")
    zm = te.compute(zm0.shape, lambda *i: tir.max(zm0[i], _c(0)), name=name + "_zm")
    dn = te.compute(x.shape, lambda *i: z[i] - zm[i[:-1]], name=name + "_dn")
    dd = te.compute(zm.shape, lambda *i: _c(0) - zm[i], name=name + "_dd")
    en = int_exp(dn, x0, n, name=name + "_en")
    ed = int_exp(dd, x0, n, name=name + "_ed")

    def outf(*i):
        num = _i64(en[i])
        den = num + _i64(ed[i[:-1]])
        return (_i64(x[i]) * _sigmoid_q(num, den)).astype("int32")

    return te.compute(x.shape, outf, name=name)


def lambda_shift_gelu(x: te.Tensor, p: LambdaGeluParams, name: str = "lambda_gelu") -> te.Tensor:
    """shiftc's elementwise lambda-ShiftGELU -> int32 at scale ``s * 2**-15`` (reference
    ``lambda_shift_gelu_int``).  ``p`` comes from ``shiftc.reference.lambda_gelu_params``."""
    _check_exp(p.x0, p.n)
    if any(not 0 <= sh <= 30 for sh in p.shifts):
        raise ValueError(f"lambda shifts {p.shifts} outside [0, 30]")

    def zf(*i):
        v = _i32(x[i])
        acc = None
        for sg, sh in zip(p.signs, p.shifts):
            t = tir.shift_left(v, _c(sh))
            if acc is None:
                acc = t if sg > 0 else _c(0) - t
            else:
                acc = acc + t if sg > 0 else acc - t
        return acc

    z = te.compute(x.shape, zf, name=name + "_z")
    t = te.compute(x.shape, lambda *i: tir.max(_c(0) - tir.abs(z[i]), _c(-p.zc)), name=name + "_t")
    e0 = int_exp(t, p.x0, p.n, name=name + "_exp")
    one = _c(p.one, "int64")

    def outf(*i):
        e = tir.Select(tir.abs(z[i]) <= _c(p.zc), _i64(e0[i]), _c(0, "int64"))
        den = one + e
        num = tir.Select(z[i] >= _c(0), one, e)
        return (_i64(x[i]) * _sigmoid_q(num, den)).astype("int32")

    return te.compute(x.shape, outf, name=name)


# =========================================================================== isqrt / norms
def isqrt(v: te.Tensor, name: str = "isqrt") -> te.Tensor:
    """Exact floor sqrt of int64 ``v >= 0``: ``k1 = (2**16 + v // 2**16) // 2`` then
    ``ISQRT_STEPS`` stages of ``k <- min(k, (k + v // max(k, 1)) // 2)`` (reference ``isqrt_newton``)."""

    def v64(i):
        return _i64(v[i])

    k = te.compute(
        v.shape,
        lambda *i: tir.floordiv(_c(1 << 16, "int64") + tir.floordiv(v64(i), _c(1 << 16, "int64")), _c(2, "int64")),
        name=name + "_k0",
    )

    def newton_min(prev):
        def f(*i):
            kp = prev[i]
            nk = tir.floordiv(kp + tir.floordiv(v64(i), tir.max(kp, _c(1, "int64"))), _c(2, "int64"))
            return tir.min(kp, nk)

        return f

    for step in range(ISQRT_STEPS):
        k = te.compute(v.shape, newton_min(k), name=f"{name}_k{step + 1}")
    return k


def _row_mean(x32: te.Tensor, name: str):
    C = int(x32.shape[-1])
    s = _row_reduce(x32, te.sum, _i32, name + "_sum")
    return te.compute(s.shape, lambda *i: tir.floordiv(s[i] + _c(C // 2), _c(C)), name=name + "_mu")


def i_layernorm(x: te.Tensor, name: str = "i_layernorm") -> te.Tensor:
    """I-LayerNorm over the last axis -> int32, standardized value ``= out * sqrt(C) * 2**-30``."""
    mu = _row_mean(x, name)
    y = te.compute(x.shape, lambda *i: _i32(x[i]) - mu[i[:-1]], name=name + "_y")
    kk = te.reduce_axis((0, x.shape[-1]), name=name + "_vk")
    var = te.compute(
        x.shape[:-1], lambda *i: te.sum(_i64(y[i + (kk,)]) * _i64(y[i + (kk,)]), axis=kk), name=name + "_var"
    )
    k = isqrt(var, name=name + "_isqrt")
    f = te.compute(
        k.shape, lambda *i: tir.floordiv(_c(INT32_MAX, "int64"), tir.max(k[i], _c(1, "int64"))), name=name + "_f"
    )
    return te.compute(
        x.shape, lambda *i: _rshift_round_const(_i64(y[i]) * f[i[:-1]], 1).astype("int32"), name=name
    )


def i_l1_norm(x: te.Tensor, name: str = "i_l1_norm") -> te.Tensor:
    """Integer L1 norm over the last axis -> int32, ``(x - mu)/sigma_1 = out * C * 2**-30``."""
    mu = _row_mean(x, name)
    y = te.compute(x.shape, lambda *i: _i32(x[i]) - mu[i[:-1]], name=name + "_y")
    a = _row_reduce(y, te.sum, lambda t: tir.abs(t), name + "_abs")
    f = te.compute(a.shape, lambda *i: tir.floordiv(_c(INT32_MAX), tir.max(a[i], _c(1))), name=name + "_f")
    return te.compute(
        x.shape, lambda *i: _rshift_round_const(_i64(y[i]) * _i64(f[i[:-1]]), 1).astype("int32"), name=name
    )


# =========================================================================== mean / pool / resize
def int_mean(x: te.Tensor, axes, name: str = "int_mean") -> te.Tensor:
    """Round-half-up mean over ``axes`` (dropped from the shape): ``(sum + C//2) // C``, int32 sum."""
    nd = len(x.shape)
    axes = sorted({a % nd for a in ((axes,) if isinstance(axes, int) else axes)})
    C = 1
    for a in axes:
        C *= int(x.shape[a])
    keep = [d for d in range(nd) if d not in axes]
    rks = [te.reduce_axis((0, x.shape[a]), name=f"{name}_r{a}") for a in axes]

    def sumf(*i):
        idx = [None] * nd
        for pos, d in enumerate(keep):
            idx[d] = i[pos]
        for r, a in zip(rks, axes):
            idx[a] = r
        return te.sum(_i32(x[tuple(idx)]), axis=rks)

    s = te.compute([x.shape[d] for d in keep], sumf, name=name + "_sum")
    return te.compute(s.shape, lambda *i: tir.floordiv(s[i] + _c(C // 2), _c(C)), name=name)


def int_avgpool2d(x: te.Tensor, kernel, stride=None, name: str = "int_avgpool2d") -> te.Tensor:
    """NCHW average pool without padding, round half up (reference ``int_avgpool2d``)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if isinstance(stride, int) else tuple(stride))
    N, C, H, W = (int(d) for d in x.shape)
    oh, ow = (H - kh) // sh + 1, (W - kw) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError("pooling window larger than the input")
    ri = te.reduce_axis((0, kh), name=name + "_ri")
    rj = te.reduce_axis((0, kw), name=name + "_rj")
    s = te.compute(
        (N, C, oh, ow),
        lambda n, c, i, j: te.sum(_i32(x[n, c, i * sh + ri, j * sw + rj]), axis=[ri, rj]),
        name=name + "_sum",
    )
    kk = kh * kw
    return te.compute(s.shape, lambda *i: tir.floordiv(s[i] + _c(kk // 2), _c(kk)), name=name)


def nearest_upsample(x: te.Tensor, scale, name: str = "nearest_upsample") -> te.Tensor:
    """NCHW nearest upsampling by integer factors: ``out[n, c, i, j] = x[n, c, i // sh, j // sw]``."""
    sh, sw = (scale, scale) if isinstance(scale, int) else tuple(int(v) for v in scale)
    if sh < 1 or sw < 1:
        raise ValueError("scale factors must be >= 1")
    N, C, H, W = x.shape
    return te.compute(
        (N, C, H * sh, W * sw),
        lambda n, c, i, j: x[n, c, tir.floordiv(i, sh), tir.floordiv(j, sw)],
        name=name,
    )
