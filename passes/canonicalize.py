"""Canonicalise exported normalisation and activation patterns into one op each (exact).

Rewrites, on what ``tvm.relax.frontend.onnx.from_onnx`` emits:

- LayerNorm written out (opset < 17 exports)::

      mu = mean(x, axes); d = x - mu; v = mean(d ** 2 | d * d, axes)
      y = d / sqrt(v + eps) [* gamma] [+ beta]          ->  nn.layer_norm(x, gamma, beta, axes, eps)

  (``d * rsqrt(v + eps)`` is accepted too; ``axes`` must be the trailing axes.)
- GELU, Erf form ``x * 0.5 * (1 + erf(x / sqrt 2))`` in any product order  ->  ``nn.gelu(x)``.
- GELU, tanh form ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``  ->  ``nn.gelu_tanh(x)``.
- L2 normalisation: ONNX ``ReduceL2`` + (``Clip``/``Max`` by eps) + ``Div``, imported as
  ``x / [broadcast](max(sqrt(sum(x * x, axes)), eps))``  ->  one call to a private Relax function
  ``l2_normalize`` marked ``MarkedFunction("l2_normalize", axes, eps)`` (``shiftc.core.contract``;
  eps 0 when there was no clamp). Its body is the same arithmetic, so the rewrite is
  exact; later passes find the op by the attribute (``graph.op_counts`` counts it by that name).
  ONNX ``LpNormalization`` is not converted by the Relax importer, so the frontend rejects it.
- Bilinear upsampling: ``Resize(mode=linear)`` already imports as one ``image.resize2d``
  (method ``linear``); the pass counts it and leaves it as it is.

Every rewrite requires the pattern's intermediates to have no reader outside the pattern.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import tvm
from tvm import relax

from shiftc.core.contract import MarkedFunction
from shiftc.core.stage import Stage

from .graph import Graph, const_like, count_diff, op_counts, rewrite_main, shape_of

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _near(value, target, rtol=1e-5) -> bool:
    return value is not None and abs(value - target) <= rtol * abs(target)


def _split_const(g: Graph, call: relax.Call):
    """(non-constant operand, constant value) of a binary call with exactly one constant side."""
    a, b = call.args
    ca, cb = g.const(a), g.const(b)
    if ca is None and cb is not None:
        return a, cb
    if cb is None and ca is not None:
        return b, ca
    return None, None


def _channel_const(c: np.ndarray, ndim: int, norm_shape: tuple[int, ...]) -> np.ndarray | None:
    """A constant that varies only over the trailing ``norm_shape`` axes, as an array of that shape."""
    k = len(norm_shape)
    if c.ndim > ndim:
        return None
    c = c.reshape((1,) * (ndim - c.ndim) + c.shape)
    if any(d != 1 for d in c.shape[: ndim - k]):
        return None
    try:
        return np.broadcast_to(c.reshape(c.shape[ndim - k:]), norm_shape).astype(np.float32)
    except ValueError:
        return None


def _trailing_axes(axes, ndim: int) -> list[int] | None:
    ax = sorted(int(a) % ndim for a in axes)
    return ax if ax == list(range(ndim - len(ax), ndim)) else None


def _mean_of(g: Graph, expr, keepdims=True):
    call = g.call(expr, "relax.mean")
    if call is None or bool(call.attrs.keepdims) != keepdims or call.attrs.axis is None:
        return None, None
    return call.args[0], [int(a) for a in call.attrs.axis]


class _LayerNorm:
    """Matches the written-out LayerNorm at its last op; see the module docstring."""

    @staticmethod
    def core(g: Graph, expr):
        """``d / sqrt(v + eps)`` or ``d * rsqrt(v + eps)`` -> (x, axes, eps, interior vars) or None."""
        div = g.call(expr, "relax.divide")
        if div is not None:
            d, s = div.args
            root = g.call(s, "relax.sqrt")
        else:
            mul = g.call(expr, "relax.multiply")
            if mul is None:
                return None
            for d, s in (mul.args, mul.args[::-1]):
                root = g.call(s, "relax.rsqrt")
                if root is not None:
                    break
        if root is None:
            return None
        add = g.call(root.args[0], "relax.add")
        if add is None:
            return None
        v, eps = _split_const(g, add)
        if v is None or eps.size != 1:
            return None
        p, axes = _mean_of(g, v)
        sub = g.call(d, "relax.subtract")
        if p is None or sub is None:
            return None
        pw, sq = g.call(p, "relax.power"), g.call(p, "relax.multiply")
        if not ((pw is not None and pw.args[0].same_as(d) and _near(g.scalar(pw.args[1]), 2.0))
                or (sq is not None and sq.args[0].same_as(d) and sq.args[1].same_as(d))):
            return None
        x, mu = sub.args
        x2, axes2 = _mean_of(g, mu)
        if x2 is None or not x2.same_as(x) or sorted(axes) != sorted(axes2):
            return None
        return x, axes, float(eps.reshape(())), [s, root.args[0], v, p, d, mu]

    @classmethod
    def match(cls, g: Graph, var, value):
        expr, gamma, beta, outer = var, None, None, []
        add = g.call(value, "relax.add")
        if add is not None:
            inner, beta = _split_const(g, add)
            if inner is None:
                return None
            expr, outer = inner, [inner]
        mul = g.call(expr, "relax.multiply")
        mul_gamma = mul is not None and cls.core(g, expr) is None
        if mul_gamma:
            inner, gamma = _split_const(g, mul)
            if inner is None:
                return None
            outer.append(inner)
            expr = inner
        core = cls.core(g, expr)
        if core is None:
            return None
        x, axes, eps, interior = core
        shape = shape_of(x)
        if shape is None or _trailing_axes(axes, len(shape)) is None:
            return None
        axes = _trailing_axes(axes, len(shape))
        norm_shape = tuple(shape[a] for a in axes)
        ones = np.ones(norm_shape, np.float32)
        gamma = ones if gamma is None else _channel_const(gamma, len(shape), norm_shape)
        beta = 0 * ones if beta is None else _channel_const(beta, len(shape), norm_shape)
        if gamma is None or beta is None:
            return None
        pattern = {var, *outer, *interior}
        if not all(g.only_used_by(v, pattern) for v in pattern - {var} if isinstance(v, relax.Var)):
            return None
        if add is None and cls._extended_by_user(g, var, len(shape), norm_shape, has_gamma=mul_gamma):
            return None
        return relax.op.nn.layer_norm(x, const_like(gamma), const_like(beta), axes, epsilon=eps)

    @staticmethod
    def _extended_by_user(g, var, ndim, norm_shape, has_gamma) -> bool:
        """True when the single reader of ``var`` is a gamma/beta of the same LayerNorm (match there)."""
        users = g.users.get(var, [])
        if len(users) != 1 or not isinstance(users[0], relax.Var):
            return False
        for op in ("relax.add",) if has_gamma else ("relax.add", "relax.multiply"):
            call = g.call(users[0], op)
            if call is not None:
                _, c = _split_const(g, call)
                return c is not None and _channel_const(c, ndim, norm_shape) is not None
        return False


def _product(g: Graph, expr):
    """(scalar coefficient, non-constant factors, interior vars) of a product, or None."""
    leaves, inner = g.factors(expr)
    coef, rest = 1.0, []
    for leaf in leaves:
        c = g.const(leaf)
        if c is None:
            rest.append(leaf)
        elif c.size == 1:
            coef *= float(c.reshape(()))
        else:
            return None
    return coef, rest, inner


def _one_plus(g: Graph, expr, op: str):
    """``1 + op(z)`` (single-use) -> z."""
    add = g.call(expr, "relax.add")
    if add is None or g.n_users(expr) != 1:
        return None
    t, one = _split_const(g, add)
    if t is None or not _near(float(one.reshape(())) if one.size == 1 else None, 1.0):
        return None
    call = g.call(t, op)
    return call.args[0] if call is not None and g.n_users(t) == 1 else None


def _is_scaled(g: Graph, z, x, scale: float) -> bool:
    """``z == x * scale`` (as a product, or a division by 1/scale), single-use."""
    if g.n_users(z) != 1:
        return False
    div = g.call(z, "relax.divide")
    if div is not None:
        return div.args[0].same_as(x) and _near(g.scalar(div.args[1]), 1.0 / scale)
    prod = _product(g, z)
    return prod is not None and len(prod[1]) == 1 and prod[1][0].same_as(x) and _near(prod[0], scale)


def _is_tanh_arg(g: Graph, u, x) -> bool:
    """``u == sqrt(2/pi) * (x + 0.044715 * x^3)``."""
    prod = _product(g, u) if g.n_users(u) == 1 else None
    if prod is None or len(prod[1]) != 1 or not _near(prod[0], _SQRT_2_OVER_PI):
        return False
    add = g.call(prod[1][0], "relax.add")
    if add is None or g.n_users(prod[1][0]) != 1:
        return False
    for a, b in (add.args, add.args[::-1]):
        if not a.same_as(x) or g.n_users(b) != 1:
            continue
        cube = _product(g, b)
        if cube is None or not _near(cube[0], 0.044715, 1e-4):
            continue
        xs = cube[1]
        if len(xs) == 3 and all(f.same_as(x) for f in xs):
            return True
        pw = g.call(xs[0], "relax.power") if len(xs) == 1 else None
        if pw is not None and pw.args[0].same_as(x) and _near(g.scalar(pw.args[1]), 3.0) and g.n_users(xs[0]) == 1:
            return True
    return False


def _gelu(g: Graph, var, value):
    if g.call(value, "relax.multiply") is None:
        return None
    prod = _product(g, var)
    if prod is None or len(prod[1]) != 2 or not _near(prod[0], 0.5):
        return None
    for x, f in (prod[1], prod[1][::-1]):
        z = _one_plus(g, f, "relax.erf")
        if z is not None and _is_scaled(g, z, x, 1.0 / _SQRT2):
            return relax.op.nn.gelu(x)
        u = _one_plus(g, f, "relax.tanh")
        if u is not None and _is_tanh_arg(g, u, x):
            return relax.op.nn.gelu_tanh(x)
    return None


def _clamp_eps(g: Graph, expr):
    """``max(n, eps)`` as relax.maximum, relax.clip or the importer's call_tir(maximum) -> (n, eps)."""
    mx = g.call(expr, "relax.maximum")
    if mx is not None:
        n, eps = _split_const(g, mx)
        return (n, float(eps.reshape(()))) if n is not None and eps.size == 1 else (None, None)
    clip = g.call(expr, "relax.clip")
    if clip is not None and g.scalar(clip.args[2]) is not None and math.isinf(g.scalar(clip.args[2])):
        return clip.args[0], g.scalar(clip.args[1])
    tir = g.call(expr, "relax.call_tir")
    if tir is not None and tir.args[0].name_hint.startswith("maximum") and isinstance(tir.args[1], relax.Tuple):
        n, e = tir.args[1].fields
        if g.scalar(e) is not None:
            return n, g.scalar(e)
    return None, None


