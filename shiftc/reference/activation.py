"""Integer activations (docs/NUMERICS.md §3.10): table lookups and a slope for negative inputs.

A **lookup table** replaces an elementwise function ``f`` of a ``b``-bit input at scale ``s_in``
(sigmoid, tanh, erf: ``b = 8``, 256 entries): ``table[k] = saturate(round_half_up(f(code_k * s_in)
/ s_out), out_bits)`` for every code ``code_k = k - 2**(b-1)``. The table is a compile-time constant
(built on the host in float64, like weight codes); the kernel only indexes it,
``y = table[x + 2**(b-1)]``. Bounded functions (``|f| <= 1``) use the fixed output scale
``2**-LUT_FRAC_BITS``, so 1.0 is the int16 code 16384.

**Leaky ReLU / PReLU** keep the input's scale: ``y = x`` for ``x >= 0``, else
``sign(alpha) * rshift_round(x * m, e)`` with ``(m, e) = dyadic(|alpha|)`` (per channel for PReLU).
"""

from __future__ import annotations

import math

import numpy as np

from .quant import round_half_up
from .rounding import out_dtype, rshift_round, saturate

__all__ = ["LUT_IN_BITS", "LUT_FRAC_BITS", "LUT_FUNCTIONS", "LUT_SATURATES", "lut_table", "lut_apply", "leaky_relu_int"]

LUT_IN_BITS = 8  # the table's input width (2**8 entries)
LUT_FRAC_BITS = 14  # fixed output scale 2**-14 of bounded functions: |f| <= 1 fits int16

_erf = np.vectorize(math.erf, otypes=[np.float64])

# |t| beyond which f is within half an output step (2**-15) of +-1: finer input codes are useless there
LUT_SATURATES = {"sigmoid": 15 * math.log(2), "tanh": 8 * math.log(2), "erf": 3.0}

LUT_FUNCTIONS = {
    "sigmoid": lambda t: 0.5 * (1.0 + np.tanh(0.5 * t)),  # overflow-free logistic
    "tanh": np.tanh,
    "erf": _erf,
}


def lut_table(fn, s_in: float, s_out: float, in_bits: int = LUT_IN_BITS, out_bits: int = 16) -> np.ndarray:
    """``f`` tabulated over every ``in_bits``-bit code at input scale ``s_in``, as ``out_bits``-bit
    codes at ``s_out`` (entry ``k`` is code ``k - 2**(in_bits-1)``)."""
    if not 2 <= in_bits <= 16:
        raise ValueError(f"a lookup table takes 2..16-bit inputs, got {in_bits}")
    fn = LUT_FUNCTIONS[fn] if isinstance(fn, str) else fn
    codes = np.arange(-(1 << (in_bits - 1)), 1 << (in_bits - 1), dtype=np.int64)
    y = np.asarray(fn(codes.astype(np.float64) * float(s_in)), np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError("lookup table: the function is not finite on the input range")
    return saturate(round_half_up(y / float(s_out)).astype(np.int64), out_bits).astype(out_dtype(out_bits))


def lut_apply(x, table: np.ndarray) -> np.ndarray:
    """``table[x + len(table) // 2]`` (``x`` integer codes of the table's input width)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"x must be integer codes, got {x.dtype}")
    half = len(table) // 2
    if x.size and (x.min() < -half or x.max() >= half):
        raise ValueError(f"codes outside the table's range [-{half}, {half - 1}]")
    return np.asarray(table)[x.astype(np.int64) + half]


def leaky_relu_int(x, m, e, sign, axis: int | None = None) -> np.ndarray:
    """``x`` where ``x >= 0``, else ``sign * rshift_round(x * m, e)`` (int64); ``m``, ``e``,
    ``sign`` scalars or 1-D along ``axis`` (PReLU). ``|x| <= 2**31``, ``0 <= m < 2**31``."""
    x = np.asarray(x).astype(np.int64)

    def along(v):
        v = np.asarray(v, np.int64)
        if axis is None or v.ndim == 0:
            return v.reshape(())
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        return v.reshape(shape)

    neg = along(sign) * rshift_round(x * along(m), along(e))
    return np.where(x >= 0, x, neg)
