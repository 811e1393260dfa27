"""TE kernels of add-only attention (ShiftAddViT): ``sign`` and the select-and-add matmul of a
sign tensor. NumPy truth: :mod:`shiftc.reference.sign_attention`.

Neither kernel multiplies: ``sign_int`` compares, and ``sign_matmul`` selects ``v``, ``-v`` (as
``(v ^ -1) + 1``) or ``0`` per term and sums in int32 (tests/test_shift_tir.py scans the lowered TIR for it).
"""

from __future__ import annotations

from tvm import te
from tvm import tirx as tir

from shiftc.reference.sign_attention import INT32_MAX, sign_matmul_bound

__all__ = ["sign_int", "sign_matmul"]


def sign_int(x: te.Tensor) -> te.Tensor:
    """int8 ``sign(x)`` in {-1, 0, 1} of an integer tensor (compares and selects only)."""
    one, zero, minus = tir.const(1, "int8"), tir.const(0, "int8"), tir.const(-1, "int8")
    return te.compute(x.shape, lambda *i: tir.Select(x(*i) > 0, one, tir.Select(x(*i) < 0, minus, zero)),
                      name="sign_int")


def _batch_index(shape, idx):
    """Leading indices of an operand of ``shape`` (a size-1 axis broadcasts)."""
    lead = len(shape) - 2
    return [0 if int(d) == 1 else i for d, i in zip(shape[:lead], idx[len(idx) - 2 - lead:len(idx) - 2])]


def sign_matmul(s: te.Tensor, v: te.Tensor, v_max_abs: int) -> te.Tensor:
    """int32 ``s @ v`` for a sign tensor ``s`` (..., I, K) and integers ``v`` (..., K, J), as
    ``sum_k select(s != 0, (v ^ m) - m, 0)`` with ``m = -1`` where ``s < 0`` else 0 (the
    two's-complement negate of the shift kernels: no multiply by -1; matmul broadcasting).
    ``v_max_abs``: the proven ``max |v|``; the kernel refuses ``K * v_max_abs > 2**31 - 1``."""
    n_k = int(s.shape[-1])
    if int(v.shape[-2]) != n_k:
        raise ValueError(f"sign_matmul: reduction sizes differ ({n_k} vs {int(v.shape[-2])})")
    if sign_matmul_bound(n_k, v_max_abs) > INT32_MAX:
        raise OverflowError(f"sign_matmul: {n_k} x {v_max_abs} can leave int32")
    lead_s, lead_v = [int(d) for d in s.shape[:-2]], [int(d) for d in v.shape[:-2]]
    rank = max(len(lead_s), len(lead_v))
    pad_s, pad_v = [1] * (rank - len(lead_s)) + lead_s, [1] * (rank - len(lead_v)) + lead_v
    lead = [max(a, b) for a, b in zip(pad_s, pad_v)]
    out_shape = [*lead, int(s.shape[-2]), int(v.shape[-1])]
    k = te.reduce_axis((0, n_k), name="k")

    def term(*idx):
        i, j = idx[-2], idx[-1]
        si = _batch_index(s.shape, idx) + [i, k]
        vi = _batch_index(v.shape, idx) + [k, j]
        sv, vv = s(*si), v(*vi).astype("int32")
        m = tir.Select(sv < 0, tir.const(-1, "int32"), tir.const(0, "int32"))  # two's-complement negate mask
        return te.sum(tir.Select(sv != 0, (vv ^ m) - m, tir.const(0, "int32")), axis=k)

    return te.compute(out_shape, term, name="sign_matmul")