def _l2_function(ty, axes: list[int], eps: float | None) -> relax.Function:
    x = relax.Var("x", ty)
    bb = relax.BlockBuilder()
    attrs = MarkedFunction("l2_normalize", tuple(axes), float(eps or 0.0)).to_attrs()
    with bb.function("l2_normalize", [x], attrs=attrs, private=True):
        with bb.dataflow():
            ss = bb.emit(relax.op.sum(bb.emit(relax.op.multiply(x, x)), axes, keepdims=True))
            n = bb.emit(relax.op.sqrt(ss))
            if eps is not None:
                n = bb.emit(relax.op.maximum(n, relax.const(eps, ty.dtype)))
            y = bb.emit_output(relax.op.divide(x, n))
        bb.emit_func_output(y)
    return bb.get()["l2_normalize"]


def _l2_normalize(g: Graph, var, value, bb):
    div = g.call(value, "relax.divide")
    if div is None:
        return None
    x, d = div.args
    interior = []
    bc = g.call(d, "relax.broadcast_to")
    if bc is not None:
        interior.append(d)
        d = bc.args[0]
    n, eps = _clamp_eps(g, d)
    if n is not None:
        interior.append(d)
        d = n
    sq = g.call(d, "relax.sqrt")
    sm = g.call(sq.args[0], "relax.sum") if sq is not None else None
    if sm is None or not sm.attrs.keepdims or sm.attrs.axis is None:
        return None
    p = sm.args[0]
    mul, pw = g.call(p, "relax.multiply"), g.call(p, "relax.power")
    if not ((mul is not None and mul.args[0].same_as(x) and mul.args[1].same_as(x))
            or (pw is not None and pw.args[0].same_as(x) and _near(g.scalar(pw.args[1]), 2.0))):
        return None
    interior += [d, sq.args[0], p]
    if not all(g.only_used_by(v, {var, *interior}) for v in interior if isinstance(v, relax.Var)):
        return None
    if shape_of(x) is None:
        return None
    ndim = len(shape_of(x))
    axes = sorted(int(a) % ndim for a in sm.attrs.axis)
    fn = bb.add_func(_l2_function(x.ty, axes, eps), "l2_normalize")
    return relax.Call(fn, [x])


