"""The integer ops of ``shiftc compile --integer-only`` as integer-only QAT simulates them, each the
same sequence of reference functions (``shiftc.reference``) and integeriser parameter choices
(``passes/integerize``) that the compiled kernels compute, so the simulation is bit-exact.

``IntV`` mirrors the integeriser's ``Q``: integer codes (int64 here) at a real scale (per tensor,
or per channel along ``axis``). Requantisation is lazy as in ``integerize.Context.as_int``: an
int32 or per-channel value is requantised (dyadic ``m * 2**-e``, round half up, saturated) to the
calibrated scale of the value a consumer reads, only where that consumer needs narrow codes.

The shift-accumulate sums run as float64 convolutions / matmuls of integers: every product and
partial sum is an integer below the layer's int32 bound (``reference.shift_bound``), far inside
float64's exact range (2**53), so the result equals the reference's int64 sum in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shiftc.calibrate import Calibration
from shiftc.core.errors import InputError
from shiftc.passes.integerize.rules_elementwise import SATURATING_RATIO as MASK_RATIO  # an operand this coarse is a mask
from shiftc.passes.integerize.scales import bits_for, requant_params, weight_codes
from shiftc.passes.integerize.value import ACT_BITS, WIDE_BITS
from shiftc.reference import overflow as ov
from shiftc.reference import shift as ref
from shiftc.reference.constant_add import add_constant_int
from shiftc.reference.nonlinear import int_mean
from shiftc.reference.quant import quantize
from shiftc.reference.requant import add_int_dyadic
from shiftc.reference.rounding import requantize


@dataclass
class IntV:
    """Integer codes ``codes`` (int64) standing for ``codes * scale`` (``scale`` per ``axis``)."""

    codes: np.ndarray
    scale: float | np.ndarray
    bits: int
    axis: int | None = None
    unsigned: bool = False  # codes in [0, 2**bits - 1] (a value calibration proved non-negative)

    @property
    def code_bits(self) -> int:
        """``Q.code_bits``: one more for unsigned codes (accumulator bounds)."""
        return self.bits + 1 if self.unsigned else self.bits

    def scales(self, dtype=np.float64) -> np.ndarray:
        """The scale broadcasting against ``codes`` (along ``axis`` when per channel)."""
        s = np.asarray(self.scale, dtype)
        if self.axis is None:
            return s
        shape = [1] * self.codes.ndim
        shape[self.axis] = -1
        return s.reshape(shape)

    def dequantized(self) -> torch.Tensor:
        """``float32(codes) * float32(scale)``: the compiled dequantiser's arithmetic."""
        return torch.from_numpy(self.codes.astype(np.float32) * self.scales(np.float32))


def quantize_input(x: np.ndarray, calib: Calibration, name: str) -> IntV:
    """A float32 graph input as int8 at its calibrated scale (``boundary.quantize_input``)."""
    s = calib.scale(name, ACT_BITS)
    return IntV(quantize(x, s, ACT_BITS).astype(np.int64), s, ACT_BITS)


def requant(q: IntV, s_out: float, bits: int, unsigned: bool = False) -> IntV:
    """``Context.requant``: ``q`` at ``s_out`` as ``bits``-bit codes (``unsigned``: [0, 2**bits - 1])."""
    m, e = requant_params(np.asarray(q.scale, np.float64) / s_out, False, out_bits=bits)
    if q.axis is None:
        codes = requantize(q.codes, int(m), int(e), bits, unsigned=unsigned)
    else:
        codes = requantize(q.codes, m, e, bits, axis=q.axis, unsigned=unsigned)
    return IntV(codes.astype(np.int64), s_out, bits, unsigned=unsigned)


def as_int(q: IntV, calib: Calibration, name: str, bits: int, unsigned_ok: bool = False) -> IntV:
    """``Context.as_int``: ``q`` itself when it is already per tensor, signed and at most ``bits``
    wide, else requantised to value ``name``'s calibrated scale; ``unsigned_ok`` (a u8 x s8
    consumer): unsigned codes for a value calibration proved non-negative."""
    if q.axis is None and q.bits <= bits and not q.unsigned:
        return q
    unsigned = unsigned_ok and name in calib.nonnegative
    if q.unsigned and q.bits <= bits and unsigned:
        return q
    return requant(q, calib.scale(name, bits, unsigned), bits, unsigned)


