"""Fold inference-time normalisation into neighbouring linear ops (exact).

- **BatchNorm -> the preceding conv2d or conv2d_transpose** (backward)::

      batch_norm(conv2d(x, W) [+ b], gamma, beta, mean, var, eps)[0]
        ->  conv2d(x, W * s[o]) + ((b - mean) * s + beta),   s = gamma / sqrt(var + eps)

  (a ``conv2d_transpose`` with one group scales its IOHW weight along axis 1, the output channel).

  Only when the conv's output has no other reader: folding into a producer whose output also
  feeds a residual path would change that path. Such cases are skipped and noted in the report.
- **Per-channel affine -> its consumers** (forward), Unified Normalization's inference form
  ``y = x * s + beta`` (a ``multiply`` by a constant, optionally followed by an ``add`` of a
  constant, or a ``batch_norm`` that no conv absorbed), when *every* reader of ``y`` is linear:

      matmul(y, W)           ->  matmul(x, diag(s) W) + beta W        (affine on the last axis)
      conv2d(y, W), pad 0    ->  conv2d(x, W * s[i]) + sum(W * beta[i])  (axis 1, groups 1)

  An existing constant bias add after the consumer absorbs the new bias. Weights are computed in
  float64 and stored as float32, so outputs change only by float round-off. A padded conv is
  skipped unless ``beta == 0`` (its zero padding would not see ``beta``).
- An affine read only by a ``mean`` over non-channel axes (a ViT's token mean-pool before its
  head) is moved past it, ``mean(x s + beta) = mean(x) s + beta``, and then folded into the head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from shiftc.core.stage import Stage

from .graph import Graph, const_like, count_diff, op_counts, rewrite_main, shape_of


@dataclass
class Affine:
    """``out = x * scale + shift`` along ``axis`` (vectors of the channel count)."""

    out: relax.Var
    x: relax.Expr
    scale: np.ndarray
    shift: np.ndarray
    axis: int
    interior: list = field(default_factory=list)
    kind: str = "affine"


def _channel_vec(c: np.ndarray, ndim: int, axis: int, n: int) -> np.ndarray | None:
    """``c`` as a length-``n`` vector if it varies at most along ``axis`` of an ``ndim`` tensor."""
    if c.ndim > ndim:
        return None
    c = c.reshape((1,) * (ndim - c.ndim) + c.shape)
    if any(d != 1 for i, d in enumerate(c.shape) if i != axis) or c.shape[axis] not in (1, n):
        return None
    return np.broadcast_to(c.reshape(-1), (n,)).astype(np.float64)


def _batch_norm(g: Graph, var) -> tuple[relax.Call, np.ndarray, np.ndarray] | None:
    """``batch_norm(...)[0]`` with constant statistics -> (call, scale, shift)."""
    value = g.producer(var)
    if not isinstance(value, relax.TupleGetItem) or value.index != 0:
        return None
    bn = g.call(value.tuple_value, "relax.nn.batch_norm")
    if bn is None or bool(getattr(bn.attrs, "training", False)) or not g.only_used_by(value.tuple_value, {var}):
        return None
    gamma, beta, mean, var_ = (g.const(a) for a in bn.args[1:5])
    if any(c is None for c in (gamma, beta, mean, var_)):
        return None
    eps = float(bn.attrs.epsilon)
    if not bool(bn.attrs.scale):
        gamma = np.ones_like(gamma)
    if not bool(bn.attrs.center):
        beta = np.zeros_like(beta)
    scale = gamma.astype(np.float64) / np.sqrt(var_.astype(np.float64) + eps)
    return bn, scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


def match_affine(g: Graph, var, axis_for) -> Affine | None:
    """A per-channel affine bound to ``var``; ``axis_for(ndim)`` is the channel axis the consumer needs."""
    shape = shape_of(var)
    if shape is None:
        return None
    axis = axis_for(len(shape))
    bn = _batch_norm(g, var)
    if bn is not None:
        call, scale, shift = bn
        if int(call.attrs.axis) % len(shape) != axis:
            return None
        return Affine(var, call.args[0], scale, shift, axis, [g.producer(var).tuple_value], "batch_norm")
    n = shape[axis]
    expr, shift, interior = var, np.zeros(n), []
    add = g.call(var, "relax.add")
    if add is not None:
        for inner, c in (add.args, add.args[::-1]):
            cv = g.const(c)
            if cv is not None and g.const(inner) is None and g.call(inner, "relax.multiply") is not None:
                shift = _channel_vec(cv, len(shape), axis, n)
                expr = inner
                interior.append(inner)
                break
        else:
            return None
        if shift is None or not g.only_used_by(expr, {var}):
            return None
    mul = g.call(expr, "relax.multiply")
    if mul is None:
        return None
    for x, c in (mul.args, mul.args[::-1]):
        cv = g.const(c)
        if cv is not None and g.const(x) is None:
            scale = _channel_vec(cv, len(shape), axis, n)
            if scale is None or shape_of(x) != shape:
                return None
            return Affine(var, x, scale, shift, axis, interior, "affine")
    return None


def _bias_vec(g: Graph, add: relax.Call, inner, ndim: int, axis: int, n: int):
    """The constant side of ``inner + bias`` as a per-channel vector, or None."""
    for a, c in (add.args, add.args[::-1]):
        if a.same_as(inner):
            cv = g.const(c)
            return None if cv is None else _channel_vec(cv, ndim, axis, n)
    return None


class _Linear:
    """A consumer ``matmul(y, W)`` or ``conv2d(y, W)`` with a constant weight, seen from ``y``."""

    @staticmethod
    def of(g: Graph, var):
        """(kind, data arg, weight) of the matmul/conv2d bound to ``var``, or None."""
        mm = g.call(var, "relax.matmul")
        if mm is not None:
            w = g.const(mm.args[1])
            return ("matmul", mm, w) if w is not None and w.ndim == 2 and g.const(mm.args[0]) is None else None
        cv = g.call(var, "relax.nn.conv2d")
        if cv is not None:
            w = g.const(cv.args[1])
            a = cv.attrs
            ok = (w is not None and int(a.groups) == 1 and a.data_layout == "NCHW" and a.kernel_layout == "OIHW"
                  and a.out_layout == "NCHW" and g.const(cv.args[0]) is None)
            return ("conv2d", cv, w) if ok else None
        return None

    @staticmethod
    def channel_axis(kind: str):
        return (lambda nd: nd - 1) if kind == "matmul" else (lambda nd: 1)

    @staticmethod
    def fold(kind: str, call: relax.Call, w: np.ndarray, aff: Affine) -> tuple[np.ndarray, np.ndarray] | None:
        """(new weight, extra bias per output channel) or None when not exact."""
        w64 = w.astype(np.float64)
        if kind == "matmul":
            return w64 * aff.scale[:, None], aff.shift @ w64
        if any(int(p) != 0 for p in call.attrs.padding) and np.any(aff.shift != 0):
            return None
        return w64 * aff.scale[None, :, None, None], np.einsum("oihw,i->o", w64, aff.shift)


def _emit_linear(bb, kind, call, x, w_new):
    w = const_like(w_new, call.args[1].ty.dtype)
    if kind == "matmul":
        return bb.emit(relax.op.matmul(x, w, out_dtype=call.attrs.out_dtype))
    a = call.attrs
    return bb.emit(relax.op.nn.conv2d(x, w, a.strides, a.padding, a.dilation, a.groups, a.data_layout, a.kernel_layout, a.out_layout, a.out_dtype))


def _bias_const(kind: str, bias: np.ndarray, ndim: int, dtype: str):
    shape = [1] * ndim
    shape[-1 if kind == "matmul" else 1] = len(bias)
    return const_like(bias.reshape(shape), dtype)


class _ForwardFold:
    """Rewrites consumers of per-channel affines; records refusals in ``notes``."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self.folded = 0
        self.moved = 0

    def consumer_affine(self, g: Graph, var):
        """(kind, call, weight, affine) when ``var`` is a consumer whose whole input affine can fold."""
        lin = _Linear.of(g, var)
        if lin is None:
            return None
        kind, call, w = lin
        aff = match_affine(g, call.args[0], _Linear.channel_axis(kind))
        if aff is None:
            return None
        for u in g.users.get(aff.out, []):
            other = _Linear.of(g, u) if isinstance(u, relax.Var) else None
            if other is None or not other[1].args[0].same_as(aff.out) or _Linear.fold(other[0], other[1], other[2], aff) is None:
                note = f"{aff.kind} {aff.out.name} not folded forward: its output is also read by {getattr(u, 'name', u)} (not a foldable linear op, e.g. a residual path)"
                if note not in self.notes:
                    self.notes.append(note)
                return None
        return kind, call, w, aff

    def through_mean(self, g: Graph, var, value, bb):
        """``mean(x * s + beta)`` over non-channel axes -> ``mean(x) * s + beta`` (moves the affine on)."""
        mean = g.call(value, "relax.mean")
        if mean is None or mean.attrs.axis is None:
            return None
        aff = match_affine(g, mean.args[0], lambda nd: nd - 1)
        ndim = len(shape_of(mean.args[0]) or ())
        if aff is None or g.n_users(aff.out) != 1 or aff.axis in {int(a) % ndim for a in mean.attrs.axis}:
            return None
        m = bb.emit(relax.op.mean(aff.x, mean.attrs.axis, mean.attrs.keepdims))
        dtype = str(aff.x.ty.dtype)
        self.moved += 1
        return relax.op.add(bb.emit(relax.op.multiply(m, const_like(aff.scale, dtype))), const_like(aff.shift, dtype))

    def __call__(self, g: Graph, var, value, bb):
        moved = self.through_mean(g, var, value, bb)
        if moved is not None:
            return moved
        add = g.call(value, "relax.add")
        if add is not None:  # consumer + bias: fold both into one consumer + merged bias
            for inner in add.args:
                found = self.consumer_affine(g, inner) if isinstance(inner, relax.Var) and g.n_users(inner) == 1 else None
                if found is not None:
                    kind, call, w, aff = found
                    shape = shape_of(var)
                    axis = len(shape) - 1 if kind == "matmul" else 1
                    bias = _bias_vec(g, add, inner, len(shape), axis, shape[axis])
                    if bias is not None:
                        return self._rewrite(kind, call, w, aff, bb, bias, len(shape))
            return None
        found = self.consumer_affine(g, var)
        if found is None:
            return None
        users = g.users.get(var, [])
        if len(users) == 1 and isinstance(users[0], relax.Var) and g.call(users[0], "relax.add") is not None:
            u = g.call(users[0], "relax.add")
            shape = shape_of(var)
            axis = len(shape) - 1 if found[0] == "matmul" else 1
            if _bias_vec(g, u, var, len(shape), axis, shape[axis]) is not None:
                return None  # the bias add rewrites this consumer
        kind, call, w, aff = found
        return self._rewrite(kind, call, w, aff, bb, 0.0, len(shape_of(var)))

    def _rewrite(self, kind, call, w, aff, bb, bias, ndim):
        w_new, extra = _Linear.fold(kind, call, w, aff)
        y = _emit_linear(bb, kind, call, aff.x, w_new)
        self.folded += 1
        return relax.op.add(y, _bias_const(kind, np.asarray(bias, np.float64) + extra, ndim, call.args[1].ty.dtype))


