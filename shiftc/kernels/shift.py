"""Shift-add kernels (TE) for power-of-two weight codes.

Weights arrive as b-bit codes (CONTRACTS.md "Shift weight code"), either as an int8 code tensor
of logical shape ``(terms, O, ...)`` or as the packed little-endian bit stream of
``shiftc.reference.shift.pack_codes`` (flattened in C order over ``(terms, O, ...)``, padded with
one spare byte so a field can always be read from two bytes).  A ``decode`` stage turns codes
into per-weight words once per call (O(weights)); the reduction then only shifts and adds.
Uniform-grid streams (``uniform=True``, ``shiftc.reference.shift_uniform``) hold one level per
weight; a ``shift_level`` stage reads it and the code stage selects its signed-digit terms.

Float activations (``*_float``): ``x * s * 2^-p`` is integer arithmetic on the float's bits.  The
decoded word is ``W = (p << 23) | (neg << 31)`` (a zero weight gets ``W = 0x7F800000``), and a
term is ``select((bits(x) & 0x7F800000) > (W & 0x7FFFFFFF), as_float(bits(x) - W), 0)``:
subtracting ``p << 23`` lowers the exponent field by ``p`` and subtracting ``neg << 31`` (mod
2^32) flips the sign bit.  **FTZ semantics**: the term is 0 when ``x`` is zero or subnormal, or
when the result would be subnormal (exponent field of ``x`` <= p).  Inf/NaN activations are not
supported (their exponent field is treated like any other).  The per-channel ``alpha`` multiplies
each output once, after the reduction.  NumPy truth: ``shiftc.reference.shift_float``.

Integer activations (``*_int``): ``sign * (x << (P - p))`` accumulated in int32, realised with
shifts and a two's-complement negate ``((x << q) ^ m) - m`` (``m = -1`` for negative codes) and a
mask ``z`` (0 for zero codes).  Shift amounts lie in ``[0, P]``, ``P <= 30``; the accumulator bound
``K * 2^7 * 2^P <= 2^31 - 1`` is checked when the kernel is built (``HeadroomError`` otherwise).
:func:`dot_weights` gives the weights ``+-2^(P-p)`` of the exactly equal dot-product form (int8
when ``P <= 6``, int16 above; ``shiftc.schedules.shift_dot``).  NumPy truth: ``shiftc.reference.shift``.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from shiftc.reference import shift as ref
from shiftc.reference import shift_uniform as ref_uniform

EXP_MASK = 0x7F800000
MAG_MASK = 0x7FFFFFFF
ZERO_WORD = 0x7F800000  # (bits & EXP_MASK) > ZERO_WORD never holds: a zero weight adds 0


class HeadroomError(ValueError):
    """The int32 accumulator bound K * 2^7 * 2^P <= 2^31 - 1 does not hold."""


def _u32(v: int):
    return tirx.const(v, "uint32")


# --------------------------------------------------------------------------- code access
class Codes:
    """Where a kernel reads its codes: int8 tensor ``(terms, O, *rest)`` or a packed uint8 stream.

    ``uniform``: the packed stream holds one ``bits``-bit two's-complement level per weight
    (``shiftc.reference.shift_uniform``), expanded here into its canonical signed-digit terms."""

    def __init__(self, tensor: te.Tensor, shape: tuple[int, ...], bits: int, zero_free: bool, packed: bool, uniform: bool = False):
        self.tensor, self.shape, self.bits, self.zero_free, self.packed = tensor, tuple(shape), bits, zero_free, packed
        self.uniform = uniform
        if uniform:
            terms = ref_uniform.terms_for(bits)  # validates bits
            if not packed or zero_free or shape[0] != terms:
                raise ValueError(f"{bits}-bit uniform codes are packed, with-zero and take {terms} terms")
        fields = int(np.prod(shape[1:] if uniform else shape))
        if packed:
            need = (fields * bits + 7) // 8 + 1
            if tuple(tensor.shape) != (need,) or tensor.dtype != "uint8":
                raise ValueError(f"packed codes must be uint8[{need}] for shape {shape} at {bits} bits")
        elif tuple(tensor.shape) != self.shape or tensor.dtype != "int8":
            raise ValueError(f"codes must be int8{list(shape)}, got {tensor.dtype}{list(tensor.shape)}")
        self.levels = te.compute(self.shape[1:], lambda *i: self._level(i), name="shift_level") if uniform else None

    def _field(self, idx):
        """The raw ``bits``-wide field at logical index ``idx`` (C order over the stored shape)."""
        shape = self.shape[1:] if self.uniform else self.shape
        flat = idx[0]
        for i, n in zip(idx[1:], shape[1:]):
            flat = flat * n + i  # address arithmetic on loop indices
        pos = flat * self.bits
        byte, off = pos >> 3, pos & 7
        word = self.tensor[byte].astype("int32") | (self.tensor[byte + 1].astype("int32") << 8)
        return (word >> off) & ((1 << self.bits) - 1)

    def _level(self, idx):
        """The signed level ``m`` at ``idx`` (uniform streams: two's complement field)."""
        field = self._field(idx)
        return tirx.Select((field >> (self.bits - 1)) == 1, field - (1 << self.bits), field)

    def _uniform_code(self, t, idx):
        """Term ``t`` of the level at ``idx``: a select over the CSD table of every magnitude,
        negated with ``(c ^ s) - s`` (``s = m >> 31``). Levels come from their own stage, so each
        select reads one loaded value."""
        m = self.levels[idx]
        a = tirx.Select(m < 0, -m, m)
        table = ref_uniform.csd_codes(np.arange(1 << (self.bits - 1)), self.bits)  # (terms, L + 1)
        code = tirx.const(0, "int32")
        for level in range(1, table.shape[1]):
            entry = tirx.const(int(table[-1, level]), "int32")
            for term in range(table.shape[0] - 2, -1, -1):
                entry = tirx.Select(t == term, tirx.const(int(table[term, level]), "int32"), entry)
            code = tirx.Select(a == level, entry, code)
        s = m >> 31
        return (code ^ s) - s

    def code(self, *idx):
        """The int32 code ``sign * (p + 1)`` (0 for a zero weight) at logical index ``idx``."""
        if not self.packed:
            return self.tensor[idx].astype("int32")
        if self.uniform:
            return self._uniform_code(idx[0], idx[1:])
        field = self._field(idx)
        e = field & ((1 << (self.bits - 1)) - 1)
        mag = e + 1 if self.zero_free else e
        return tirx.Select((field >> (self.bits - 1)) == 1, -mag, mag)

    def stage(self, shape, index=lambda *i: i):
        """The int32 codes as a TE stage of ``shape``; ``index`` maps its indices to (t, o, ...)."""
        return te.compute(shape, lambda *i: self.code(*index(*i)), name="shift_code")


def float_word(c):
    """uint32 ``(p << 23) | (neg << 31)`` of code ``c``; ``ZERO_WORD`` for code 0."""
    p = (tirx.Select(c < 0, -c, c) - 1).astype("uint32")
    sign = tirx.Select(c < 0, _u32(0x80000000), _u32(0))
    return tirx.Select(c == 0, _u32(ZERO_WORD), (p << _u32(23)) | sign)


def float_term(x, w):
    """``x * sign * 2^-p`` by exponent arithmetic, flushed to zero on underflow (see module doc)."""
    bits = tirx.reinterpret("uint32", x)
    keep = (bits & _u32(EXP_MASK)) > (w & _u32(MAG_MASK))
    return tirx.Select(keep, tirx.reinterpret("float32", bits - w), tirx.const(0.0, "float32"))


# --------------------------------------------------------------------------- float kernels
def _epilogue(acc, alpha, bias, channel, lo=None, hi=None):
    """``min(max(acc * alpha[c] (+ bias[c]), lo), hi)`` once per output (``channel`` picks c)."""

    def out(*i):
        v = acc[i] * alpha[channel(i)]
        if bias is not None:
            v = v + bias[channel(i)]
        if lo is not None:
            v = tirx.Max(v, tirx.const(lo, "float32"))
        if hi is not None:
            v = tirx.Min(v, tirx.const(hi, "float32"))
        return v

    return te.compute(acc.shape, out, name="shift_scale")


def shift_matmul_float(x: te.Tensor, wcodes: te.Tensor, alpha: te.Tensor, bias: te.Tensor | None = None, *, out_features: int, terms: int, bits: int, zero_free: bool, packed: bool, lo: float | None = None, hi: float | None = None, uniform: bool = False):
    """``y[..., o] = alpha[o] * sum_{t,k} x[..., k] * s * 2^-p (+ bias[o])`` for codes ``(terms, O, K)``."""
    K = int(x.shape[-1])
    O = out_features
    src = Codes(wcodes, (terms, O, K), bits, zero_free, packed, uniform)
    # decoded words in (terms, K, O) layout: the vectorised loop runs over o
    code = src.stage((terms, K, O), lambda t, k, o: (t, o, k))
    words = te.compute(code.shape, lambda *i: float_word(code[i]), name="shift_decode")
    t = te.reduce_axis((0, terms), name="t")
    k = te.reduce_axis((0, K), name="k")
    lead = [int(d) for d in x.shape[:-1]]
    acc = te.compute(
        (*lead, O),
        lambda *i: te.sum(float_term(x[(*i[:-1], k)], words[t, k, i[-1]]), axis=[t, k]),
        name="shift_acc",
    )
    return _epilogue(acc, alpha, bias, lambda i: i[-1], lo, hi)


def _pads(padding):
    p = tuple(int(v) for v in padding)
    return p if len(p) == 4 else (p[0], p[1], p[0], p[1])


def _conv_shape(x, kshape, stride, padding, dilation):
    n, c, h, w = (int(d) for d in x.shape)
    kh, kw = kshape
    pt, pl, pb, pr = _pads(padding)
    oh = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return n, c, h, w, oh, ow, pt, pl, pb, pr


def _pad(x, padding, zero):
    n, c, h, w = (int(d) for d in x.shape)
    pt, pl, pb, pr = _pads(padding)
    if not any((pt, pl, pb, pr)):
        return x
    return te.compute(
        (n, c, h + pt + pb, w + pl + pr),
        lambda a, b, i, j: tirx.if_then_else(
            tirx.all(i >= pt, i < h + pt, j >= pl, j < w + pl), x[a, b, i - pt, j - pl], tirx.const(zero, x.dtype)
        ),
        name="shift_pad",
    )


def shift_conv2d_float(x: te.Tensor, wcodes: te.Tensor, alpha: te.Tensor, bias: te.Tensor | None = None, *, weight_shape, terms: int, bits: int, zero_free: bool, packed: bool, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1, lo: float | None = None, hi: float | None = None, uniform: bool = False):
    """NCHW float conv with OIHW shift codes ``(terms, O, I/groups, kh, kw)``; zero padding; optional bias ``(O,)``."""
    O, Ig, kh, kw = (int(d) for d in weight_shape)
    n, c, h, w, oh, ow, *_ = _conv_shape(x, (kh, kw), stride, padding, dilation)
    og = O // groups
    src = Codes(wcodes, (terms, O, Ig, kh, kw), bits, zero_free, packed, uniform)
    code = src.stage((terms, O, Ig, kh, kw))
    words = te.compute(code.shape, lambda *i: float_word(code[i]), name="shift_decode")
    xp = _pad(x, padding, 0.0)
    t = te.reduce_axis((0, terms), name="t")
    ic = te.reduce_axis((0, Ig), name="ic")
    r = te.reduce_axis((0, kh), name="r")
    s = te.reduce_axis((0, kw), name="s")
    sh, sw = stride
    dh, dw = dilation
    acc = te.compute(
        (n, O, oh, ow),
        lambda b, o, y, z: te.sum(
            float_term(xp[b, (o // og) * Ig + ic, y * sh + r * dh, z * sw + s * dw], words[t, o, ic, r, s]),
            axis=[t, ic, r, s],
        ),
        name="shift_acc",
    )
    return _epilogue(acc, alpha, bias, lambda i: i[1], lo, hi)


# --------------------------------------------------------------------------- integer kernels
def check_headroom(K: int, P: int) -> None:
    """Raise ``HeadroomError`` unless ``K * 2^7 * 2^P <= 2^31 - 1`` and ``0 <= P <= 30``."""
    ref.max_shift(P)
    if not ref.headroom_ok(K, P):
        raise HeadroomError(
            f"int32 accumulator may overflow: K={K} terms of |x|<=2^7 shifted by up to P={P} "
            f"(needs K*2^7*2^P <= 2^31-1); lower P to <= {ref.max_P_for(K)} or split K"
        )


def _int_words(src: Codes, P: int, shape, index):
    """Shift amount q = P - p, negate mask m (-1/0) and zero mask z (0/-1) per weight."""
    code = src.stage(shape, index)

    def q_of(*i):
        c = code[i]
        return tirx.Select(c == 0, 0, P - (tirx.Select(c < 0, -c, c) - 1))

    q = te.compute(shape, q_of, name="shift_decode_q")
    m = te.compute(shape, lambda *i: tirx.Select(code[i] < 0, -1, 0), name="shift_decode_m")
    z = te.compute(shape, lambda *i: tirx.Select(code[i] == 0, 0, -1), name="shift_decode_z")
    return q, m, z


def int_term(x, q, m, z):
    """``sign * (x << q)`` (0 for a zero code) with shifts, xor and and only."""
    v = x.astype("int32") << q
    return ((v ^ m) - m) & z


def shift_matmul_int(x: te.Tensor, wcodes: te.Tensor, *, out_features: int, P: int, terms: int = 1, bits: int = 8, zero_free: bool = False, packed: bool = False, uniform: bool = False):
    """int8 ``x (..., K)`` and codes ``(terms, O, K)`` -> int32 ``sum sign * (x << (P - p))``."""
    K = int(x.shape[-1])
    O = out_features
    check_headroom(K * terms, P)
    src = Codes(wcodes, (terms, O, K), bits, zero_free, packed, uniform)
    q, m, z = _int_words(src, P, (terms, K, O), lambda t, k, o: (t, o, k))
    t = te.reduce_axis((0, terms), name="t")
    k = te.reduce_axis((0, K), name="k")
    lead = [int(d) for d in x.shape[:-1]]
    return te.compute(
        (*lead, O),
        lambda *i: te.sum(int_term(x[(*i[:-1], k)], q[t, k, i[-1]], m[t, k, i[-1]], z[t, k, i[-1]]), axis=[t, k]),
        name="shift_acc",
    )


def shift_conv2d_int(x: te.Tensor, wcodes: te.Tensor, *, weight_shape, P: int, terms: int = 1, bits: int = 8, zero_free: bool = False, packed: bool = False, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1, uniform: bool = False):
    """int8 NCHW conv with OIHW codes -> int32, ``sum sign * (x << (P - p))``; zero padding."""
    O, Ig, kh, kw = (int(d) for d in weight_shape)
    check_headroom(Ig * kh * kw * terms, P)
    n, c, h, w, oh, ow, *_ = _conv_shape(x, (kh, kw), stride, padding, dilation)
    og = O // groups
    src = Codes(wcodes, (terms, O, Ig, kh, kw), bits, zero_free, packed, uniform)
    q, m, z = _int_words(src, P, (terms, O, Ig, kh, kw), lambda *i: i)
    xp = _pad(x, padding, 0)
    t = te.reduce_axis((0, terms), name="t")
    ic = te.reduce_axis((0, Ig), name="ic")
    r = te.reduce_axis((0, kh), name="r")
    s = te.reduce_axis((0, kw), name="s")
    sh, sw = stride
    dh, dw = dilation

    def term(b, o, y, zz):
        xv = xp[b, (o // og) * Ig + ic, y * sh + r * dh, zz * sw + s * dw]
        return int_term(xv, q[t, o, ic, r, s], m[t, o, ic, r, s], z[t, o, ic, r, s])

    return te.compute((n, O, oh, ow), lambda b, o, y, zz: te.sum(term(b, o, y, zz), axis=[t, ic, r, s]), name="shift_acc")


def dot_weights(codes: np.ndarray, P: int) -> np.ndarray:
    """Integer weights ``sign * 2^(P - p)`` (0 for code 0), summed over terms: the dot-product form.

    int8 when every magnitude fits (``P <= 6`` for one term), int16 otherwise.
    """
    c = np.asarray(codes).astype(np.int64)
    q = np.where(c == 0, 0, P - (np.abs(c) - 1))
    w = np.where(c == 0, 0, np.sign(c) * (np.int64(1) << np.maximum(q, 0))).sum(axis=0)
    dtype = np.int8 if np.abs(w).max(initial=0) <= 127 else np.int16
    return w.astype(dtype)