def _constant_transpose(value):
    """``permute_dims(W)`` of a constant (ONNX Gemm with transB) -> the transposed constant."""
    if not (isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.permute_dims")):
        return None
    (w,) = value.args
    if not isinstance(w, tvm.ir.expr.Constant):
        return None
    axes = None if value.attrs.axes is None else [int(a) for a in value.attrs.axes]
    return relax.const(np.ascontiguousarray(np.transpose(w.value.numpy(), axes)))


def _rule(g: Graph, var, value, bb):
    for match in (lambda: _constant_transpose(value), lambda: _LayerNorm.match(g, var, value), lambda: _gelu(g, var, value), lambda: _l2_normalize(g, var, value, bb)):
        new = match()
        if new is not None:
            return new
    return None


@tvm.transform.module_pass(opt_level=0, name="shiftc.Canonicalize")
class Canonicalize:
    """Replace written-out LayerNorm, GELU (erf, tanh) and L2 normalisation by one op each, and
    fold transposes of constant weights (then inline constant bindings), so a Gemm's weight is a
    constant operand of its matmul. Exact; see the module docstring."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return relax.transform.CanonicalizeBindings()(rewrite_main(mod, _rule))


def canonicalize(mod):
    """``Canonicalize()`` applied to ``mod`` (for scripts and tests)."""
    return Canonicalize()(mod)


def linear_resizes(mod, func_name: str = "main") -> int:
    """Bilinear ``image.resize2d`` calls (already one op each)."""
    n = 0
    for block in mod[func_name].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.image.resize2d" and v.attrs.method == "linear":
                n += 1
    return n


def summarise(before: Counter, after: Counter, mod) -> dict:
    return {
        "ops_changed": count_diff(before, after),
        "single_ops": {op: after.get(op, 0) for op in ("nn.layer_norm", "nn.gelu", "nn.gelu_tanh", "l2_normalize")},
        "resize2d_linear": linear_resizes(mod),
    }


def apply(mod, ctx):
    """Pipeline stage: canonicalise and record op counts before/after."""
    before = op_counts(mod)
    mod = Canonicalize()(mod)
    ctx.report.summary.update(summarise(before, op_counts(mod), mod))
    return mod


STAGE = Stage("canonicalize", lambda o: o.canonicalize, apply)
