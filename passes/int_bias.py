"""Bias correction for ``--integer-only``: remove, per output channel, the mean error that the
integer codes of a linear layer introduce (Nagel et al. 2019 §4.2, empirical form; the same idea
as NNCF's fast bias correction).

For every ``conv2d`` / ``matmul`` with a constant weight ``W`` whose output goes into a constant
bias add, over the calibration samples, with ``x`` the layer's input in the FP32 model::

    delta_c = E[ op(Q(x), W_q)_c ] - E[ op(x, W)_c ]      (inputs=True, ``--int-bias-correction full``)
    delta_c = E[ op(x, W_q - W)_c ]                       (inputs=False, ``--int-bias-correction weights``)

``W_q``: the integeriser's int8 per-channel weight codes, decoded (``integerize.scales.weight_codes``).
``Q(x) = s * saturate(round_half_up(x / s))``: the codes the integeriser gives the layer's input at
its calibrated scale -- unsigned ``[0, 255]`` where calibration proved ``x`` non-negative, else
``[-128, 127]`` -- so percentile clipping, which lowers the mean of every clipped activation, is
corrected too. The weights-only form measures only what the weight rounding does to the output
mean: ``(W_q - W)`` times the input's tap means, which few samples estimate well, whereas the input
term (clipping) is as noisy as the samples. The bias add's constant becomes ``b - delta``; the integeriser then codes it like any
bias (``round(b / s_c)`` into the int32 accumulator), so the kernels stay bit-exact with
``shiftc.reference``.

Means of a linear op are exact from per-tap means: for a conv, ``M[c, kh, kw]`` is the mean of the
zero-padded input under kernel tap ``(kh, kw)`` over every output position and sample, and the
output mean of channel ``o`` is ``sum W[o, c, kh, kw] * M[c, kh, kw]`` (within its group); for a
matmul, the mean input row times ``W``. A layer whose channel means come from fewer than
``MIN_POSITIONS`` outputs (a classifier on a few samples) is left alone: its measured mean is
mostly the samples' own noise. Every layer is measured on its FP32 input, so one run of
the FP32 model (on every sample) corrects all layers at once: each removes its own error, not that
of the layers before it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from shiftc.calibrate import Calibration, probe_module
from shiftc.core.host import flatten_outputs, host_vm
from shiftc.reference.quant import pow2_up, round_half_up
from shiftc.reference.rounding import code_range

from .graph import Graph, const_like, rewrite_main
from .integerize.scales import weight_codes

MIN_POSITIONS = 256  # fewer output positions per channel (samples x pixels / rows): the mean is mostly noise


def _layer(g: Graph, var, value):
    """``(kind, weight, bias add var, bias axis)`` of a linear layer with a constant bias add, or None."""
    conv, mm = g.call(value, "relax.nn.conv2d"), g.call(value, "relax.matmul")
    if conv is not None and (conv.attrs.data_layout, conv.attrs.kernel_layout, conv.attrs.out_layout) == ("NCHW", "OIHW", "NCHW"):
        kind, axis = "conv2d", 1
    elif mm is not None and len(value.ty.shape.values) >= 2:
        kind, axis = "matmul", -1
    else:
        return None
    w = g.const(value.args[1])
    users = g.users.get(var, [])
    if w is None or (kind == "matmul" and w.ndim != 2) or len(users) != 1 or not isinstance(users[0], relax.Var):
        return None
    add = g.call(users[0], "relax.add")
    if add is None or not add.args[0].same_as(var) or g.const(add.args[1]) is None:
        return None
    b = g.const(add.args[1])
    n = int(value.ty.shape.values[axis])
    if b.size != n or b.shape[axis if b.ndim == len(value.ty.shape.values) else -1] != n:
        return None
    return kind, w, users[0], axis


def tap_means(x: np.ndarray, w_shape, attrs) -> np.ndarray:
    """``M[c, kh, kw]``: the mean of the zero-padded NCHW ``x`` under each kernel tap over the output
    positions (and the batch) of a conv with weight shape ``w_shape`` and ``attrs``."""
    (sh, sw), (dh, dw) = [int(v) for v in attrs.strides], [int(v) for v in attrs.dilation]
    pt, pl, pb, pr = [int(v) for v in attrs.padding]
    kh, kw = int(w_shape[2]), int(w_shape[3])
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    m = np.empty((x.shape[1], kh, kw))
    for i in range(kh):
        for j in range(kw):
            m[:, i, j] = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw].mean(axis=(0, 2, 3))
    return m


def output_means(kind: str, w: np.ndarray, m: np.ndarray, groups: int = 1) -> np.ndarray:
    """Per output channel mean of the linear op from its input's tap means (``tap_means``; for a
    matmul the mean input row)."""
    if kind == "matmul":
        return m @ w
    og, cg = w.shape[0] // groups, w.shape[1]
    return np.concatenate([np.einsum("ocij,cij->o", w[g * og:(g + 1) * og], m[g * cg:(g + 1) * cg]) for g in range(groups)])


def fake_quant(x: np.ndarray, name: str, calib: Calibration, pow2: bool) -> np.ndarray:
    """``x`` through the integeriser's 8-bit input codes for value ``name`` (unsigned where proved
    non-negative), back in float."""
    unsigned = name in calib.nonnegative and not pow2
    s = calib.scale(name, 8, unsigned)
    s = pow2_up(s) if pow2 else s
    lo, hi = code_range(8, unsigned)
    return np.clip(round_half_up(x.astype(np.float64) / s), lo, hi) * s


def _means(kind, x, w, call):
    if kind == "matmul":
        return x.reshape(-1, x.shape[-1]).astype(np.float64).mean(axis=0)
    return tap_means(x, w.shape, call.attrs)


def measure(mod: tvm.IRModule, samples, calib: Calibration, pow2: bool = False, inputs: bool = True) -> dict:
    """``{bias add value name: delta}`` (per output channel) of every correctable layer; ``inputs``:
    the input's 8-bit codes count too (else only the weight codes)."""
    g = Graph(relax.analysis.remove_all_unused(mod["main"]))
    layers = []
    for var, value in g.value.items():
        found = _layer(g, var, value) if isinstance(value, relax.Call) else None
        x = value.args[0] if found else None
        if found and isinstance(x, relax.Var) and x.name in calib.thresholds:
            layers.append((found, value, x.name))
    if not layers:
        return {}
    names = sorted({x for _, _, x in layers})
    vm = host_vm(probe_module(mod, names))
    params = [p.name for p in mod["main"].params]
    sums: dict = {}
    for s in samples:
        outs = dict(zip(names, flatten_outputs(vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(s[p]), tvm.cpu()) for p in params]))))
        for (kind, w, add, _axis), call, xn in layers:
            x = outs[xn].numpy() if hasattr(outs[xn], "numpy") else np.asarray(outs[xn])
            wq, sw = weight_codes(w, axis=0 if kind == "conv2d" else 1, pow2=pow2)
            wd = wq.astype(np.float64) * (sw.reshape(-1, 1, 1, 1) if kind == "conv2d" else sw.reshape(1, -1))
            groups = int(call.attrs.groups) if kind == "conv2d" else 1
            if inputs:
                d = output_means(kind, wd, _means(kind, fake_quant(x, xn, calib, pow2), w, call), groups) \
                    - output_means(kind, w.astype(np.float64), _means(kind, x, w, call), groups)
            else:
                d = output_means(kind, wd - w.astype(np.float64), _means(kind, x, w, call), groups)
            sums[add.name] = sums.get(add.name, 0.0) + d
    enough = {add.name for (kind, _w, add, _a), call, _x in layers if len(samples) * _positions(kind, call) >= MIN_POSITIONS}
    return {k: v / len(samples) for k, v in sums.items() if k in enough}


