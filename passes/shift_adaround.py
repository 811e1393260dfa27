"""One layer's reconstruction in torch (see ``shift_reconstruct``): soft code choice, annealed
regulariser, rounding, least-squares refit of alpha and bias per channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from shiftc.reference.shift import conv_padding

from . import shift as S
from . import shift_reconstruct as R


@dataclass
class Result:
    codes: np.ndarray  # (terms, *oi_shape) int8
    alpha: np.ndarray  # (O,) float32
    delta: np.ndarray  # (O,) float32: bias correction
    error_nearest: float  # layer output rel-L2 (epilogue included) with nearest codes + mean-error bias correction
    error: float  # the same with the kept result


def _op(torch, layer: S.Layer, x, w_oi, padded: bool = False):
    """The layer's op (no bias) in torch: NCHW conv2d with OIHW ``w_oi`` (``x`` already padded
    if ``padded``), or ``x @ w_oi.T``."""
    if layer.op == "matmul":
        return x @ w_oi.T
    a = layer.attrs
    if not padded:
        t, left, b, r = conv_padding(a["padding"])
        x = torch.nn.functional.pad(x, (left, r, t, b))
    return torch.nn.functional.conv2d(x, w_oi, stride=a["strides"], dilation=a["dilation"], groups=a["groups"])


def _channel(layer: S.Layer, v):
    return v.reshape(1, -1, 1, 1) if layer.op == "conv2d" else v


def _epilogue(torch, layer: S.Layer, y, delta):
    ep = layer.epilogue
    if ep.bias is not None:
        y = y + _channel(layer, torch.from_numpy(ep.bias))
    y = y + _channel(layer, delta)
    if ep.lo is not None or ep.hi is not None:
        y = torch.clamp(y, min=ep.lo, max=ep.hi)
    return y


class LayerData:
    """A layer's calibration data as torch tensors: quantised-path inputs and FP32 targets."""

    def __init__(self, torch, layer: S.Layer, xq: Sequence[np.ndarray], xf: Sequence[np.ndarray]):
        self.torch, self.layer = torch, layer
        self.xq = [torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in xq]
        w = torch.from_numpy(layer.oi_weight.astype(np.float32))
        zero = torch.zeros(layer.oi_weight.shape[0])
        with torch.no_grad():
            self.target = [_epilogue(torch, layer, _op(torch, layer, torch.from_numpy(np.ascontiguousarray(x, np.float32)), w), zero) for x in xf]
            self.pre = [_op(torch, layer, torch.from_numpy(np.ascontiguousarray(x, np.float32)), w) for x in xf]
        self.scale = float(sum(float((t.double() ** 2).sum()) for t in self.target) / max(1, sum(t.numel() for t in self.target))) or 1.0
        self.x2 = float(np.mean([float((x.double() ** 2).mean()) for x in self.xq]))

    def window(self, w_oi, batch, gen):
        """(output, target) of the samples ``batch`` on one random window of at most ``R.WINDOW``
        squared output positions (conv2d; matmul: whole samples), for one optimisation step."""
        torch, layer = self.torch, self.layer
        if layer.op == "matmul":
            return [(_op(torch, layer, self.xq[i], w_oi), self.target[i]) for i in batch]
        a = layer.attrs
        (sh, sw), (dh, dw) = a["strides"], a["dilation"]
        kh, kw = layer.weight.shape[2:]
        oh, ow = self.target[0].shape[2:]
        ch, cw = min(oh, R.WINDOW), min(ow, R.WINDOW)
        y0, x0 = int(gen.integers(0, oh - ch + 1)), int(gen.integers(0, ow - cw + 1))
        t, left, _b, _r = conv_padding(a["padding"])
        out = []
        for i in batch:
            x = torch.nn.functional.pad(self.xq[i], (left, _r, t, _b))
            x = x[:, :, y0 * sh : y0 * sh + (ch - 1) * sh + dh * (kh - 1) + 1, x0 * sw : x0 * sw + (cw - 1) * sw + dw * (kw - 1) + 1]
            out.append((_op(torch, layer, x, w_oi, padded=True), self.target[i][:, :, y0 : y0 + ch, x0 : x0 + cw]))
        return out

    def error(self, w_oi, delta, which=None) -> float:
        """Relative L2 of the epilogue output over the samples ``which`` (all by default)."""
        torch = self.torch
        num = den = 0.0
        with torch.no_grad():
            for i in which if which is not None else range(len(self.xq)):
                got = _epilogue(torch, self.layer, _op(torch, self.layer, self.xq[i], w_oi), delta)
                num += float(((got - self.target[i]).double() ** 2).sum())
                den += float((self.target[i].double() ** 2).sum())
        return float(np.sqrt(num / den)) if den > 0 else 0.0

    def mean_shift(self, w_oi) -> "object":
        """Per channel, minus the mean pre-activation output error: the empirical bias correction."""
        torch = self.torch
        axes = [0, 2, 3] if self.layer.op == "conv2d" else list(range(self.pre[0].ndim - 1))
        with torch.no_grad():
            d = sum((_op(torch, self.layer, x, w_oi) - p).double().mean(dim=axes) for x, p in zip(self.xq, self.pre))
        return (-d / len(self.xq)).float()


def _soft_weight(torch, alpha, lo_v, gap, V, shape):
    h = torch.clamp(torch.sigmoid(V) * (R.ZETA - R.GAMMA) + R.GAMMA, 0.0, 1.0)
    return (alpha[:, None] * (lo_v + h * gap)).reshape(shape), h


