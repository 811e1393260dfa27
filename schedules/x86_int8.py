"""An AVX2 int8 dot-product tensor intrinsic (pmaddubsw + pmaddwd) and the int8 GEMM that uses it.

TVM ships x86 int8 intrinsics only for AVX-512 and VNNI. This one covers AVX2 CPUs:

    C[0:8] (int32) += sum_{k<4} A[k] (uint8) * B[0:8, k] (int8)

- ``vpmaddubsw`` multiplies the 32 u8 bytes of A (its 4 bytes broadcast 8 times) by the 32 s8 bytes
  of B and adds adjacent pairs into 16 **saturating** int16 sums;
- ``vpmaddwd`` with a vector of ones adds adjacent int16 pairs into 8 int32 sums, added to C.

**Saturation.** A pair sum ``a0*b0 + a1*b1`` saturates when it leaves [-32768, 32767]; with full-range
operands it can reach 255*127*2 = 64770. The GEMM here keeps it impossible by contract: weights are
in [-64, 64], so ``|a0*b0 + a1*b1| <= 255*64*2 = 32640``. That range holds every shift-equivalent
weight (+-2^p, p <= 6) exactly, and int8 weights quantised to 7 bits (onnxruntime's ``reduce_range``
on AVX2). ``int8_matmul`` checks the constant weights and refuses others.

**Signed activations** are offset to uint8 (``x + 128``), and the offset is removed with a per-column
zero-point correction computed from the constant weights: ``sum_k x*w = sum_k (x+128)*w - 128*sum_k w``.

On CPUs with AVX-512 VNNI a 16-lane ``vpdpbusd`` intrinsic is used instead (it accumulates u8*s8
products in int32 directly: no int16 step, no saturation). TVM ships one (``dot_16x4_vnni``), but with
this LLVM it fails verification (see ``VNNI_DOT_16x4_INTRIN``), so shiftc registers a fixed copy.
"""

from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from shiftc.core.errors import InputError

AVX2_DOT_8x4_INTRIN = "shiftc_dot_8x4_avx2"
WEIGHT_LIMIT = 64  # |w| <= 64 keeps every vpmaddubsw pair sum inside int16


def _dot_desc(lanes: int, group: int, a_dtype: str, b_dtype: str):
    """What every intrinsic here computes: ``C[i] (int32) += sum_{k<group} A[k] * B[i, k]``."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((group,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, group), b_dtype, offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:group], B[0:lanes, 0:group])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, group):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


@T.prim_func(s_tir=True)
def dot_8x4_u8i8i32_avx2(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        # operands inline, not named locals: a local becomes a per-tile workspace allocation
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8), dtype="uint8x32"),
                B.vload([0, 0], dtype="int8x32"), dtype="int16x16"),
            T.int16x16(1), dtype="int32x8",
        )


def _vnni_dot(group: int, a_dtype: str, b_dtype: str, operands: str, llvm_intrinsic: str):
    """A 16-lane AVX-512 VNNI dot step: ``A``'s ``group`` values broadcast to every lane, then one
    ``vpdpbusd`` (u8 x s8 quads) or ``vpdpwssd`` (s16 x s16 pairs) into ``C``."""
    a_word = f"{a_dtype}x{group}"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((group,), a_dtype, offset_factor=1),
        B: T.Buffer((16, group), b_dtype, offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:group], B[0:16, 0:group])
            T.writes(C[0:16])
            # A's word inline, not a named local: a local becomes a per-tile workspace allocation
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], a_word), dtype="int32"), 16), dtype=operands),
                B.vload([0, 0], dtype=operands),
                dtype="int32x16",
            )

    return impl


@T.prim_func(s_tir=True)
def dot_8x2_i16i16i32_avx2(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8), dtype="int16x16"),
            B.vload([0, 0], dtype="int16x16"), dtype="int32x8",
        )


# int16 x int16 pairs (vpmaddwd / vpdpwssd): exact for every int16 weight times an int8-range
# activation (a pair sum is at most 2 * 128 * 2^15 = 2^24); no offset, no saturation.
AVX2_DOT_I16_8x2_INTRIN = "shiftc_dot_i16_8x2_avx2"
VNNI_DOT_I16_16x2_INTRIN = "shiftc_dot_i16_16x2_vnni"

# TVM 0.27's own ``dot_16x4_vnni`` passes <16 x i32> operands to vpdpbusd.512, which this LLVM
# declares with <64 x i8> operands: the module fails LLVM verification. This one uses byte vectors.
VNNI_DOT_16x4_INTRIN = "shiftc_dot_16x4_vnni"


def register() -> None:
    """Register shiftc's x86 int8 intrinsics with TVM (idempotent)."""
    from tvm.s_tir import TensorIntrin

    for name, desc, impl in (
        (AVX2_DOT_8x4_INTRIN, _dot_desc(8, 4, "uint8", "int8"), dot_8x4_u8i8i32_avx2),
        (VNNI_DOT_16x4_INTRIN, _dot_desc(16, 4, "uint8", "int8"), _vnni_dot(4, "uint8", "int8", "int8x64", "llvm.x86.avx512.vpdpbusd.512")),
        (AVX2_DOT_I16_8x2_INTRIN, _dot_desc(8, 2, "int16", "int16"), dot_8x2_i16i16i32_avx2),
        (VNNI_DOT_I16_16x2_INTRIN, _dot_desc(16, 2, "int16", "int16"), _vnni_dot(2, "int16", "int16", "int16x32", "llvm.x86.avx512.vpdpwssd.512")),
    ):
        try:
            TensorIntrin.get(name)
        except Exception:  # noqa: BLE001 - not registered yet
            TensorIntrin.register(name, desc, impl)


