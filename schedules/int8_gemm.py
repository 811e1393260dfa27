"""Integer pointwise convolutions and matmuls on x86's dot-product instructions (AVX2 / AVX-512 VNNI).

A per-target kernel-form pass: it lives in ``schedules`` (not ``passes``) because it chooses how a
target runs a kernel, after the model-level passes have fixed what the model computes.
``UseInt8DotIntrinsic(target)`` (``shiftc.UseInt8DotIntrinsic``) rewrites::

    conv2d(x_i8, W_i8) [NHWC, HWIO, 1x1, stride 1, int32 out]   (also matmul(x_i8, W_i8))
        ->  int8_dot_gemm(u8(x + 128), pack(W, 4)) - 128 * colsum(W)
    conv2d(x_u8, W_i8) / matmul(x_u8, W_i8)      (unsigned activations)
        ->  int8_dot_gemm(x, pack(W, 4))
    conv2d(x_i16, W_i16) / matmul(x_i16, W_i16)
        ->  int16_dot_gemm(x, pack(W, 2))

``vpmaddubsw`` / ``vpdpbusd`` multiply unsigned by signed bytes, so a signed int8 activation is
offset to uint8 and the offset removed with a per-output-channel constant: ``sum_k x*w = sum_k
(x+128)*w - 128 * sum_k w``, exact in int32; an activation already uint8 goes in as it is. int16 operands (the shift dot form's ``+-2^q`` weights
with ``q = 7``, see ``shift_dot``) use ``vpmaddwd`` / ``vpdpwssd`` on signed pairs directly. ``W``
is packed to the intrinsic's tile ``[N/L, K/g, L, g]`` (``x86_int8.pack_weights``). The GEMM is an
out-elementwise-fusable TE kernel, so the correction, bias, clamps and requantiser after it fuse
into its kernel; ``schedule_in_place`` below tiles it and tensorizes the inner ``L x g`` step.

Applies where it is exact and tiles: constant weights, ``N % L == 0``, ``K % g == 0``. On AVX2 (no
VNNI) the u8 x s8 form needs ``|W| <= 64``, so no ``vpmaddubsw`` int16 pair sum saturates
(``x86_int8`` module doc); int8 weights beyond that (every full-range per-channel int8 layer) take
the int16 pair form instead::

    conv2d(x_i8/u8, W_i8) / matmul(x_i8/u8, W_i8)  with |W| > 64, AVX2
        ->  int16_dot_gemm(i16(x), pack(i16(W), 2))

exact (a pair sum is at most ``2 * 255 * 128``) and still on ``vpmaddwd`` (16 products per
instruction, as many as ``vpmaddubsw`` + ``vpmaddwd`` give per instruction); the widening ``astype``
fuses into the kernel that produces ``x``. int16 activations must be int8-range values widened
(true of the shift dot form and of the widened int8 above), so a pair sum is at most ``2 * 128 * 2^15``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te

from shiftc.core.relax_rewrite import rewrite_bindings

from . import x86_int8

OUT_EWISE_FUSABLE = 4  # TVM's OpPatternKind.kOutEWiseFusable
# block name -> (pair/quad size g, the intrinsic for a target)
FORMS = {"int8_dot_gemm": (4, x86_int8.intrinsic_for), "int16_dot_gemm": (2, x86_int8.int16_intrinsic_for)}


def gemm_te(x: te.Tensor, wp: te.Tensor, lanes: int, group: int, name: str) -> te.Tensor:
    """``out[..., n] = sum_k x[..., k] * W[n, k]`` with ``W`` packed ``[N/L, K/g, L, g]`` (int32)."""
    *lead, K = (int(d) for d in x.shape)
    N = int(wp.shape[0]) * lanes
    r = te.reduce_axis((0, K), name="k")
    return te.compute(
        (*lead, N),
        lambda *i: te.sum(x[(*i[:-1], r)].astype("int32") * wp[i[-1] // lanes, r // group, i[-1] % lanes, r % group].astype("int32"), axis=r),
        name=name,
    )


def _const(var2val, e) -> np.ndarray | None:
    e = var2val.get(e, e) if isinstance(e, relax.Var) else e
    return e.value.numpy() if isinstance(e, tvm.ir.expr.Constant) else None


def _dtype(e) -> str:
    return str(e.ty.dtype)


class _GemmRule:
    """The binding rule of one Relax function: qualifying convs / matmuls -> the GEMM kernel."""

    def __init__(self, lanes: dict, var2val: dict, weight_limit: int | None):
        self.lanes, self.var2val, self.weight_limit = lanes, var2val, weight_limit

    def _weights_nk(self, call) -> tuple[str, np.ndarray] | None:
        """The GEMM form and (N, K) weights of a pointwise NHWC conv or a matmul, if it qualifies."""
        name = call.op.name if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) else ""
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
        types = (_dtype(call.args[0]), str(w.dtype))
        name = {("int8", "int8"): "int8_dot_gemm", ("uint8", "int8"): "int8_dot_gemm",
                ("int16", "int16"): "int16_dot_gemm"}.get(types)
        if name is None:
            return None
        n, k = w.shape
        if name == "int8_dot_gemm" and self.weight_limit is not None and np.abs(w.astype(np.int32)).max(initial=0) > self.weight_limit:
            name, w = "int16_dot_gemm", w.astype(np.int16)  # vpmaddubsw could saturate: int16 pairs (module doc)
        if n % self.lanes[name] or k % FORMS[name][0]:
            return None
        return name, w

    def __call__(self, _var, call, bb):
        found = self._weights_nk(call)
        if found is None:
            return None
        name, w = found
        group, lanes = FORMS[name][0], self.lanes[name]
        x = call.args[0]
        offset = name == "int8_dot_gemm" and _dtype(x) == "int8"  # uint8 activations go in as they are
        if name == "int16_dot_gemm" and _dtype(x) != "int16":  # int8 weights too wide for vpmaddubsw
            x = bb.emit(relax.op.astype(x, "int16"))
        if offset:
            x = bb.emit(relax.op.astype(relax.op.add(relax.op.astype(x, "int16"), relax.const(128, "int16")), "uint8"))
        packed = relax.const(x86_int8.pack_weights(w, lanes, group), str(w.dtype))
        y = bb.call_te(gemm_te, x, packed, lanes=lanes, group=group, name=name, primfunc_name_hint=name,
                         primfunc_attrs={"op_pattern": OUT_EWISE_FUSABLE})
        if not offset:
            return y  # the binding's own value (an alias of an emitted var would not fuse)
        return relax.op.subtract(bb.emit(y), relax.const(128 * w.astype(np.int32).sum(axis=1), "int32"))


@tvm.transform.module_pass(opt_level=0, name="shiftc.UseInt8DotIntrinsic")
class UseInt8DotIntrinsic:
    """Qualifying integer pointwise convs / matmuls become the tensorizable GEMM (module doc)."""

    def __init__(self, target):
        from .cpu_features import int8_dot_instruction

        self.target, self.kind = target, int8_dot_instruction(target)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if self.kind == "none":
            return mod
        lanes = {name: pick(self.target)[1] for name, (_, pick) in FORMS.items()}
        limit = None if self.kind == "avx512vnni" else x86_int8.WEIGHT_LIMIT
        out, count = rewrite_bindings(mod, lambda func: _GemmRule(lanes, relax.analysis.get_var2val(func), limit))
        return relax.transform.DeadCodeElimination()(out) if count else mod


def _divisor(x: int, cands) -> int:
    return next(c for c in cands if x % c == 0)


# Register budget of the micro-kernel: rows x cols accumulator vectors plus the broadcast row
# value, the weight vectors and the intrinsic's temporaries must fit the vector register file
# (32 zmm with AVX-512, 16 ymm with AVX2). Measured on a VNNI Xeon: 16 zmm accumulators beat 12,
# and 20-24 gained nothing (docs/BENCHMARKS.md, "int8 GEMM against the VNNI peak").
ACCUMULATORS = {16: 16, 8: 8}  # lanes -> accumulator vectors
MAX_ROWS = 8  # rows per micro-kernel (each a broadcast row value)
# TVM places a per-tile buffer on the stack below this size, else it allocates (and frees) a
# workspace per tile: that cost ~40 % on a K = 32 GEMM here
STACK_TILE_BYTES = 1024


def _best_tile(m: int, n_tiles: int, budget: int) -> tuple[int, int]:
    best = (1, 1)
    for rows in range(min(m, MAX_ROWS), 0, -1):
        if m % rows:
            continue
        cols = _divisor(n_tiles, range(min(n_tiles, 4, budget // rows), 0, -1))
        if rows * cols > best[0] * best[1]:
            best = (rows, cols)
    return best


def register_tile(m: int, n_tiles: int, lanes: int, fused: bool = False) -> tuple[int, int]:
    """(rows, column tiles) of the register-blocked micro-kernel: the most accumulators within
    the budget whose sizes divide ``m`` rows and ``n_tiles`` column tiles (ties: more rows, each
    weight vector loaded once serves every row). ``fused``: an epilogue reads the int32 tile, which
    becomes a per-tile buffer; a tile under ``STACK_TILE_BYTES`` (on the stack) is preferred when
    it keeps at least 3/4 of the accumulators."""
    budget = ACCUMULATORS.get(lanes, 8)
    full = _best_tile(m, n_tiles, budget)
    if not fused:
        return full
    # within the register budget too: with 8 lanes the stack bound alone allows 31 accumulators
    small = _best_tile(m, n_tiles, min(budget, (STACK_TILE_BYTES - 1) // (4 * lanes)))
    return small if 4 * small[0] * small[1] >= 3 * full[0] * full[1] else full


def _inline_epilogue(sch, gemm):
    """Inline the elementwise blocks around the GEMM; the one left writing the output (if any)."""
    root = sch.get_sblock("root")
    others = lambda: [b for b in sch.get_child_blocks(root) if not sch.get(b).same_as(sch.get(gemm))]  # noqa: E731
    for b in others():  # elementwise epilogue steps into their consumers (a DAG of them too)
        try:
            sch.compute_inline(b)
        except Exception:  # noqa: BLE001 - writes a function output: stays
            pass
    rest = others()
    for b in reversed(rest[1:]):
        sch.reverse_compute_inline(b)
    return rest[0] if rest else None


def _vectorize_epilogue(sch, epilogue, par, lanes: int) -> None:
    sch.reverse_compute_at(epilogue, par)
    inner = sch.get_loops(epilogue)[1:]
    if inner:
        fused = sch.fuse(*inner)
        if int(sch.get(fused).extent) % lanes == 0:
            sch.vectorize(sch.split(fused, [None, lanes])[1])


def schedule_in_place(sch, target) -> bool:
    """Tile and tensorize a fused PrimFunc holding a GEMM block of ``FORMS``; False if it has none.

    Loop nest: ``parallel(column blocks x outer rows) / k by 4 / rows (unrolled) / column tiles
    (unrolled) / L lanes x 4 (the intrinsic)``: a register-blocked micro-kernel whose ``rows x
    cols`` accumulators (``register_tile``) stay in vector registers across all of K, each weight
    vector loaded once for ``rows`` dot steps, each broadcast row value for ``cols``. Column blocks
    outermost: one block's packed weights (``K x cols x L`` values) stay in L1/L2 while every row
    block passes. The fused epilogue runs per tile, vectorised.
    """
    names = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    block = next((n for n in FORMS if n in names), None)
    if block is None:
        return False
    gemm = sch.get_sblock(block)
    group, pick = FORMS[block]
    name, lanes = pick(target)
    epilogue = _inline_epilogue(sch, gemm)
    *lead, j, kk = sch.get_loops(gemm)
    m_inner = int(sch.get(lead[-1]).extent) if lead else 1
    rows, cols = register_tile(m_inner, int(sch.get(j).extent) // lanes, lanes, fused=epilogue is not None)
    outer = list(lead[:-1])
    if lead:
        i_o, i_i = sch.split(lead[-1], [None, rows])
        outer.append(i_o)
    j_o, j_m, j_i = sch.split(j, [None, cols, lanes])
    k_o, k_i = sch.split(kk, [None, group])
    tile = [i_i] if lead else []
    sch.reorder(j_o, *outer, k_o, *tile, j_m, j_i, k_i)
    par = sch.fuse(j_o, *outer)
    sch.parallel(par)
    if epilogue is not None:
        _vectorize_epilogue(sch, epilogue, par, lanes)
    init = sch.decompose_reduction(gemm, k_o)
    sch.vectorize(sch.get_loops(init)[-1])
    for loop in (*tile, j_m):
        sch.unroll(loop)
    sch.tensorize(j_i, name)
    return True