def _optimise(data: LayerData, alpha, lo_v, gap, frac, seed: int, fit_bias: bool):
    """Adam on V and delta; returns the hard choice (True: upper neighbour) and delta."""
    torch = data.torch
    shape = data.layer.oi_weight.shape
    p = (frac * 0.999 + 0.0005 - R.GAMMA) / (R.ZETA - R.GAMMA)
    V = torch.tensor(np.log(p / (1 - p)), dtype=torch.float32, requires_grad=True)
    delta = data.mean_shift((alpha[:, None] * (lo_v + (torch.from_numpy(frac).float() >= 0.5) * gap)).reshape(shape)) if fit_bias else torch.zeros(shape[0])
    delta = delta.clone().requires_grad_(fit_bias)
    w_fp = torch.from_numpy(data.layer.oi_weight.astype(np.float32))
    opt = torch.optim.Adam([V, delta] if fit_bias else [V], lr=R.LR)
    gen = np.random.default_rng(seed)
    n = len(data.xq)
    reg_w = None
    for step in range(R.ITERS):
        w, h = _soft_weight(torch, alpha, lo_v, gap, V, shape)
        batch = gen.choice(n, size=min(R.BATCH_SAMPLES, n), replace=False)
        rec = sum(((_epilogue(torch, data.layer, y, delta) - t) ** 2).mean() for y, t in data.window(w, batch, gen)) / len(batch) / data.scale
        rec = rec + R.DAMP * data.x2 * ((w - w_fp) ** 2).sum() / shape[0] / data.scale
        if reg_w is None:
            reg_w = R.REG * max(float(rec.detach()), 1e-6)
        t = step / R.ITERS
        loss = rec
        if t >= R.WARMUP:
            beta = R.BETA[1] + (R.BETA[0] - R.BETA[1]) * (1 - (t - R.WARMUP) / (1 - R.WARMUP))
            loss = rec + reg_w * (1 - (2 * h - 1).abs() ** beta).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, h = _soft_weight(torch, alpha, lo_v, gap, V, shape)
    return (h >= 0.5).numpy(), delta.detach()


def _refit(data: LayerData, unit_oi, alpha, delta, fit_bias: bool):
    """Per channel least squares of ``alpha_c * op(x_q, U)_c + delta_c`` against the FP32 op output."""
    torch = data.torch
    axes = [0, 2, 3] if data.layer.op == "conv2d" else list(range(data.pre[0].ndim - 1))
    sums = None
    with torch.no_grad():
        for x, t in zip(data.xq, data.pre):
            z = _op(torch, data.layer, x, unit_oi).double()
            t = t.double()
            s = [z.pow(2).sum(axes), z.sum(axes), torch.ones_like(z).sum(axes), (z * t).sum(axes), t.sum(axes)]
            sums = s if sums is None else [a + b for a, b in zip(sums, s)]
    szz, sz, n, szt, st = sums
    if not fit_bias:  # alpha only
        a = torch.where(szz > 0, szt / torch.where(szz > 0, szz, torch.ones_like(szz)), alpha.double())
        return torch.where(a > 0, a, alpha.double()).float(), delta
    det = szz * n - sz * sz
    ok = det > 1e-12 * (szz * n + 1e-30)
    a = torch.where(ok, (szt * n - sz * st) / torch.where(ok, det, torch.ones_like(det)), alpha.double())
    d = torch.where(ok, (st - a * sz) / n, delta.double())
    a = torch.where(a > 0, a, alpha.double())
    return a.float(), d.float()


def reconstruct_layer(torch, layer: S.Layer, cfg: S.ShiftConfig, xq, xf, seed: int = 0, fit_bias: bool = True) -> Result:
    """Reconstruct one layer's codes, alpha and bias correction (module docstring of ``shift_reconstruct``)."""
    data = LayerData(torch, layer, xq, xf)
    codes0, alpha0 = S.encode(layer, cfg)
    values, table = R.unit_table(cfg.bits, cfg.terms, cfg.zero_free, cfg.uniform)
    w2 = layer.oi_weight.reshape(layer.oi_weight.shape[0], -1).astype(np.float64)
    a64 = alpha0.astype(np.float64)[:, None]
    u = np.where(a64 > 0, w2 / np.where(a64 > 0, a64, 1.0), 0.0)
    lo, hi, frac = R.brackets(u, values)
    alpha = torch.from_numpy(alpha0.astype(np.float32))
    lo_v = torch.from_numpy(values[lo].astype(np.float32))
    gap = torch.from_numpy((values[hi] - values[lo]).astype(np.float32))
    w_near = torch.from_numpy(S.decoded_weight(layer, codes0, alpha0) if layer.op == "conv2d" else S.decoded_weight(layer, codes0, alpha0).T.copy())
    d_near = data.mean_shift(w_near) if fit_bias else torch.zeros(layer.oi_weight.shape[0])
    candidates = [(codes0, alpha0, d_near)]
    up, delta = _optimise(data, alpha, lo_v, gap, frac, seed, fit_bias)
    choice = np.where(up, hi, lo)
    codes = R.codes_of(layer, table, choice)
    candidates.append((codes, alpha0, delta))
    unit = torch.from_numpy(values[choice].reshape(layer.oi_weight.shape).astype(np.float32))
    a_ls, d_ls = _refit(data, unit, alpha, delta, fit_bias)
    candidates.append((codes, a_ls.numpy().astype(np.float32), d_ls))
    errs = [data.error(torch.from_numpy(_oi(layer, c, a)), d) for c, a, d in candidates]
    k = int(np.argmin(errs))
    c, a, d = candidates[k]
    return Result(c, a, d.numpy().astype(np.float32), errs[0], errs[k])


def _oi(layer: S.Layer, codes, alpha) -> np.ndarray:
    w = S.decoded_weight(layer, codes, alpha)
    return w if layer.op == "conv2d" else np.ascontiguousarray(w.T)