_CONVS = ("relax.nn.conv2d", "relax.nn.conv2d_transpose")


def _conv_of(g: Graph, var) -> relax.Call | None:
    """The conv2d, or one-group conv2d_transpose, bound to ``var``, with a constant NCHW/OIHW (IOHW) weight."""
    for op in _CONVS:
        conv = g.call(var, op)
        if conv is not None:
            a = conv.attrs
            layout = "OIHW" if op == _CONVS[0] else "IOHW"
            ok = (g.const(conv.args[1]) is not None and a.kernel_layout == layout and a.out_layout == "NCHW"
                  and (op == _CONVS[0] or int(a.groups) == 1))
            return conv if ok else None
    return None


def _scaled_conv(bb, conv: relax.Call, w: np.ndarray, scale: np.ndarray):
    """``conv`` with its output channels scaled by ``scale`` (folded into the weight)."""
    if conv.op.name == "relax.nn.conv2d":
        return _emit_linear(bb, "conv2d", conv, conv.args[0], w * scale[:, None, None, None])
    a = conv.attrs
    wc = const_like(w * scale[None, :, None, None], conv.args[1].ty.dtype)
    return bb.emit(relax.op.nn.conv2d_transpose(conv.args[0], wc, a.strides, a.padding, a.output_padding, a.dilation,
                                                a.groups, a.data_layout, a.kernel_layout, a.out_layout, a.out_dtype))