register()


def intrinsic_for(target) -> tuple[str, int]:
    """(intrinsic name, output lanes) for an x86 target: VNNI where the CPU has it, else AVX2."""
    from .cpu_features import int8_dot_instruction

    kind = int8_dot_instruction(target)
    if kind == "avx512vnni":
        return VNNI_DOT_16x4_INTRIN, 16
    if kind in ("avxvnni", "avx2"):
        return AVX2_DOT_8x4_INTRIN, 8
    raise InputError(f"target CPU {target.attrs.get('mcpu')} has no AVX2: no x86 int8 dot-product intrinsic")


def int16_intrinsic_for(target) -> tuple[str, int]:
    """(intrinsic name, output lanes) of the int16 pair dot product: VNNI where the CPU has it, else AVX2."""
    from .cpu_features import int8_dot_instruction

    kind = int8_dot_instruction(target)
    if kind == "avx512vnni":
        return VNNI_DOT_I16_16x2_INTRIN, 16
    if kind in ("avxvnni", "avx2"):
        return AVX2_DOT_I16_8x2_INTRIN, 8
    raise InputError(f"target CPU {target.attrs.get('mcpu')} has no AVX2: no x86 int16 dot-product intrinsic")


def pack_weights(w: np.ndarray, lanes: int, group: int = 4) -> np.ndarray:
    """W[N, K] -> W_packed[N/lanes, K/group, lanes, group], the intrinsic's B tile layout."""
    n, k = w.shape
    return np.ascontiguousarray(w.reshape(n // lanes, lanes, k // group, group).transpose(0, 2, 1, 3))


def int8_matmul(m: int, n: int, k: int, target, use_intrinsic: bool = True):
    # use_intrinsic=False gives the same loop nest without tensorize (for comparisons)
    """A PrimFunc ``C[m, n] = X[m, k] (uint8) @ Wp (packed int8 [n, k])^T`` (int32), tensorized.

    Returns (primfunc, lanes). Shapes must tile: n % lanes == 0, k % 4 == 0.
    """
    from tvm import s_tir, te

    name, lanes = intrinsic_for(target)
    if n % lanes or k % 4:
        raise InputError(f"int8 GEMM needs N % {lanes} == 0 and K % 4 == 0, got N={n}, K={k}")
    X = te.placeholder((m, k), "uint8", name="X")
    Wp = te.placeholder((n // lanes, k // 4, lanes, 4), "int8", name="Wp")
    r = te.reduce_axis((0, k), name="k")
    C = te.compute(
        (m, n),
        lambda i, j: te.sum(X[i, r].astype("int32") * Wp[j // lanes, r // 4, j % lanes, r % 4].astype("int32"), axis=r),
        name="C",
    )
    sch = s_tir.Schedule(te.create_prim_func([X, Wp, C]))
    block = sch.get_sblock("C")
    # register tile: rows x (cols x lanes) int32 accumulators in a per-tile buffer
    rows = _divisor(m, (4, 2, 1))
    cols = _divisor(n // lanes, (2, 1)) if lanes == 8 else 1
    acc = sch.cache_write(block, 0, "global")  # small: a stack buffer per parallel iteration
    i, j, kk = sch.get_loops(block)
    i_o, i_i = sch.split(i, [None, rows])
    j_o, j_m, j_i = sch.split(j, [None, cols, lanes])
    k_o, k_i = sch.split(kk, [None, 4])
    sch.reorder(i_o, j_o, k_o, i_i, j_m, j_i, k_i)
    outer = sch.fuse(i_o, j_o)
    sch.parallel(outer)
    sch.reverse_compute_at(acc, outer)
    sch.vectorize(sch.get_loops(acc)[-1])
    init = sch.decompose_reduction(block, k_o)
    sch.vectorize(sch.get_loops(init)[-1])
    if use_intrinsic:
        sch.unroll(i_i)
        sch.unroll(j_m)
        sch.tensorize(j_i, name)
    return sch.mod["main"], lanes


def _divisor(x: int, cands) -> int:
    return next(c for c in cands if x % c == 0)


def signed_matmul_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """NumPy: int8 X[m, k] @ int8 W[n, k]^T in int32."""
    return x.astype(np.int32) @ w.astype(np.int32).T


def signed_matmul(x: np.ndarray, w: np.ndarray, target) -> np.ndarray:
    """int8 X @ W^T through the tensorized GEMM: offset X to uint8, correct with 128*colsum(W)."""
    import tvm

    if intrinsic_for(target)[0] == AVX2_DOT_8x4_INTRIN and np.abs(w.astype(np.int32)).max(initial=0) > WEIGHT_LIMIT:
        raise InputError(f"AVX2 int8 GEMM needs weights in [-{WEIGHT_LIMIT}, {WEIGHT_LIMIT}] (int16 pair sums must not saturate)")
    m, k = x.shape
    n = w.shape[0]
    func, lanes = int8_matmul(m, n, k, target)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    xu = (x.astype(np.int16) + 128).astype(np.uint8)
    out = tvm.runtime.tensor(np.zeros((m, n), np.int32))
    lib["main"](tvm.runtime.tensor(xu), tvm.runtime.tensor(pack_weights(w, lanes)), out)
    return out.numpy() - 128 * w.astype(np.int32).sum(axis=1)[None, :]
