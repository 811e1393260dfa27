"""Adding a float constant (a bias) to an integer accumulator without leaving int32
(docs/NUMERICS.md §2.8, "a constant add").

``q`` holds codes at scale ``s`` (per tensor, or per channel along ``axis``) with a proven bound
``|q| <= b``; the constant ``c`` enters as int32 codes ``round(c / s)``. When a channel's
``b + max|c / s|`` could leave int32 (a bias far larger than the channel's accumulator step: a
near-dead weight channel), that channel -- and only that one -- is first narrowed by the smallest
round-half-up shift ``r`` that makes room, and its scale becomes ``s * 2**r``. A channel that
would need ``r > 62`` (no defined shift) has its accumulator dropped (multiplier 0): there the
accumulator is below ``2**-31`` of the constant, and the channel's value is the constant alone.

Both are one ``requantize(q, m, e, 32, axis)`` with ``(m, e) = (1, r)`` or ``(0, 1)`` per channel,
followed by an int32 add of the constant's codes; :func:`add_constant_int` is the integer truth.
"""

from __future__ import annotations

import numpy as np

from .quant import round_half_up
from .rounding import INT32_MAX, requantize

__all__ = ["constant_room", "add_constant_int", "MAX_ROOM_SHIFT"]

MAX_ROOM_SHIFT = 62


def _fits(b: int, t: float, r: int) -> bool:
    return ((b + ((1 << r) >> 1)) >> r) + t / 2.0**r + 1 <= INT32_MAX


def constant_room(bound, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel ``(m, e, r)``: the narrowing of an accumulator bounded by ``bound`` (int per
    channel) before adding constant codes of magnitude up to ``t`` (float per channel,
    ``max|c / s|``). ``r`` is the scale exponent (new scale ``s * 2**r``); ``m = 0`` drops a
    channel whose ``r`` would exceed 62."""
    bound = np.atleast_1d(np.asarray(bound, np.int64))
    t = np.atleast_1d(np.asarray(t, np.float64))
    bound, t = np.broadcast_arrays(bound, t)
    m, e, r = np.ones(t.shape, np.int64), np.zeros(t.shape, np.int64), np.zeros(t.shape, np.int64)
    for i, (b, ti) in enumerate(zip(bound.reshape(-1), t.reshape(-1))):
        k = 0
        while k <= MAX_ROOM_SHIFT and not _fits(int(b), float(ti), k):
            k += 1
        if k > MAX_ROOM_SHIFT:  # the accumulator is negligible: the constant alone, at a scale it fits
            k = 0
            while not _fits(0, float(ti), k):
                k += 1
            m.flat[i], e.flat[i] = 0, 1
        else:
            e.flat[i] = k
        r.flat[i] = k
    return m, e, r


def add_constant_int(q, c, scale, bound, axis=None):
    """``q + c`` as the integeriser computes it: returns ``(codes int32, scale)``.

    ``q``: integer codes (``|q| <= bound``, ``|q| < 2**62``); ``c``: the float constant (broadcast
    to ``q``); ``scale``: float, or per-channel along ``axis`` (``bound`` then per channel too)."""
    q = np.asarray(q)
    c = np.broadcast_to(np.asarray(c, np.float64), q.shape)
    per_axis = axis is not None
    s = np.atleast_1d(np.asarray(scale, np.float64))
    shape = [1] * q.ndim
    if per_axis:
        shape[axis % q.ndim] = -1
        red = tuple(i for i in range(q.ndim) if i != axis % q.ndim)
        t = np.max(np.abs(c / s.reshape(shape)), axis=red) if q.size else np.zeros(s.shape)
    else:
        t = np.max(np.abs(c / s[0]), initial=0.0)
    m, e, r = constant_room(bound, t)
    if per_axis:
        z = requantize(q, m, e, 32, axis=axis)
    else:
        z = requantize(q, int(m[0]), int(e[0]), 32)
    new_scale = s * 2.0 ** r.astype(np.float64)
    cq = round_half_up(c / new_scale.reshape(shape) if per_axis else c / new_scale[0]).astype(np.int64)
    out = z.astype(np.int64) + cq
    if np.abs(out).max(initial=0) > INT32_MAX:
        raise OverflowError("constant add left int32")  # unreachable: constant_room made room
    return out.astype(np.int32), (new_scale if per_axis else float(new_scale[0]))