class _BatchNormIntoConv:
    """``batch_norm(conv(x, W) [+ b])[0]`` -> ``conv(x, W') + b'`` (conv2d or conv2d_transpose) when the
    conv output is not shared."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self.folded = 0

    def __call__(self, g: Graph, var, value, bb):
        bn = _batch_norm(g, var)
        if bn is None:
            return None
        call, scale, shift = bn
        producer, bias, chain = call.args[0], 0.0, []
        shape = shape_of(var)
        if shape is None or len(shape) != 4 or int(call.attrs.axis) % 4 != 1:
            return None
        add = g.call(producer, "relax.add")
        if add is not None:
            for inner in add.args:
                if any(g.call(inner, op) is not None for op in _CONVS):
                    b = _bias_vec(g, add, inner, 4, 1, shape[1])
                    if b is not None:
                        chain.append(producer)
                        producer, bias = inner, b
                    break
        conv = _conv_of(g, producer)
        if conv is None:
            return None
        chain.append(producer)
        shared = [v for v in chain if g.n_users(v) != 1]
        if shared:
            self.notes.append(
                f"batch_norm {var.name} not folded into {conv.op.name[len('relax.nn.'):]} {producer.name}: "
                f"{shared[0].name} also feeds {g.n_users(shared[0]) - 1} other op(s) (residual path)"
            )
            return None
        y = _scaled_conv(bb, conv, g.const(conv.args[1]).astype(np.float64), scale)
        self.folded += 1
        return relax.op.add(y, _bias_const("conv2d", np.asarray(bias) * scale + shift, 4, conv.args[1].ty.dtype))


@tvm.transform.module_pass(opt_level=0, name="shiftc.FoldNorm")
class FoldNorm:
    """BatchNorm into convs, then per-channel affines forward into their linear consumers (exact;
    see the module docstring). Every refusal is appended to ``notes``; after a run ``folded``
    counts what was folded."""

    def __init__(self, notes: list[str] | None = None, max_rounds: int = 4):
        self.notes = [] if notes is None else notes
        self.max_rounds = max_rounds
        self.folded: dict[str, int] = {}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        bn = _BatchNormIntoConv(self.notes)
        mod = rewrite_main(mod, bn)
        fwd = _ForwardFold(self.notes)
        for _ in range(self.max_rounds):
            before = (fwd.folded, fwd.moved)
            mod = rewrite_main(mod, fwd)
            if (fwd.folded, fwd.moved) == before:
                break
        self.folded = {"batch_norm_into_conv": bn.folded, "affine_into_consumer": fwd.folded, "affine_moved_past_mean": fwd.moved}
        return mod


def fold_norm(mod, notes: list[str] | None = None, max_rounds: int = 4):
    """``FoldNorm`` applied to ``mod`` (for scripts and tests): ``(module, folded counts)``."""
    fold = FoldNorm(notes, max_rounds)
    return fold(mod), fold.folded


def apply(mod, ctx):
    """Pipeline stage: fold, and record op counts before/after and every refusal."""
    before = op_counts(mod)
    fold = FoldNorm(ctx.report.notes)
    mod = fold(mod)
    ctx.report.summary.update({"folded": fold.folded, "ops_changed": count_diff(before, op_counts(mod))})
    return mod


STAGE = Stage("fold_norm", lambda o: o.fold_norm, apply)
