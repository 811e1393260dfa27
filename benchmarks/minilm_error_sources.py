"""Where all-MiniLM-L6-v2's ``--integer-only`` error comes from, simulated cheaply in NumPy.

A float64 re-implementation of the BERT encoder (the model's own weights) into which each integer
approximation of ``--integer-only`` can be swapped, one at a time or all together, using the
``shiftc.reference`` formulas where the approximation is an integer op:

- ``w8``: int8 per-output-channel weights; ``emb8``: int8 per-tensor embedding gathers
- ``a8``: int8 per-tensor operands at every matmul (LayerNorm outputs, Q, K, V, attention
  context, GELU output; attention probabilities at u8 2^-8 unless Shiftmax makes them), a
  subset by site name (``A8_SITES``)
- ``add16``: int16 residual adds / LayerNorm inputs
- ``gelu``: ``lambda`` (lambda-ShiftGELU reference on int16 input), ``sigmoid`` (its float form
  ``x sigma(lambda x)``), ``shift`` (ShiftGELU row max), ``ibert`` (i-GELU reference)
- ``softmax``: ``shiftmax`` (the reference at the integeriser's input scale)
- ``ln``: ``ilayernorm`` (the I-LayerNorm reference, int16 input)

Thresholds: per-tensor max |x| (or the MSE observer) on the first 16 sentences, like shiftc's
calibration; evaluation on the next ``--n``; the score is the cosine of the mean-pooled embedding
against the float model. No compile: seconds per variant.

    python benchmarks/minilm_error_sources.py [--n 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from shiftc import reference as ref  # noqa: E402
from shiftc.calibrate import MSE  # noqa: E402

N_CAL = 16
A8_SITES = ("ln", "q", "k", "v", "probs", "ctx", "gelu_out", "final")
SHIFTMAX_N, MARGIN = 12, 12 * math.log(2)


def fq(x, t, bits=8, unsigned=False):
    """Fake quantisation: symmetric per-tensor codes at ``t / qmax`` (unsigned: ``t / (2**b - 1)``)."""
    q = (1 << bits) - 1 if unsigned else (1 << (bits - 1)) - 1
    s = (t if t > 0 else 1.0) / q
    lo = 0 if unsigned else -q - 1
    return np.clip(np.floor(x / s + 0.5), lo, q) * s


class Sim:
    """The encoder with switchable approximations; ``record`` collects calibration statistics."""

    def __init__(self, sd, cfg):
        self.w = {k: v.detach().double().numpy() for k, v in sd.items()}
        self.layers, self.heads = cfg.num_hidden_layers, cfg.num_attention_heads
        self.opts, self.thr, self.obs, self.lambdas, self.gelu_in, self.gelu_bits = {}, {}, None, {}, {}, {}

    # ------------------------------------------------------------------ helpers
    def site(self, name, x, kind=None):
        """Record ``x`` (calibration) or fake-quantise it at ``kind`` (``a8`` / ``add16``)."""
        if self.obs is not None:
            o = self.obs.setdefault(name, MSE() if self.opts.get("observer") == "mse" else _MinMax())
            o.update(x.astype(np.float32))
            return x
        if kind == "a8" and name.split("/")[-1] in self.opts.get("a16", ()):
            return fq(x, self.absmax[name], 16)
        if kind == "a8" and self._a8(name.split("/")[-1]):
            return fq(x, self.thr[name])
        if kind == "add16" and self.opts.get("add16"):
            return fq(x, self.absmax[name], 16)
        return x

    def _a8(self, site):
        a8 = self.opts.get("a8")
        return a8 is True or (isinstance(a8, (set, frozenset, tuple)) and site in a8)

    def linear(self, x, p):
        w, b = self.w[p + ".weight"], self.w[p + ".bias"]
        if self.opts.get("w8"):
            s = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-30) / 127
            w = np.clip(np.floor(w / s + 0.5), -127, 127) * s
        return x @ w.T + b

    def embed(self, ids, tts):
        w = self.w
        parts = [w["embeddings.word_embeddings.weight"][ids], w["embeddings.position_embeddings.weight"][np.arange(ids.shape[-1])][None],
                 w["embeddings.token_type_embeddings.weight"][tts]]
        if self.opts.get("emb8") and self.obs is None:
            parts = [fq(p, np.abs(p).max()) for p in parts]
        return self.site("emb_add", parts[0] + parts[1] + parts[2], "add16")

    # ------------------------------------------------------------------ non-linear ops
    def layernorm(self, x, p, name):
        g, b = self.w[p + ".weight"], self.w[p + ".bias"]
        if self.opts.get("ln") == "ilayernorm" and self.obs is None:
            s = self.absmax[name] / 32767
            xi = np.clip(np.floor(x / s + 0.5), -32768, 32767).astype(np.int64)
            z = ref.i_layernorm(xi).astype(np.float64) * math.sqrt(x.shape[-1]) * 2.0**-30
        else:
            mu = x.mean(-1, keepdims=True)
            z = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-12)
        return z * g + b

    def softmax(self, scores, mask, name):
        if self.opts.get("softmax") == "shiftmax" and self.obs is None:
            t = self.thr[name]
            for bits in range(16, 7, -1):
                s = (t + MARGIN) / ((1 << (bits - 1)) - 1)
                x0 = int(math.floor(-1.0 / s))
                if scores.shape[-1] * ((-x0) << SHIFTMAX_N) <= 1 << 26:
                    break
            q = (1 << (bits - 1)) - 1
            xi = np.clip(np.floor(scores / s + 0.5), -q - 1, q).astype(np.int64)
            xi = np.where(mask, xi, -q - 1)
            return ref.shiftmax_int(xi, x0, SHIFTMAX_N, unsigned=True).astype(np.float64) * 2.0**-8
        z = np.where(mask, scores, -np.inf)
        e = np.exp(z - z.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        return fq(p, 1.0, 8, unsigned=True) if self._a8("probs") and self.obs is None else p

    def gelu(self, x, name):
        mode = self.opts.get("gelu", "erf")
        if self.obs is not None:
            self.gelu_in.setdefault(name, []).append(x.reshape(-1)[::7])
        if mode == "erf" or self.obs is not None:
            return _gelu_erf(x)
        s = self.absmax[name] / 32767
        xi = np.clip(np.floor(x / s + 0.5), -32768, 32767).astype(np.int64)
        if mode == "sigmoid":
            lam = ref.lam_value(self.lambdas[name])
            return x / (1 + np.exp(-lam * x))
        if mode == "lambda":  # the widest input the parameters accept (the integeriser's fitting_input)
            for bits in range(16, 7, -1):
                s = self.absmax[name] / ((1 << (bits - 1)) - 1)
                try:
                    p = ref.lambda_gelu_params(s, self.lambdas[name])
                except ValueError:
                    continue
                if p.x_max >= 1 << (bits - 1):
                    break
            self.gelu_bits[name] = bits
            xi = np.clip(np.floor(x / s + 0.5), -(1 << (bits - 1)), (1 << (bits - 1)) - 1).astype(np.int64)
            return ref.lambda_shift_gelu_int(xi, p).astype(np.float64) * s * 2.0**-15
        if mode == "shift":
            s8 = self.absmax[name] / 127  # ShiftGELU's n = 23 exponent needs a coarse scale
            x8 = np.clip(np.floor(x / s8 + 0.5), -128, 127).astype(np.int64)
            return ref.shift_gelu(x8, s8).astype(np.float64) * s8 * 2.0**-15
        if mode == "ibert":
            out, s_out = ref.i_gelu(xi, s)
            return out.astype(np.float64) * s_out
        raise ValueError(mode)

    # ------------------------------------------------------------------ model
    def layer(self, x, mask, i):
        p, n = f"encoder.layer.{i}", f"l{i}/"
        x = self.site(n + "ln", x, "a8")  # the previous LayerNorm's int8 output: matmul operand and residual
        q = self.site(n + "q", self.linear(x, p + ".attention.self.query"), "a8")
        k = self.site(n + "k", self.linear(x, p + ".attention.self.key"), "a8")
        v = self.site(n + "v", self.linear(x, p + ".attention.self.value"), "a8")
        split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(0, 2, 1, 3)  # noqa: E731
        qh, kh, vh = split(q), split(k), split(v)
        scores = self.site(n + "scores", qh @ kh.transpose(0, 1, 3, 2) / math.sqrt(qh.shape[-1]))
        probs = self.softmax(scores, mask[:, None, None, :], n + "scores")
        c = (probs @ vh).transpose(0, 2, 1, 3).reshape(x.shape)
        c = self.site(n + "ctx", c, "a8")
        a = self.site(n + "attn_add", self.linear(c, p + ".attention.output.dense") + x, "add16")
        h = self.site(n + "attn_ln/ln", self.layernorm(a, p + ".attention.output.LayerNorm", n + "attn_add"), "a8")
        g = self.gelu(self.linear(h, p + ".intermediate.dense"), n + "ffn1")
        g = self.site(n + "gelu_out", g, "a8")
        o = self.site(n + "out_add", self.linear(g, p + ".output.dense") + h, "add16")
        return self.layernorm(o, p + ".output.LayerNorm", n + "out_add")

    def forward(self, ids, tts, am):
        mask = am.astype(bool)
        x = self.layernorm(self.embed(ids, tts), "embeddings.LayerNorm", "emb_add")
        for i in range(self.layers):
            x = self.layer(x, mask, i)
        x = self.site("final/final", x, "a8")  # the last LayerNorm's output (int8: pooling reads it, no matmul)
        m = am[..., None].astype(np.float64)
        if self.opts.get("pool_round") and self.obs is None:  # the mean rounded to the final value's own grid
            s = self.thr["final/final"] / 127 if not {"final"} & set(self.opts.get("a16", ())) else self.absmax["final/final"] / 32767
            n = m.sum(1)
            return np.floor((np.round(x / s) * m).sum(1) / n + 0.5) * s
        return (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)

    def calibrate(self, batches, observer="minmax"):
        self.obs, self.opts = {}, {"observer": observer}
        for b in batches:
            self.forward(*b)
        self.thr = {k: o.threshold() for k, o in self.obs.items()}
        self.absmax = {k: o.absmax for k, o in self.obs.items()}
        self.absmax.update({k: float(max(np.abs(v).max() for v in vs)) for k, vs in self.gelu_in.items()})
        self.lambdas = {k: ref.calibrate_lambda(np.concatenate(vs)) for k, vs in self.gelu_in.items()}
        self.obs = None


def _gelu_erf(x):
    """erf-GELU in float64 (torch's vectorised erf: ``reference.gelu_erf`` is a Python loop)."""
    import torch

    return x * 0.5 * (1.0 + torch.special.erf(torch.from_numpy(x / math.sqrt(2.0))).numpy())


class _MinMax:
    def __init__(self):
        self.absmax = 0.0

    def update(self, x):
        self.absmax = max(self.absmax, float(np.abs(x).max()))

    def threshold(self):
        return self.absmax


INTEGER = {"w8": True, "emb8": True, "a8": True, "add16": True, "gelu": "lambda", "softmax": "shiftmax", "ln": "ilayernorm"}
ONLY = {  # one approximation alone (the rest float)
    "w8": {"w8": True}, "pool_round": {"pool_round": True}, "emb8": {"emb8": True}, "add16": {"add16": True}, "a8 (all sites)": {"a8": True},
    **{f"a8 {s} only": {"a8": {s}} for s in A8_SITES},
    "gelu lambda": {"gelu": "lambda"}, "gelu sigmoid form": {"gelu": "sigmoid"}, "gelu shift": {"gelu": "shift"},
    "gelu ibert": {"gelu": "ibert"}, "shiftmax": {"softmax": "shiftmax"}, "i-layernorm": {"ln": "ilayernorm"},
}


def leave_one_out(base: dict) -> dict:
    """``base`` with each approximation (and each a8 site) put back to float."""
    out = {}
    for k in base:
        out[f"all but {k}"] = {kk: v for kk, v in base.items() if kk != k}
    for s in A8_SITES:
        out[f"all but a8 {s}"] = {**base, "a8": set(A8_SITES) - {s}}
    return out


def cosines(a, b):
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--observer", default="minmax", choices=["minmax", "mse"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", default="", help="comma list of substrings: run the variants whose name holds one")
    args = ap.parse_args(argv)
    from examples import minilm as ml

    model = ml.load_model()
    sim = Sim(model.bert.state_dict(), model.bert.config)
    sents = ml.sentences()
    tok = lambda ss: ml.tokenize(ss)  # noqa: E731
    batch = lambda t: (t["input_ids"], t["token_type_ids"], t["attention_mask"])  # noqa: E731
    cal, ev = tok(sents[:N_CAL]), tok(sents[N_CAL:N_CAL + args.n])
    sim.calibrate([batch({k: v[i:i + 4] for k, v in cal.items()}) for i in range(0, N_CAL, 4)], args.observer)
    sim.opts = {}
    ref_out = sim.forward(*batch(ev))
    variants = {"integer (all)": INTEGER, **ONLY, **leave_one_out(INTEGER), **EXTRA}
    if args.only:
        variants = {k: v for k, v in variants.items() if any(w in k for w in args.only.split(","))}
    rows = {}
    for name, opts in variants.items():
        sim.opts = dict(opts)
        c = cosines(sim.forward(*batch(ev)), ref_out)
        rows[name] = {"mean_cosine": round(float(c.mean()), 5), "min_cosine": round(float(c.min()), 5)}
        if sim.gelu_bits and name == "integer (all)":
            print("lambda-GELU input bits", sim.gelu_bits)
        print(f"{name:32s} mean {c.mean():.4f}  min {c.min():.4f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"observer": args.observer, "samples": args.n, "variants": rows}, indent=1) + "\n")


EXTRA = {
    "integer, gelu ibert": {**INTEGER, "gelu": "ibert"},
    "integer, int16 gelu_out": {**INTEGER, "a16": {"gelu_out"}},
    "integer, int16 ln": {**INTEGER, "a16": {"ln"}},
    "integer, int16 ln+gelu_out": {**INTEGER, "a16": {"ln", "gelu_out"}},
    "integer, ibert, int16 gelu_out": {**INTEGER, "gelu": "ibert", "a16": {"gelu_out"}},
    "integer, ibert, int16 ln+gelu_out": {**INTEGER, "gelu": "ibert", "a16": {"ln", "gelu_out"}},
    "integer, ibert, int16 ln+gelu_out+v+ctx": {**INTEGER, "gelu": "ibert", "a16": {"ln", "gelu_out", "v", "ctx"}},
    "integer, ibert, int16 all matmul operands": {**INTEGER, "gelu": "ibert", "a16": {"ln", "q", "k", "v", "ctx", "gelu_out"}},
    "integer, ibert, int16 all + final": {**INTEGER, "gelu": "ibert", "a16": {"ln", "q", "k", "v", "ctx", "gelu_out", "final"}},
    "integer, pooled mean rounded to the int8 grid": {**INTEGER, "pool_round": True},
    "integer, ibert, int16 all, pooled mean rounded": {**INTEGER, "gelu": "ibert", "a16": {"ln", "q", "k", "v", "ctx", "gelu_out"}, "pool_round": True},
}

if __name__ == "__main__":
    main()