def _positions(kind: str, call) -> int:
    """Outputs per channel per sample: rows of a matmul, pixels of a conv."""
    dims = [int(d) for d in call.ty.shape.values]
    return int(np.prod(dims[:-1] if kind == "matmul" else [dims[0], *dims[2:]]))


def correct(mod: tvm.IRModule, samples, calib: Calibration, pow2: bool = False, inputs: bool = True) -> tuple[tvm.IRModule, dict]:
    """Subtract each layer's measured ``delta`` from its bias; returns the module and a summary
    (layers corrected, mean ``|delta| / RMS(bias)`` before correction)."""
    samples = list(samples)
    deltas = measure(mod, samples, calib, pow2, inputs)

    def rule(g, var, value, bb):
        if var.name not in deltas:
            return None
        b = g.const(value.args[1])
        shape = [1] * b.ndim
        shape[1 if b.ndim == len(value.ty.shape.values) and b.ndim > 1 else -1] = -1
        return relax.op.add(value.args[0], const_like(b - deltas[var.name].reshape(shape), str(value.args[1].ty.dtype)))

    out = rewrite_main(mod, rule) if deltas else mod
    rel = [float(np.mean(np.abs(d))) for d in deltas.values()]
    return out, {"layers": len(deltas), "mean_abs_delta": float(np.mean(rel)) if rel else 0.0}
