"""Power-of-two (PoT) shift weight codes: the NumPy truth (docs/NUMERICS.md §1, CONTRACTS.md).

Code convention (CONTRACTS.md, binding)
---------------------------------------
One ``int8`` code per weight::

    code == 0            -> weight 0              (with-zero mode only)
    code != 0            -> sign = -1 if code < 0 else +1,  p = |code| - 1
                            w = alpha_c * sign * 2**-p

``b``-bit codes:

* zero-free (DenseShift, ``zero_free=True``): ``p in [0, 2**(b-1) - 1]`` -- all ``2**b`` codes
  carry a sign and an exponent.  ``b = 8`` zero-free would need code ``+128``, which is not an
  ``int8``, so ``bits`` is limited to ``[2, 7]`` there.
* with-zero (DeepShift, ``zero_free=False``): ``p in [0, 2**(b-1) - 2]`` plus the zero code;
  ``bits in [2, 8]``.

An optional ``p_max`` lowers the largest exponent (e.g. to meet the int32 accumulator headroom,
see :func:`headroom_ok`); it never raises it above the b-bit limit.

Encoding (post-training)
------------------------
For a fixed ``alpha_c`` the code of every weight is the **nearest representable value** of the
channel's set ``{+-alpha_c * 2**-p : 0 <= p <= p_max}`` (union ``{0}`` in with-zero mode).  Both
power-of-two neighbours are compared exactly (``frexp``, no ``log2`` rounding): with
``a = |w| / alpha_c = m * 2**k``, ``m in [0.5, 1)``, the neighbours are ``2**k`` and
``2**(k-1)`` and the midpoint is ``0.75 * 2**k``; ties go to the larger magnitude.  Values above
``alpha_c`` map to ``p = 0`` (there is no saturation at ``|w| = 1`` as in DeepShift: ``alpha_c``
carries the scale).  In with-zero mode a weight maps to 0 when ``a < 2**-p_max / 2`` (strictly
nearer to 0; a tie keeps the non-zero code).  In zero-free mode ``w == 0`` gets ``sign = +1`` and
``p = p_max``.

``alpha_c`` (per output channel, axis ``axis``) is chosen to **minimise that channel's squared
weight error** ``sum (w - decode)**2``.  Method ``alpha="mse"`` (default):

1. candidates ``max|w_c| * 2**(j/32)`` for ``j = -32 .. 16`` (49 candidates spanning the only
   octave-and-a-half that matters: the top code must sit near ``max|w_c|``) plus the two powers of
   two around ``max|w_c|`` (``2**floor(log2 max)``, ``2**ceil(log2 max)``); every candidate is
   rounded to float32 first, so the error is evaluated for the alpha that is actually stored;
2. the best candidate is refined by 3 Lloyd steps: with codes fixed the least-squares alpha is
   ``sum |w| 2**-p / sum 4**-p`` (over non-zero codes); then codes are re-assigned.  A step is
   kept only if it lowers the error, so the result is never worse than the best candidate and
   never worse than ``alpha = max|w_c|``.

``alpha="max"`` uses ``max|w_c|``; ``alpha="pot"`` restricts alpha to a power of two (the best of
``2**(floor(log2 max) + d)``, ``d in {-1, 0, 1, 2}``) so that even the per-channel scale is a
shift.  A channel that is entirely 0 gets ``alpha_c = 0`` (it then decodes exactly to 0 in both
modes; downstream dyadic requantisation maps a 0 scale to an exactly-0 output).

Multi-term (APoT / BCQ-style, ShiftAddLLM): ``w ~= alpha_c * sum_i decode(code_i)`` with
``terms`` codes per weight (leading axis), one alpha per channel, the codes chosen greedily
(term i encodes the residual of terms ``< i``, each term nearest-representable).

Packing: see :func:`pack_codes`.

Integer activations: ``y_c = sum_k sign_k * (x_k << (P - p_k))`` in int32 with ``P >= max p``,
output scale ``alpha_c * 2**-P * s_x``.  Headroom: ``K * 2**(x_bits-1) * 2**P <= 2**31 - 1``.
(The published bound is ``K * 127 * 2**P < 2**31``; int8 ``x = -128`` times a negative sign gives
``+128 * 2**P`` per term, so shiftc uses the slightly stricter ``2**(x_bits-1)``: docs/NUMERICS.md §1.5.)
"""