def summable(q: IntV, calib: Calibration, name: str, n: int) -> IntV:
    """``accumulate.summable_input``: the widest width (int16 down to int8) whose sum of ``n``
    values plus ``n // 2`` fits int32."""
    bits = bits_for(lambda b: ov.fits_int32(ov.sum_bound(n, b, n // 2)), widest=WIDE_BITS, narrowest=ACT_BITS)
    if bits is None:
        raise InputError(f"integer-only: a mean over {n:,} values of {name!r} does not fit int32")
    return as_int(q, calib, name, bits)


def global_mean(q: IntV, calib: Calibration, name: str) -> IntV:
    """GlobalAveragePool: ``int_mean`` over H, W (round half up) at the input's scale."""
    n = int(np.prod(q.codes.shape[2:]))
    x = summable(q, calib, name, n)
    return IntV(int_mean(x.codes, axis=(2, 3), keepdims=True).astype(np.int64), x.scale, 32)


def add(a: IntV, b: IntV, calib: Calibration, na: str, nb: str, name: str) -> IntV:
    """``rules_elementwise._add_act``: both sides (int16 at most, per tensor) requantised inside
    ``add_int`` to the sum's calibrated int16 scale, added, saturated (``reference.add_int_dyadic``)."""
    s_out = calib.scale(name, WIDE_BITS)
    x, y = as_int(a, calib, na, WIDE_BITS), as_int(b, calib, nb, WIDE_BITS)
    if max(float(x.scale), float(y.scale)) / s_out >= MASK_RATIO:
        raise InputError(f"integer-only QAT: Add {name!r} has an operand far coarser than its sum (a mask): not simulated")
    (ma, ea), (mb, eb) = requant_params(float(x.scale) / s_out), requant_params(float(y.scale) / s_out)
    xc, yc = np.broadcast_arrays(x.codes, y.codes)
    return IntV(add_int_dyadic(xc, ma, ea, yc, mb, eb, WIDE_BITS).astype(np.int64), s_out, WIDE_BITS)


def clamp(q: IntV, lo: float | None, hi: float | None) -> IntV:
    """ReLU / Clip on the integers: ``max(q, ceil(lo / s))``, ``min(q, floor(hi / s))``."""
    s = q.scales()
    info = np.iinfo(np.int32)
    codes = q.codes
    if lo is not None:
        codes = np.maximum(codes, np.clip(np.ceil(lo / s), info.min, info.max).astype(np.int64))
    if hi is not None:
        codes = np.minimum(codes, np.clip(np.floor(hi / s), info.min, info.max).astype(np.int64))
    return IntV(codes, q.scale, q.bits, q.axis, q.unsigned)


def max_pool(q: IntV, **kw) -> IntV:
    """MaxPool on the integers (exact in float64), same scale and axis."""
    out = F.max_pool2d(torch.from_numpy(q.codes.astype(np.float64)), **kw)
    return IntV(out.numpy().astype(np.int64), q.scale, q.bits, q.axis, q.unsigned)


def _exact_sum(bound: np.ndarray, what: str) -> None:
    if np.max(bound, initial=0) > ov.INT32_MAX:
        raise InputError(f"integer-only: {what} could overflow its int32 accumulator (bound {int(np.max(bound)):,})")


def _sum(x: IntV, w: np.ndarray, conv: dict | None) -> np.ndarray:
    """``x`` times integer weights ``w`` (output channel first), exactly (float64, see above)."""
    xf, wf = torch.from_numpy(x.codes.astype(np.float64)), torch.from_numpy(np.asarray(w, np.float64))
    if conv is None:
        return (xf @ wf.T).numpy().astype(np.int64)
    t, l, b, r = conv["padding"]
    out = F.conv2d(F.pad(xf, (l, r, t, b)), wf, None, conv["stride"], 0, conv["dilation"], conv["groups"])
    return out.numpy().astype(np.int64)


def _with_bias(acc: np.ndarray, scale: np.ndarray, bias, bound) -> IntV:
    """``ctx.add_const`` of a per-channel bias (axis 1): ``reference.add_constant_int``."""
    if bias is None:
        return IntV(acc, scale, 32, 1)
    c = np.asarray(bias, np.float32).astype(np.float64).reshape([-1] + [1] * (acc.ndim - 2))
    out, scale = add_constant_int(acc, c, scale, bound, axis=1)
    return IntV(out.astype(np.int64), scale, 32, 1)


def int8_layer(x: IntV, w: np.ndarray, bias: np.ndarray | None, conv: dict | None) -> IntV:
    """``rules_linear`` conv2d / matmul with a constant weight (a layer kept as a multiplication):
    int8 per-channel weight codes (``integerize.scales.weight_codes``) times int8 / uint8 ``x``,
    summed in int32 at ``s_x * s_w[c]``, then the bias (``_with_bias``). ``w``: output channel
    first (OIHW, or (O, I)). A sum the compiler would split along K is refused here."""
    wq, sw = weight_codes(np.asarray(w, np.float32), axis=0)
    bound = ov.code_max(x.code_bits) * np.abs(wq.astype(np.int64)).reshape(len(wq), -1).sum(axis=1)
    _exact_sum(bound, "an int8 layer")
    return _with_bias(_sum(x, wq, conv), float(x.scale) * sw, bias, bound)


def shift_layer(x: IntV, codes: np.ndarray, alpha: np.ndarray, bias: np.ndarray | None, conv: dict | None) -> IntV:
    """``rules_linear`` on a shift kernel: the int32 shift-accumulate of int8 ``x`` at scale
    ``s_x * alpha_c * 2**-P`` (``P`` the layer's largest code exponent), all-zero channels forced
    to 0, then the bias as int32 codes (``reference.add_constant_int``, which narrows a channel
    only where the sum could leave int32). ``conv``: padding (t, l, b, r), stride, dilation,
    groups; None for a matmul (codes ``(terms, O, I)``)."""
    codes = np.asarray(codes, np.int8)
    P = max(int(np.abs(codes.astype(np.int64)).max()) - 1, 0) if codes.size else 0
    bound = ov.shift_bound(codes, P, x.bits)
    _exact_sum(bound, "a shift layer")
    acc = sum(_sum(x, ref.code_weights(c, P), conv) for c in codes)
    axis = 1
    a = np.asarray(alpha, np.float32).astype(np.float64)
    dead = a <= 0
    if dead.any():  # rules_linear._dead_channels
        shape = [1] * acc.ndim
        shape[axis] = -1
        acc = np.where(dead.reshape(shape), 0, acc)
        a = np.where(dead, a.max() if a.max() > 0 else 1.0, a)
    return _with_bias(acc, float(x.scale) * a * 2.0**-P, bias, bound)
