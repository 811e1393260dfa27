"""Constant folding: an op whose inputs are all constants runs in NumPy while the graph is
rewritten (weights reshaped or transposed, shapes of constants, index tables)."""

from __future__ import annotations

import numpy as np
from tvm import relax

from .value import shape


def _take(call, a):
    mode = "wrap" if str(call.attrs.mode) == "wrap" else "raise"
    return np.take(a[0], a[1], axis=int(call.attrs.axis), mode=mode)


def _permute(call, a):
    return np.transpose(a[0], [int(x) for x in call.attrs.axes]) if call.attrs.axes is not None else a[0].T


FOLD = {
    "relax.reshape": lambda v, a: a[0].reshape(shape(v)),
    "relax.permute_dims": _permute,
    "relax.squeeze": lambda v, a: a[0].reshape(shape(v)),
    "relax.expand_dims": lambda v, a: a[0].reshape(shape(v)),
    "relax.flatten": lambda v, a: a[0].reshape(shape(v)),
    "relax.broadcast_to": lambda v, a: np.broadcast_to(a[0], shape(v)).copy(),
    "relax.add": lambda v, a: (a[0] + a[1]),
    "relax.subtract": lambda v, a: (a[0] - a[1]),
    "relax.multiply": lambda v, a: (a[0] * a[1]),
    "relax.divide": lambda v, a: (a[0] / a[1]),
    "relax.sqrt": lambda v, a: np.sqrt(a[0]),
    "relax.astype": lambda v, a: a[0].astype(str(v.attrs.dtype)),
    "relax.isnan": lambda v, a: np.isnan(a[0]),
    "relax.where": lambda v, a: np.where(a[0], a[1], a[2]),
    "relax.maximum": lambda v, a: np.maximum(a[0], a[1]),
    "relax.take": _take,
    "relax.less": lambda v, a: np.less(a[0], a[1]),
    "relax.less_equal": lambda v, a: np.less_equal(a[0], a[1]),
    "relax.greater": lambda v, a: np.greater(a[0], a[1]),
    "relax.greater_equal": lambda v, a: np.greater_equal(a[0], a[1]),
    "relax.equal": lambda v, a: np.equal(a[0], a[1]),
    "relax.not_equal": lambda v, a: np.not_equal(a[0], a[1]),
}


def fold(op: str, call, args):
    """The NumPy value of ``call`` (a ShapeExpr for ``shape_of``), or None when it cannot fold."""
    if op == "relax.shape_of" and isinstance(args[0], np.ndarray):
        return relax.ShapeExpr([int(d) for d in args[0].shape])
    if op == "relax.shape_to_tensor" and isinstance(args[0], relax.ShapeExpr):
        return np.array([int(v) for v in args[0].values], np.int64)
    fn = FOLD.get(op)
    tensors = [a for a in args if not isinstance(a, relax.ShapeExpr)]
    if fn is None or not tensors or not all(isinstance(a, np.ndarray) for a in tensors):
        return None
    arrs = [a for a in args if isinstance(a, np.ndarray)]
    out = fn(call, arrs)
    return np.asarray(out).astype(str(call.ty.dtype)) if hasattr(call.ty, "dtype") else out