from __future__ import annotations

import numpy as np

INT32_MAX = 2**31 - 1

__all__ = [
    "p_limit",
    "encode_pot",
    "decode_pot",
    "nearest_codes",
    "encode_multi",
    "decode_multi",
    "pack_codes",
    "unpack_codes",
    "pack_fields",
    "unpack_fields",
    "max_shift",
    "headroom_ok",
    "max_P_for",
    "code_weights",
    "shift_matmul_int",
    "shift_matmul_int_multi",
    "shift_matmul_float",
    "shift_conv2d_int",
    "shift_conv2d_float",
    "im2col_nchw",
    "conv_padding",
]


# --------------------------------------------------------------------------- code ranges
def p_limit(bits: int, zero_free: bool = True, p_max: int | None = None) -> int:
    """Largest exponent ``p`` of a ``bits``-bit code (optionally lowered to ``p_max``)."""
    if not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    hi = 7 if zero_free else 8
    if not 2 <= bits <= hi:
        mode = "zero-free" if zero_free else "with-zero"
        raise ValueError(f"{mode} PoT codes support bits in [2, {hi}] (int8 storage), got {bits}")
    lim = 2 ** (bits - 1) - 1 if zero_free else 2 ** (bits - 1) - 2
    if p_max is not None:
        if not 0 <= p_max <= lim:
            raise ValueError(f"p_max must be in [0, {lim}] for {bits}-bit codes, got {p_max}")
        lim = int(p_max)
    return lim


def _to_channels(w: np.ndarray, axis: int) -> tuple[np.ndarray, tuple[int, ...]]:
    w = np.asarray(w)
    if w.ndim == 0:
        raise ValueError("weights must have at least one axis (the channel axis)")
    axis = axis % w.ndim
    moved = np.moveaxis(w, axis, 0)
    return moved.reshape(moved.shape[0], -1), moved.shape


def _from_channels(a2: np.ndarray, moved_shape: tuple[int, ...], axis: int, ndim: int) -> np.ndarray:
    return np.moveaxis(a2.reshape(moved_shape), 0, axis % ndim)


