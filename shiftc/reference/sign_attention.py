"""Add-only attention (ShiftAddViT, You et al. 2023): the integer truth of its two ops.

Queries and keys are binarised by ``sign`` (ONNX ``Sign``: -1, 0 or +1). A matmul with a sign
operand needs no multiplication: every product ``s * v`` is ``v``, ``-v`` or ``0``, so

    sign_matmul(s, v)[..., i, j] = sum_k select(s[..., i, k] > 0, v[..., k, j],
                                               select(s[..., i, k] < 0, -v[..., k, j], 0))

is a sum of selected, possibly negated, integers (adds only). Linear attention (``Kᵀ·V`` first,
then ``Q·(KᵀV)``) chains two of them; ``sign_matmul(s, v)`` with ``s`` a sign tensor and ``v`` any
integer tensor (int8 ... int32), accumulated in int32. The bound ``K * max|v|`` must fit int32
(:func:`sign_matmul_bound`); :func:`sign_matmul` refuses inputs whose bound does not.
"""

from __future__ import annotations

import numpy as np

INT32_MAX = 2**31 - 1

__all__ = ["sign_int", "sign_matmul", "sign_matmul_bound"]


def sign_int(x) -> np.ndarray:
    """``sign(x)`` of integers as int8 in {-1, 0, 1} (ONNX Sign; ``sign(0) = 0``)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"sign_int: integer input required, got {x.dtype}")
    return np.sign(x.astype(np.int64)).astype(np.int8)


def sign_matmul_bound(k: int, v_max_abs: int) -> int:
    """Worst ``|sign_matmul|`` over a ``k``-term reduction of values with ``|v| <= v_max_abs``."""
    return int(k) * int(v_max_abs)


def sign_matmul(s, v) -> np.ndarray:
    """int32 ``s @ v`` for a sign tensor ``s`` (values in {-1, 0, 1}) and integers ``v``
    (matmul broadcasting over leading axes), computed with selects and adds only."""
    s, v = np.asarray(s), np.asarray(v)
    if not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(v.dtype, np.integer)):
        raise TypeError("sign_matmul: integer inputs required")
    if s.size and (s.min() < -1 or s.max() > 1):
        raise ValueError("sign_matmul: the sign operand must hold -1, 0 or 1 only")
    k = s.shape[-1]
    if v.shape[-2] != k:
        raise ValueError(f"sign_matmul: reduction sizes differ ({k} vs {v.shape[-2]})")
    vmax = int(np.abs(v.astype(np.int64)).max(initial=0))
    if sign_matmul_bound(k, vmax) > INT32_MAX:
        raise OverflowError(f"sign_matmul: {k} x {vmax} can leave int32")
    v64 = v.astype(np.int64)
    pos = (s > 0)[..., :, :, None]  # (..., i, k, 1)
    neg = (s < 0)[..., :, :, None]
    vk = v64[..., None, :, :]  # (..., 1, k, j)
    terms = np.where(pos, vk, np.where(neg, -vk, 0))
    return terms.sum(axis=-2).astype(np.int32)
