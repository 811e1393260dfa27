"""int8 pointwise convolutions and matmuls on x86's dot-product instructions (AVX2 / AVX-512 VNNI).

    conv2d(x_i8, W_i8) [NHWC, HWIO, 1x1, stride 1, int32 out]   (also matmul(x_i8, W_i8))
        ->  int8_dot_gemm(u8(x + 128), pack(W)) - 128 * colsum(W)

``vpmaddubsw`` / ``vpdpbusd`` multiply unsigned by signed bytes, so the signed activation is offset
to uint8 and the offset removed with a per-output-channel constant: ``sum_k x*w = sum_k (x+128)*w
- 128 * sum_k w``, exact in int32. ``W`` is packed to the intrinsic's tile ``[N/L, K/4, L, 4]``
(``x86_int8.pack_weights``). The GEMM is an out-elementwise-fusable TE kernel, so the correction,
bias, clamps and requantiser after it fuse into its kernel; ``schedule_in_place`` below tiles it and
tensorizes the inner ``L x 4`` step with ``x86_int8``'s intrinsic.

Applies where it is exact and tiles: constant int8 weights, ``N % L == 0``, ``K % 4 == 0``, and on
AVX2 (no VNNI) ``|W| <= 64`` so no int16 pair sum saturates (``x86_int8`` module doc). The shift
dot form's weights ``+-2^q`` qualify up to ``q = 6`` (int8); wider ones are int16 and stay on the
default schedule.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te

from . import x86_int8

BLOCK = "int8_dot_gemm"
OUT_EWISE_FUSABLE = 4  # TVM's OpPatternKind.kOutEWiseFusable


def gemm_te(xu: te.Tensor, wp: te.Tensor, lanes: int) -> te.Tensor:
    """``out[..., n] = sum_k xu[..., k] * W[n, k]`` with ``W`` packed ``[N/L, K/4, L, 4]`` (int32)."""
    *lead, K = (int(d) for d in xu.shape)
    N = int(wp.shape[0]) * lanes
    r = te.reduce_axis((0, K), name="k")
    return te.compute(
        (*lead, N),
        lambda *i: te.sum(xu[(*i[:-1], r)].astype("int32") * wp[i[-1] // lanes, r // 4, i[-1] % lanes, r % 4].astype("int32"), axis=r),
        name=BLOCK,
    )


def _const(var2val, e) -> np.ndarray | None:
    e = var2val.get(e, e) if isinstance(e, relax.Var) else e
    return e.value.numpy() if isinstance(e, tvm.ir.expr.Constant) else None


def _dtype(e) -> str:
    return str(e.ty.dtype)


@relax.expr_functor.mutator
class _Lowering(relax.PyExprMutator):
    def __init__(self, mod, var2val, lanes: int, weight_limit: int | None):
        super().__init__(mod)
        self.var2val, self.lanes, self.weight_limit = var2val, lanes, weight_limit
        self.count = 0

    def _weights_nk(self, call) -> np.ndarray | None:
        """The (N, K) int8 weight matrix of a pointwise NHWC conv or a matmul, if it qualifies."""
        name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
        if name == "relax.nn.conv2d":
            at = call.attrs
            if (at.data_layout, at.kernel_layout, str(at.out_dtype)) != ("NHWC", "HWIO", "int32") or int(at.groups) != 1:
                return None
            if any(int(s) != 1 for s in (*at.strides, *at.dilation)) or any(int(p) for p in at.padding):
                return None
            w = _const(self.var2val, call.args[1])
            if w is None or w.shape[:2] != (1, 1):
                return None
            w = w[0, 0].T  # HWIO -> (O, I)
        elif name == "relax.matmul":
            if str(call.attrs.out_dtype) != "int32":
                return None
            w = _const(self.var2val, call.args[1])
            if w is None or w.ndim != 2:
                return None
            w = w.T
        else:
            return None
        if _dtype(call.args[0]) != "int8" or w.dtype != np.int8:
            return None
        n, k = w.shape
        if n % self.lanes or k % 4:
            return None
        if self.weight_limit is not None and np.abs(w.astype(np.int32)).max(initial=0) > self.weight_limit:
            return None
        return w

    def visit_call_(self, call):
        call = super().visit_call_(call)
        w = self._weights_nk(call)
        if w is None:
            return call
        x = call.args[0]
        xu = self.builder_.emit(relax.op.astype(relax.op.add(relax.op.astype(x, "int16"), relax.const(128, "int16")), "uint8"))
        packed = relax.const(x86_int8.pack_weights(w, self.lanes), "int8")
        y = self.builder_.emit(self.builder_.call_te(gemm_te, xu, packed, lanes=self.lanes, primfunc_name_hint=BLOCK,
                                                     primfunc_attrs={"op_pattern": OUT_EWISE_FUSABLE}))
        self.count += 1
        return relax.op.subtract(y, relax.const(128 * w.astype(np.int32).sum(axis=1), "int32"))


def UseInt8DotIntrinsic(target) -> tvm.transform.Pass:  # noqa: N802 (TVM pass style)
    """Module pass: qualifying int8 pointwise convs / matmuls become the tensorizable GEMM (module doc)."""
    from .cpu_features import int8_dot_instruction

    kind = int8_dot_instruction(target)

    @tvm.transform.module_pass(opt_level=0, name="shiftc.UseInt8DotIntrinsic")
    def _pass(mod, _ctx):
        if kind == "none":
            return mod
        _, lanes = x86_int8.intrinsic_for(target)
        limit = None if kind == "avx512vnni" else x86_int8.WEIGHT_LIMIT
        lowering = _Lowering(mod, {}, lanes, limit)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                lowering.var2val = relax.analysis.get_var2val(func)
                lowering.builder_.update_func(gv, lowering.visit_expr(func))
        if not lowering.count:
            return mod
        return relax.transform.DeadCodeElimination()(lowering.builder_.get())

    return _pass


def _divisor(x: int, cands) -> int:
    return next(c for c in cands if x % c == 0)


def schedule_in_place(sch, target) -> bool:
    """Tile and tensorize a fused PrimFunc holding an ``int8_dot_gemm`` block; False if it has none.

    Loop nest: ``parallel(outer rows x column tiles) / k by 4 / rows (unrolled) / column tiles
    (unrolled) / L lanes x 4 (the intrinsic)``; the fused epilogue runs per tile, vectorised.
    """
    try:
        gemm = sch.get_sblock(BLOCK)
    except Exception:  # noqa: BLE001 - not an int8 GEMM kernel
        return False
    name, lanes = x86_int8.intrinsic_for(target)
    root = sch.get_sblock("root")
    rest = [b for b in sch.get_child_blocks(root) if not sch.get(b).same_as(sch.get(gemm))]
    for b in reversed(rest[1:]):
        sch.reverse_compute_inline(b)
    epilogue = rest[0] if rest else None
    *lead, j, kk = sch.get_loops(gemm)
    m_inner = int(sch.get(lead[-1]).extent) if lead else 1
    rows = _divisor(m_inner, (4, 2, 1))
    n = int(sch.get(j).extent)
    cols = _divisor(n // lanes, (4, 2, 1))  # rows x cols accumulator vectors stay in registers
    outer = list(lead[:-1])
    if lead:
        i_o, i_i = sch.split(lead[-1], [None, rows])
        outer.append(i_o)
    j_o, j_m, j_i = sch.split(j, [None, cols, lanes])
    k_o, k_i = sch.split(kk, [None, 4])
    tile = [i_i] if lead else []
    sch.reorder(*outer, j_o, k_o, *tile, j_m, j_i, k_i)
    par = sch.fuse(*outer, j_o)
    sch.parallel(par)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, par)
        inner = sch.get_loops(epilogue)[1:]
        if inner:
            fused = sch.fuse(*inner)
            ext = int(sch.get(fused).extent)
            if ext % lanes == 0:
                sch.vectorize(sch.split(fused, [None, lanes])[1])
    init = sch.decompose_reduction(gemm, k_o)
    sch.vectorize(sch.get_loops(init)[-1])
    for loop in (*tile, j_m):
        sch.unroll(loop)
    sch.tensorize(j_i, name)
    return True