# --------------------------------------------------------------------------- nearest codes
def nearest_codes(w: np.ndarray, alpha: np.ndarray, pmax: int, zero_free: bool) -> np.ndarray:
    """Nearest-representable codes of ``w`` (shape ``(C, N)``) for per-row ``alpha`` (shape ``(C,)``).

    Exact neighbour comparison through ``frexp`` (see module docstring).  Rows with ``alpha == 0``
    get the code of the smallest magnitude (zero-free) or 0 (with-zero).
    """
    w = np.asarray(w, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64).reshape(-1, 1)
    mag = np.abs(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(alpha > 0, mag / np.where(alpha > 0, alpha, 1.0), 0.0)
    m, k = np.frexp(a)  # a = m * 2**k, m in [0.5, 1) (m = 0, k = 0 for a = 0)
    # upper neighbour 2**k  <-> p = -k ; lower neighbour 2**(k-1) <-> p = 1 - k
    p = np.where(m >= 0.75, -k, 1 - k).astype(np.int64)
    p = np.where(a == 0, pmax, np.clip(p, 0, pmax))
    sign = np.where(w < 0, -1, 1).astype(np.int64)
    codes = sign * (p + 1)
    if not zero_free:
        # zero only when strictly nearer than the smallest magnitude 2**-pmax
        to_zero = a < np.ldexp(0.5, -pmax)
        codes = np.where(to_zero, 0, codes)
    return codes.astype(np.int8)


def _decode_unit(codes: np.ndarray) -> np.ndarray:
    """``sign * 2**-p`` (0 for code 0) as float64, exact."""
    c = np.asarray(codes).astype(np.int64)
    p = np.abs(c) - 1
    val = np.ldexp(1.0, -np.maximum(p, 0)) * np.sign(c)
    return np.where(c == 0, 0.0, val)


def _channel_sse(w2: np.ndarray, alpha: np.ndarray, codes: np.ndarray) -> np.ndarray:
    rec = alpha.reshape(-1, 1).astype(np.float64) * _decode_unit(codes)
    return np.sum((w2 - rec) ** 2, axis=1)


def _lloyd_alpha(w2: np.ndarray, unit: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    num = np.sum(w2 * unit, axis=1)
    den = np.sum(unit * unit, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(den > 0, num / np.where(den > 0, den, 1.0), fallback)
    a = np.where(a > 0, a, fallback)
    return a.astype(np.float32).astype(np.float64)


# --------------------------------------------------------------------------- single term
def encode_pot(
    w: np.ndarray,
    bits: int = 5,
    zero_free: bool = True,
    axis: int = 0,
    *,
    alpha: str | np.ndarray = "mse",
    p_max: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode weights to PoT codes: returns ``(codes int8 same shape as w, alpha float32 (C,))``.

    ``alpha`` is ``"mse"`` (default), ``"max"``, ``"pot"`` or an explicit per-channel array
    (then only the codes are computed, nearest for that alpha).  See the module docstring.
    """
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating) and not np.issubdtype(w.dtype, np.integer):
        raise TypeError(f"weights must be numeric, got {w.dtype}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or Inf")
    pmax = p_limit(bits, zero_free, p_max)
    w2, moved_shape = _to_channels(w.astype(np.float64), axis)
    mx = np.max(np.abs(w2), axis=1) if w2.shape[1] else np.zeros(w2.shape[0])

    if isinstance(alpha, str):
        if alpha == "max":
            best = mx.astype(np.float32).astype(np.float64)
        elif alpha in ("mse", "pot"):
            safe = np.where(mx > 0, mx, 1.0)
            if alpha == "mse":
                cands = [safe * 2.0 ** (j / 32.0) for j in range(-32, 17)]
                fl = np.floor(np.log2(safe))
                cands += [2.0**fl, 2.0 ** (fl + 1)]
            else:
                fl = np.floor(np.log2(safe))
                cands = [2.0 ** (fl + d) for d in (-1, 0, 1, 2)]
            best = None
            best_err = None
            for c in cands:
                c = c.astype(np.float32).astype(np.float64)
                err = _channel_sse(w2, c, nearest_codes(w2, c, pmax, zero_free))
                if best is None:
                    best, best_err = c, err
                else:
                    better = err < best_err
                    best = np.where(better, c, best)
                    best_err = np.where(better, err, best_err)
            if alpha == "mse":
                for _ in range(3):
                    unit = _decode_unit(nearest_codes(w2, best, pmax, zero_free))
                    cand = _lloyd_alpha(np.abs(w2) * 1.0, np.abs(unit), best)
                    err = _channel_sse(w2, cand, nearest_codes(w2, cand, pmax, zero_free))
                    better = err < best_err
                    best = np.where(better, cand, best)
                    best_err = np.where(better, err, best_err)
            best = np.where(mx > 0, best, 0.0)
        else:
            raise ValueError(f"alpha must be 'mse', 'max', 'pot' or an array, got {alpha!r}")
    else:
        best = np.asarray(alpha, dtype=np.float32).astype(np.float64).reshape(-1)
        if best.shape[0] != w2.shape[0]:
            raise ValueError(f"alpha has {best.shape[0]} entries for {w2.shape[0]} channels")
        if np.any(best < 0) or not np.all(np.isfinite(best)):
            raise ValueError("alpha must be finite and >= 0")
    codes2 = nearest_codes(w2, best, pmax, zero_free)
    codes = _from_channels(codes2, moved_shape, axis, w.ndim)
    return np.ascontiguousarray(codes.astype(np.int8)), best.astype(np.float32)


def decode_pot(codes: np.ndarray, alpha: np.ndarray, axis: int = 0) -> np.ndarray:
    """``alpha_c * sign * 2**-p`` (0 for code 0) as float32 (exact: ``ldexp`` of float32 alpha)."""
    codes = np.asarray(codes)
    if codes.dtype != np.int8:
        raise TypeError(f"codes must be int8, got {codes.dtype}")
    if np.any(codes == -128):
        raise ValueError("code -128 is not a valid PoT code")
    alpha = np.asarray(alpha, dtype=np.float32).reshape(-1)
    axis = axis % codes.ndim
    shape = [1] * codes.ndim
    shape[axis] = -1
    a = alpha.reshape(shape)
    c = codes.astype(np.int32)
    p = np.maximum(np.abs(c) - 1, 0)
    val = np.ldexp(a, -p).astype(np.float32) * np.sign(c).astype(np.float32)
    return np.where(c == 0, np.float32(0), val).astype(np.float32)


# --------------------------------------------------------------------------- multi term
def _greedy_multi(w2: np.ndarray, alpha: np.ndarray, terms: int, pmax: int, zero_free: bool):
    res = w2 / np.where(alpha > 0, alpha, 1.0).reshape(-1, 1)
    res = np.where(alpha.reshape(-1, 1) > 0, res, 0.0)
    out = []
    for _ in range(terms):
        c = nearest_codes(res, np.ones(w2.shape[0]), pmax, zero_free)
        out.append(c)
        res = res - _decode_unit(c)
    return np.stack(out)


def _multi_sse(w2, alpha, codes):
    unit = sum(_decode_unit(c) for c in codes)
    return np.sum((w2 - alpha.reshape(-1, 1) * unit) ** 2, axis=1), unit


def encode_multi(
    w: np.ndarray,
    terms: int = 2,
    bits: int = 5,
    zero_free: bool = False,
    axis: int = 0,
    *,
    p_max: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy residual multi-term PoT code (APoT/BCQ-style): ``w ~= alpha_c * sum_i decode(code_i)``.

    Returns ``(codes int8 of shape (terms, *w.shape), alpha float32 (C,))``.  Term ``i`` is the
    nearest representable value of the residual left by terms ``< i`` (in units of alpha_c).
    alpha_c minimises the channel error over the same candidate grid as :func:`encode_pot`
    (``max|w| * 2**(j/32)``, ``j = -32..16``), followed by 2 least-squares refits
    ``alpha = <w, d> / <d, d>`` (``d`` = decoded unit sum) with re-encoding, kept only if better.
    ``zero_free=True`` forces every term to contribute ``+-2**-p`` (useful for BCQ-like
    binary terms); with-zero lets later terms vanish when the residual is already small.
    """
    if not isinstance(terms, (int, np.integer)) or terms < 1:
        raise ValueError(f"terms must be an int >= 1, got {terms!r}")
    w = np.asarray(w)
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or Inf")
    pmax = p_limit(bits, zero_free, p_max)
    w2, moved_shape = _to_channels(w.astype(np.float64), axis)
    mx = np.max(np.abs(w2), axis=1) if w2.shape[1] else np.zeros(w2.shape[0])
    safe = np.where(mx > 0, mx, 1.0)
    best = best_err = best_codes = None
    for j in range(-32, 17):
        c = (safe * 2.0 ** (j / 32.0)).astype(np.float32).astype(np.float64)
        codes = _greedy_multi(w2, c, terms, pmax, zero_free)
        err, _ = _multi_sse(w2, c, codes)
        if best is None:
            best, best_err, best_codes = c, err, codes
        else:
            bt = err < best_err
            best = np.where(bt, c, best)
            best_err = np.where(bt, err, best_err)
            best_codes = np.where(bt[None, :, None], codes, best_codes)
    for _ in range(2):
        _, unit = _multi_sse(w2, best, best_codes)
        # least squares on signed values: alpha = <w, d> / <d, d>
        num = np.sum(w2 * unit, axis=1)
        den = np.sum(unit * unit, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ls = np.where(den > 0, num / np.where(den > 0, den, 1.0), best)
        cand = np.where(ls > 0, ls, best).astype(np.float32).astype(np.float64)
        codes = _greedy_multi(w2, cand, terms, pmax, zero_free)
        err, _ = _multi_sse(w2, cand, codes)
        bt = err < best_err
        best = np.where(bt, cand, best)
        best_err = np.where(bt, err, best_err)
        best_codes = np.where(bt[None, :, None], codes, best_codes)
    best = np.where(mx > 0, best, 0.0)
    out = np.stack([_from_channels(c, moved_shape, axis, w.ndim) for c in best_codes])
    return np.ascontiguousarray(out.astype(np.int8)), best.astype(np.float32)


def decode_multi(codes: np.ndarray, alpha: np.ndarray, axis: int = 0) -> np.ndarray:
    """``alpha_c * sum_i sign_i 2**-p_i`` (float32; the unit sum is exact in float64)."""
    codes = np.asarray(codes)
    if codes.dtype != np.int8 or codes.ndim < 2:
        raise TypeError("multi-term codes must be int8 with a leading terms axis")
    unit = sum(_decode_unit(c) for c in codes)
    alpha = np.asarray(alpha, dtype=np.float32).astype(np.float64).reshape(-1)
    ax = axis % (codes.ndim - 1)
    shape = [1] * (codes.ndim - 1)
    shape[ax] = -1
    return (alpha.reshape(shape) * unit).astype(np.float32)


# --------------------------------------------------------------------------- packing
def pack_codes(codes: np.ndarray, bits: int, zero_free: bool = True) -> bytes:
    """Pack int8 codes into a ``bits``-bit little-endian bit stream (sign-magnitude, no two's complement).

    Field layout (``bits`` wide, LSB first in the stream): bit ``bits-1`` = sign (1 = negative),
    low ``bits-1`` bits = ``e``:

    * zero-free: ``e = p = |code| - 1`` (every field value is a weight);
    * with-zero: ``e = |code|`` so ``e == 0`` is the zero flag (``e = p + 1`` otherwise); the
      field ``sign=1, e=0`` ("negative zero") is never written and is rejected when unpacking.

    Field ``i`` occupies stream bits ``[i*bits, (i+1)*bits)``; byte ``j`` holds stream bits
    ``8j .. 8j+7`` (bit 0 = LSB).  The last byte is zero-padded.  Codes are flattened in C order;
    the shape is not stored.
    """
    pmax = p_limit(bits, zero_free)
    c = np.asarray(codes)
    if c.dtype != np.int8:
        raise TypeError(f"codes must be int8, got {c.dtype}")
    c = c.reshape(-1).astype(np.int64)
    mag = np.abs(c)
    if zero_free:
        if np.any(c == 0):
            raise ValueError("code 0 (zero weight) does not exist in zero-free mode")
        e = mag - 1
    else:
        e = mag
    if np.any(e > (pmax if zero_free else pmax + 1)):
        raise ValueError(f"code out of range for {bits}-bit {'zero-free' if zero_free else 'with-zero'} codes")
    return pack_fields((np.where(c < 0, 1, 0) << (bits - 1)) | e, bits)


def pack_fields(field: np.ndarray, bits: int) -> bytes:
    """Non-negative ``bits``-wide fields as one little-endian bit stream: field ``i`` at stream bits
    ``[i*bits, (i+1)*bits)``, byte ``j`` holding bits ``8j .. 8j+7``, the last byte zero-padded."""
    bitarr = ((np.asarray(field, np.int64)[:, None] >> np.arange(bits)[None, :]) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bitarr, bitorder="little").tobytes()


def unpack_fields(data: bytes, bits: int, count: int, what: str = "codes") -> np.ndarray:
    """Inverse of :func:`pack_fields`: the first ``count`` fields (int64); ``what`` names them in
    the error when ``data`` is too short."""
    need = (count * bits + 7) // 8
    if len(data) < need:
        raise ValueError(f"{len(data)} bytes cannot hold {count} {what} of {bits} bits ({need} needed)")
    bitarr = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8), bitorder="little")
    return np.sum(bitarr[: count * bits].reshape(count, bits).astype(np.int64) << np.arange(bits)[None, :], axis=1)


def unpack_codes(data: bytes, bits: int, count: int, zero_free: bool = True, shape=None) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes (reshaped to ``shape`` if given)."""
    pmax = p_limit(bits, zero_free)
    field = unpack_fields(data, bits, count)
    neg = (field >> (bits - 1)) & 1
    e = field & ((1 << (bits - 1)) - 1)
    if zero_free:
        mag = e + 1
    else:
        if np.any((e == 0) & (neg == 1)):
            raise ValueError("invalid packed code: negative zero")
        mag = e
        if np.any(mag > pmax + 1):
            raise ValueError("invalid packed code: exponent out of range")
    out = np.where(neg == 1, -mag, mag).astype(np.int8)
    return out.reshape(shape) if shape is not None else out


# --------------------------------------------------------------------------- headroom
def max_shift(P: int) -> int:
    """Largest left-shift amount :func:`shift_matmul_int` emits for ``P`` (``P - 0``), validated.

    The shift amounts are ``P - p`` with ``0 <= p <= P``, so they lie in ``[0, P]``; ``P`` must
    be ``<= 30`` so that ``x << P`` of a non-zero int8 stays a legal int32 shift.
    """
    if not isinstance(P, (int, np.integer)) or not 0 <= P <= 30:
        raise ValueError(f"P must be an int in [0, 30], got {P!r}")
    return int(P)


def headroom_ok(K: int, P: int, x_bits: int = 8) -> bool:
    """True iff ``K * 2**(x_bits-1) * 2**P <= 2**31 - 1`` (no int32 overflow for any input)."""
    if K < 0 or P < 0 or x_bits < 1:
        raise ValueError("K, P must be >= 0 and x_bits >= 1")
    return K * (1 << (x_bits - 1)) * (1 << P) <= INT32_MAX


def max_P_for(K: int, x_bits: int = 8) -> int:
    """Largest ``P`` with :func:`headroom_ok` (``-1`` if even ``P = 0`` overflows)."""
    P = -1
    while P < 30 and headroom_ok(K, P + 1, x_bits):
        P += 1
    return P


def _check_P(codes: np.ndarray, P: int, K: int, x_bits: int = 8) -> None:
    max_shift(P)
    c = np.asarray(codes)
    if c.dtype != np.int8:
        raise TypeError(f"codes must be int8, got {c.dtype}")
    if c.size and (np.abs(c.astype(np.int64)).max() - 1) > P:
        raise ValueError(f"P={P} is smaller than the largest code exponent {np.abs(c.astype(np.int64)).max() - 1}")
    if not headroom_ok(K, P, x_bits):
        raise OverflowError(
            f"int32 accumulator headroom violated: K={K} * 2^{x_bits - 1} * 2^P(={P}) > 2^31-1; "
            f"split K or lower P to <= {max_P_for(K, x_bits)}"
        )


# --------------------------------------------------------------------------- matmul
def code_weights(codes: np.ndarray, P: int) -> np.ndarray:
    """The integers ``sign * 2**(P - p)`` (0 for code 0) that int8 codes stand for at shift
    ``P``, as int64: ``x * code_weights(c, P) == sign * (x << (P - p))`` exactly.

    Needs ``p <= P`` for every non-zero code (else the shift amount would be negative).
    """
    c = np.asarray(codes)
    if c.dtype != np.int8:
        raise TypeError(f"codes must be int8, got {c.dtype}")
    c = c.astype(np.int64)
    q = np.where(c == 0, 0, P - (np.abs(c) - 1))
    if np.any(q < 0):
        raise ValueError(f"a shift code has p > P={P} (negative shift amount)")
    mag = np.left_shift(np.int64(1), q)
    return np.where(c == 0, 0, np.where(c < 0, -mag, mag))


def shift_matmul_int(x_int8: np.ndarray, codes: np.ndarray, P: int) -> np.ndarray:
    """``y[..., n] = sum_k sign[n,k] * (x[..., k] << (P - p[n,k]))`` in int32 (code 0 adds 0).

    ``x``: int8 ``(..., K)``; ``codes``: int8 ``(N, K)`` (output-feature axis 0).  Output int32
    ``(..., N)`` at scale ``alpha_n * 2**-P * s_x``.  Raises ``OverflowError`` when
    ``K * 128 * 2**P > 2**31 - 1`` (then no input can be guaranteed) and ``ValueError`` when
    ``P < max p``.  The value equals ``x @ (sign * 2**(P-p)).T`` exactly (int8 dot with ``+-2**q``).
    """
    x = np.asarray(x_int8)
    if x.dtype != np.int8:
        raise TypeError(f"x must be int8, got {x.dtype}")
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != x.shape[-1]:
        raise ValueError(f"codes shape {codes.shape} does not match x (..., {x.shape[-1]})")
    _check_P(codes, P, codes.shape[1])
    y = x.astype(np.int64) @ code_weights(codes, P).T
    assert np.all(np.abs(y) <= INT32_MAX + 1)
    return y.astype(np.int32)


def shift_matmul_int_multi(x_int8: np.ndarray, codes: np.ndarray, P: int) -> np.ndarray:
    """Multi-term codes ``(terms, N, K)``: sum of :func:`shift_matmul_int` over terms, one int32
    accumulator; headroom is checked for ``K * terms`` products."""
    codes = np.asarray(codes)
    if codes.ndim != 3:
        raise ValueError("multi-term codes must have shape (terms, N, K)")
    _check_P(codes, P, codes.shape[0] * codes.shape[2])
    y = np.zeros(np.asarray(x_int8).shape[:-1] + (codes.shape[1],), dtype=np.int64)
    for c in codes:
        y += np.asarray(x_int8).astype(np.int64) @ code_weights(c, P).T
    return y.astype(np.int32)


def shift_matmul_float(x_f32: np.ndarray, codes: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Float-activation path: ``y[..., n] = alpha_n * sum_k sign * ldexp(x[..., k], -p)``.

    ``ldexp`` is an exponent subtraction (exact unless it underflows to a subnormal); the sum is
    accumulated in float64 and the result rounded once to float32.  A float32 kernel that
    accumulates in float32 should match within ``K * 2**-24 * sum|terms|``.
    Multi-term codes ``(terms, N, K)`` are accepted and summed.
    """
    x = np.asarray(x_f32, dtype=np.float32)
    codes = np.asarray(codes)
    if codes.dtype != np.int8:
        raise TypeError(f"codes must be int8, got {codes.dtype}")
    stack = codes if codes.ndim == 3 else codes[None]
    alpha = np.asarray(alpha, dtype=np.float32).astype(np.float64)
    acc = np.zeros(x.shape[:-1] + (stack.shape[1],), dtype=np.float64)
    for cc in stack:
        c = cc.astype(np.int64)
        p = np.maximum(np.abs(c) - 1, 0)
        s = np.sign(c).astype(np.float64)
        for n in range(c.shape[0]):
            acc[..., n] += np.sum(np.ldexp(x.astype(np.float64), -p[n]) * s[n], axis=-1)
    return (acc * alpha).astype(np.float32)


# --------------------------------------------------------------------------- conv2d
def _pair(v, name):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(t) for t in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair")
    return v


def conv_padding(padding) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` from an int, ``(ph, pw)`` or four values."""
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 4
    p = tuple(int(t) for t in padding)
    if len(p) == 2:
        return p[0], p[1], p[0], p[1]
    if len(p) == 4:
        return p  # top, left, bottom, right
    raise ValueError("padding must be an int, (ph, pw) or (top, left, bottom, right)")


def im2col_nchw(x, kh, kw, stride=1, padding=0, dilation=1):
    """im2col of NCHW ``x`` (zero padding): returns ``(N, C*kh*kw, OH*OW)``, ``(OH, OW)``.

    Row order is ``(c, i, j)``, i.e. matches an OIHW weight reshaped to ``(O, I*kh*kw)``.
    """
    x = np.asarray(x)
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    pt, pl, pb, pr = conv_padding(padding)
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError("convolution output would be empty")
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
    return cols.reshape(n, c * kh * kw, oh * ow), (oh, ow)


def _conv_groups(x, codes, groups):
    x = np.asarray(x)
    codes = np.asarray(codes)
    if x.ndim != 4 or codes.ndim != 4:
        raise ValueError("conv2d expects NCHW input and OIHW codes")
    O, Ig = codes.shape[:2]
    if x.shape[1] != Ig * groups or O % groups:
        raise ValueError(f"channels do not match groups: x C={x.shape[1]}, codes {codes.shape}, groups={groups}")
    return O // groups


def shift_conv2d_int(x_int8, codes, P, stride=1, padding=0, dilation=1, groups=1):
    """Integer shift conv2d, NCHW x OIHW codes -> int32 NCHW (zero padding = value 0).

    Each group is an im2col + :func:`shift_matmul_int` with ``K = (C/groups) * kh * kw``; the
    headroom check uses that K.
    """
    x = np.asarray(x_int8)
    if x.dtype != np.int8:
        raise TypeError(f"x must be int8, got {x.dtype}")
    og = _conv_groups(x, codes, groups)
    codes = np.asarray(codes)
    O, Ig, kh, kw = codes.shape
    outs = []
    for g in range(groups):
        cols, (oh, ow) = im2col_nchw(x[:, g * Ig : (g + 1) * Ig], kh, kw, stride, padding, dilation)
        cg = codes[g * og : (g + 1) * og].reshape(og, -1)
        y = shift_matmul_int(np.ascontiguousarray(np.swapaxes(cols, 1, 2)), cg, P)  # (N, OH*OW, og)
        outs.append(np.swapaxes(y, 1, 2).reshape(x.shape[0], og, oh, ow))
    return np.concatenate(outs, axis=1).astype(np.int32)


def shift_conv2d_float(x_f32, codes, alpha, stride=1, padding=0, dilation=1, groups=1):
    """Float-activation shift conv2d (NCHW x OIHW codes, per-output-channel alpha) -> float32."""
    x = np.asarray(x_f32, dtype=np.float32)
    og = _conv_groups(x, codes, groups)
    codes = np.asarray(codes)
    alpha = np.asarray(alpha, dtype=np.float32).reshape(-1)
    O, Ig, kh, kw = codes.shape
    outs = []
    for g in range(groups):
        cols, (oh, ow) = im2col_nchw(x[:, g * Ig : (g + 1) * Ig], kh, kw, stride, padding, dilation)
        cg = codes[g * og : (g + 1) * og].reshape(og, -1)
        y = shift_matmul_float(np.swapaxes(cols, 1, 2), cg, alpha[g * og : (g + 1) * og])
        outs.append(np.swapaxes(y, 1, 2).reshape(x.shape[0], og, oh, ow))
    return np.concatenate(outs, axis=1).astype(np.float32)
