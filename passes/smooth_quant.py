"""SmoothQuant scale migration (Xiao et al. 2023) into transformer matmuls: exact in float.

An activation with a few outlier channels (BERT's LayerNorm outputs: one channel near 28 where
the median is 1.6) wastes most of a per-tensor int8 range on them. SmoothQuant moves a per-input-
channel factor ``s_j`` from the activation into the weight, where per-output-channel int8 codes
absorb it::

    y = layer_norm(x, g, b);  z = matmul(y, W)
      ->  y' = layer_norm(x, g / s, b / s);  z = matmul(y', diag(s) W)        (z unchanged)

    s_j = max|y_j| ** alpha / max|W_j,:| ** (1 - alpha)      (clamped to [1e-5, 1e5])

``max|y_j|`` is measured on the calibration samples (``calibrate.channel_absmax``); ``max|W_j,:|``
is over every matmul that reads ``y``. The LayerNorm is duplicated when ``y`` has other readers
(post-LN BERT: the residual add), which keep the original; the matmuls that read ``y`` share one
scaled copy. Only LayerNorms over the last axis with constant ``g``, ``b`` and constant-weight
matmul readers are rewritten.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from shiftc import calibrate
from shiftc.core.errors import InputError
from shiftc.core.stage import Stage

from .graph import Graph, const_like, rewrite_main, shape_of

S_RANGE = (1e-5, 1e5)


def _matmul_readers(g: Graph, y) -> list | None:
    """The ``(var, weight)`` of every constant-weight matmul reading ``y`` as its data, or None."""
    out = []
    for u in g.users.get(y, []):
        mm = g.call(u, "relax.matmul") if isinstance(u, relax.Var) else None
        w = g.const(mm.args[1]) if mm is not None else None
        if mm is not None and mm.args[0].same_as(y) and w is not None and w.ndim == 2:
            out.append((u, w))
    return out or None


def targets(mod) -> dict[str, list]:
    """``{LayerNorm value name: [(matmul var, weight), ...]}`` of every LayerNorm this pass rewrites."""
    g = Graph(relax.analysis.remove_all_unused(mod["main"]))
    found = {}
    for var, value in g.value.items():
        ln = g.call(var, "relax.nn.layer_norm")
        if ln is None or g.const(ln.args[1]) is None or g.const(ln.args[2]) is None:
            continue
        nd = len(shape_of(var) or ())
        if [int(a) % nd for a in ln.attrs.axes] != [nd - 1]:
            continue
        readers = _matmul_readers(g, var)
        if readers:
            found[var.name] = readers
    return found


def factors(act_max: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """Per-channel ``s = max|X_j|**alpha / max|W_j|**(1-alpha)`` (rows ``j`` of every weight)."""
    w_max = np.max(np.stack([np.abs(w.astype(np.float64)).max(axis=1) for w in weights]), axis=0)
    a = np.maximum(np.asarray(act_max, np.float64), 1e-8)
    s = a**alpha / np.maximum(w_max, 1e-8) ** (1.0 - alpha)
    return np.clip(s, *S_RANGE)


def smooth_quant(mod, scales: dict[str, np.ndarray]):
    """Rewrite the LayerNorms named in ``scales`` (value name -> ``s``) and their matmul readers."""
    copies: dict = {}

    def rule(g: Graph, var, value, bb):
        mm = g.call(value, "relax.matmul")
        if mm is None or not isinstance(mm.args[0], relax.Var) or mm.args[0].name not in scales:
            return None
        y, s = mm.args[0], scales[mm.args[0].name]
        w = g.const(mm.args[1])
        if w is None or w.ndim != 2:
            return None
        if y.name not in copies:
            ln = g.call(y, "relax.nn.layer_norm")
            dt = str(y.ty.dtype)
            gamma, beta = (np.broadcast_to(g.const(a).astype(np.float64).reshape(-1), s.shape) for a in ln.args[1:3])
            copies[y.name] = bb.emit(relax.op.nn.layer_norm(ln.args[0], const_like(gamma / s, dt), const_like(beta / s, dt),
                                                            ln.attrs.axes, ln.attrs.epsilon, ln.attrs.center, ln.attrs.scale))
        w_new = const_like(w.astype(np.float64) * s[:, None], mm.args[1].ty.dtype)
        return relax.op.matmul(copies[y.name], w_new, out_dtype=mm.attrs.out_dtype)

    return rewrite_main(mod, rule)


def apply(mod, ctx):
    alpha = ctx.options.smooth_quant
    if not 0 < alpha < 1:
        raise InputError(f"--smooth-quant must be in (0, 1), got {alpha}")
    found = targets(mod)
    if not found:
        ctx.report.notes.append("no LayerNorm -> matmul to smooth")
        return mod
    act = calibrate.channel_absmax(mod, ctx.samples, list(found), ctx.options.calibration_samples)
    scales = {n: factors(act[n], [w for _, w in readers], alpha) for n, readers in found.items()}
    ctx.report.summary.update({"alpha": alpha, "layer_norms": len(scales),
                               "matmuls": sum(len(r) for r in found.values()),
                               "largest_factor": round(float(max(s.max() for s in scales.values())), 3)})
    return smooth_quant(mod, scales)


STAGE = Stage("smooth_quant", lambda o: o.integer_only and o.smooth_quant is not None, apply)
