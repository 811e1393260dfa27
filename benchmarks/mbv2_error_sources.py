"""Where MobileNetV2's ``--integer-only`` error comes from: a fake-quantisation simulation in torch.

The simulation quantises the float model at the points where shiftc's integeriser does, with its
rules: int8 per-output-channel weights (``max|w| / 127``, round half up), every conv / matmul
input per tensor at its calibrated percentile threshold (unsigned u8 where calibration saw it
non-negative, else s8; the graph input s8), residual-add operands and the average pool's input at
int16, BatchNorm folded into the convs as shiftc's frontend does. Requantiser rounding (dyadic
``m * 2**-e``) and int32 bias codes are not modelled (they are far below one int8 step). Each
experiment switches one group of quantisation points on or off and reports the mean KL of the
softmax against FP32 on the same 100 photo crops and 8 calibration crops as benchmarks/fidelity.py
(simulated ``--integer-only`` percentile: KL 0.052; the compiled model: 0.046).

    python benchmarks/mbv2_error_sources.py [--json benchmarks/results/mbv2_error_sources.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples import mobilenetv2 as mbv2  # noqa: E402
from shiftc.calibrate import Percentile  # noqa: E402


# ----------------------------------------------------------------------------- the model
def _fold(conv, bn) -> dict:
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return dict(W=(conv.weight * k.reshape(-1, 1, 1, 1)).detach(), b=(bn.bias - bn.running_mean * k).detach(),
                stride=conv.stride[0], pad=conv.padding[0], groups=conv.groups)


def layers():
    """``(name, conv, input value, relu6, output value)`` in order (``conv`` None: residual add of
    the two input values), and the classifier; values named ``in``, ``f0``, ``b<i>.e|d|p|s``, ``f18``."""
    m = mbv2.pretrained()
    out = [("c0", _fold(*m.features[0][:2]), "in", True, "f0")]
    x = "f0"
    for i, blk in enumerate(m.features[1:18], 1):
        mods, cur = list(blk.conv), x
        if len(mods) == 4:  # expansion 1x1 conv first
            out.append((f"b{i}.ec", _fold(*mods[0][:2]), cur, True, f"b{i}.e"))
            cur, mods = f"b{i}.e", mods[1:]
        out.append((f"b{i}.dc", _fold(*mods[0][:2]), cur, True, f"b{i}.d"))
        out.append((f"b{i}.pc", _fold(mods[1], mods[2]), f"b{i}.d", False, f"b{i}.p"))
        if blk.use_res_connect:
            out.append((f"b{i}.add", None, (x, f"b{i}.p"), None, f"b{i}.s"))
        x = f"b{i}.s" if blk.use_res_connect else f"b{i}.p"
    out.append(("c18", _fold(*m.features[18][:2]), x, True, "f18"))
    return out, dict(W=m.classifier[1].weight.detach(), b=m.classifier[1].bias.detach())


LAYERS, FC = layers()
CONVS = [entry for entry in LAYERS if entry[1] is not None]


def forward(x, act, wts, probe=lambda v, t: None, bias=None):
    """The model with ``act(value, tensor, role)`` at every quantisation point (roles ``conv_in``,
    ``add_in``, ``pool_in``, ``fc_in``), ``wts(layer, W)`` on every weight, ``bias`` overrides."""
    vals = {"in": x}
    probe("in", x)
    for name, c, inp, relu, out in LAYERS:
        if c is None:
            y = act(out, vals[inp[0]], "add_in") + act(out, vals[inp[1]], "add_in")
        else:
            b = (bias or {}).get(name, c["b"])
            y = F.conv2d(act(inp, vals[inp], "conv_in"), wts(name, c["W"]), b, c["stride"], c["pad"], 1, c["groups"])
            y = torch.clamp(y, 0, 6) if relu else y
        vals[out] = y
        probe(out, y)
    p = act("f18", vals["f18"], "pool_in").mean(dim=(2, 3))
    probe("pool", p)
    return F.linear(act("pool", p, "fc_in"), wts("fc", FC["W"]), FC["b"])


# ----------------------------------------------------------------------------- quantisers
def fake_quant(x, t: float, bits: int, unsigned: bool):
    qm = (1 << bits) - 1 if unsigned else (1 << (bits - 1)) - 1
    s = (t if t > 0 else 1.0) / qm
    return torch.clamp(torch.floor(x / s + 0.5), 0 if unsigned else -(1 << (bits - 1)), qm) * s


def int8_weights(W):
    s = W.abs().amax(dim=tuple(range(1, W.ndim)), keepdim=True) / 127
    s = torch.where(s > 0, s, torch.full_like(s, 1 / 127))
    return torch.clamp(torch.floor(W / s + 0.5), -127, 127) * s


def activations(th: dict, points: set, wide: frozenset = frozenset()):
    """The integeriser's activation codes at the values in ``points`` (None: all); ``wide``: conv
    inputs at int16 over their full range (mixed precision)."""
    def act(v, t, role):
        if points is not None and v not in points:
            return t
        thr, nonneg, amax = th[v]
        if role in ("add_in", "pool_in"):
            return fake_quant(t, thr, 16, False)
        if v in wide:
            return fake_quant(t, amax, 16, nonneg and v != "in")
        return fake_quant(t, thr, 8, nonneg and v != "in")
    return act


def weights(names: set | None):
    return lambda n, W: int8_weights(W) if names is None or n in names else W


def identity(v, t, role=None):
    return t


# ----------------------------------------------------------------------------- measurement
def run(xs, act=identity, wts=lambda n, W: W, bias=None):
    with torch.no_grad():
        return torch.cat([forward(xs[i:i + 25], act, wts, bias=bias) for i in range(0, len(xs), 25)])


def calibrate(xs) -> dict:
    """``{value: (99.99th percentile threshold, never negative, max|x|)}`` with shiftc's observer,
    one sample per update as the compile calibrates."""
    obs: dict = {}
    with torch.no_grad():
        for i in range(len(xs)):
            forward(xs[i:i + 1], identity, lambda n, W: W, probe=lambda v, t: obs.setdefault(v, Percentile()).update(t.numpy()))
    return {v: (o.threshold(), bool(o.count and o.minimum >= 0), o.absmax) for v, o in obs.items()}


def scores(ref, got) -> dict:
    p, q = torch.softmax(ref.double(), -1), torch.softmax(got.double(), -1)
    kl = (p * (torch.log(p + 1e-30) - torch.log(q + 1e-30))).sum(-1).mean().item()
    agree = (p.argmax(-1) == q.argmax(-1)).double()
    conf = p.max(-1).values >= 0.5
    return {"mean_kl": round(kl, 4), "top1_agreement": agree.mean().item(), "confident_agreement": round(agree[conf].mean().item(), 3)}


def weight_bias_correction(xs) -> dict:
    """``--int-bias-correction weights``: per conv, ``b - E[conv(x, W_q - W)]`` on the FP32 inputs."""
    vals: dict = {}
    with torch.no_grad():
        forward(xs, identity, lambda n, W: W, probe=lambda v, t: vals.__setitem__(v, t))
        return {name: c["b"] - F.conv2d(vals[inp], int8_weights(c["W"]) - c["W"], None, c["stride"], c["pad"], 1,
                                        c["groups"]).mean(dim=(0, 2, 3)) for name, c, inp, _r, _o in CONVS}


def operand_ranking(th, xs) -> list[str]:
    """Conv / matmul inputs by the output error (rel. L2 on ``xs``) with only that one int8-quantised
    (passes/operand_sensitivity.py)."""
    ref = run(xs)
    names = sorted({inp for _n, _c, inp, _r, _o in CONVS} | {"pool"})
    err = {v: ((run(xs, activations(th, {v})) - ref).norm() / ref.norm()).item() for v in names}
    return sorted(names, key=lambda v: -err[v])


# ----------------------------------------------------------------------------- experiments
def groups(th) -> dict:
    """Quantisation points by role in the network."""
    v = list(th)
    return {"graph input (first conv)": {"in"}, "expansion outputs (depthwise inputs)": {x for x in v if x.endswith(".e")} | {"f0"},
            "depthwise outputs (projection inputs)": {x for x in v if x.endswith(".d")},
            "block outputs (expansion inputs, signed)": {x for x in v if x.endswith((".p", ".s"))},
            "last conv / pool (classifier input)": {"f18", "pool"}}


def weight_groups() -> dict:
    names = [c[0] for c in CONVS] + ["fc"]
    return {"depthwise 3x3": {n for n in names if n.endswith(".dc")}, "expansion 1x1": {n for n in names if n.endswith(".ec")},
            "projection 1x1": {n for n in names if n.endswith(".pc")}, "first conv": {"c0"}, "last conv": {"c18"}, "classifier": {"fc"}}


def experiments(th, cal):
    """``(label, act, wts, bias)`` of every experiment."""
    everything = activations(th, None)
    out = [("int8 everywhere (shiftc --integer-only percentile)", everything, weights(None), None),
           ("weights only", identity, weights(None), None), ("activations only", everything, weights(set()), None)]
    out += [(f"weights only: {g}", identity, weights(ns), None) for g, ns in weight_groups().items()]
    out += [(f"activations only: {g}", activations(th, ns), weights(set()), None) for g, ns in groups(th).items()]
    bc = weight_bias_correction(cal)
    out += [("weights only, weight bias correction", identity, weights(None), bc),
            ("int8 everywhere, weight bias correction", everything, weights(None), bc)]
    order = operand_ranking(th, cal)
    out += [(f"weight bias correction + top {k} operands (ranked on calibration) int16", activations(th, None, frozenset(order[:k])),
             weights(None), bc) for k in (8, 16)]
    out += [("no weight bias correction, top 16 operands int16", activations(th, None, frozenset(order[:16])), weights(None), None)]
    return out, order


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "mbv2_error_sources.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    evals = torch.from_numpy(mbv2.real_photos(100, seed=0))
    cal = torch.from_numpy(mbv2.real_photos(108, seed=1)[-8:])  # as benchmarks/fidelity.py
    th = calibrate(cal)
    ref = run(evals)
    exps, order = experiments(th, cal)
    rows = []
    for label, act, wts, bias in exps:
        rows.append({"experiment": label, **scores(ref, run(evals, act, wts, bias))})
        print(json.dumps(rows[-1]), flush=True)
    result = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "samples": 100, "calibration_samples": 8,
              "reference": "the same torch model in FP32", "operand_ranking": order[:16], "rows": rows}
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
