"""A mixture of primitives per layer: the layers whose post-training shift coding hurts the model
most stay multiplications (float weights), measured, not assumed.

Sensitivity of a layer = the distillation loss (KL on logits, else 1 - cosine) of the FP32 model
with only that layer's weight replaced by its post-training code (``shiftc.reference.shift``),
against the FP32 outputs, on up to ``SAMPLES`` training inputs.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from shiftc.reference import shift as ref

from . import distill
from .shift_param import SHIFTABLE, ShiftSpec

SAMPLES = 32


def weight_digest(weight: np.ndarray) -> str:
    """SHA-256 of a float32 C-order weight (output channel first): how compile recognises it."""
    return hashlib.sha256(np.ascontiguousarray(weight, dtype=np.float32).tobytes()).hexdigest()


def _posttraining(w: np.ndarray, spec: ShiftSpec) -> np.ndarray:
    if spec.terms == 1:
        codes, alpha = ref.encode_pot(w, spec.bits, spec.zero_free)
        return ref.decode_pot(codes, alpha)
    codes, alpha = ref.encode_multi(w, spec.terms, spec.bits, spec.zero_free)
    return ref.decode_multi(codes, alpha)


@torch.no_grad()
def sensitivity(model: nn.Module, names: list[str], inputs: np.ndarray, spec: ShiftSpec, kind: str) -> dict[str, float]:
    """``name -> loss`` with only that layer shift-coded (the rest FP32), see the module docstring."""
    model.eval()
    x = torch.from_numpy(inputs[:SAMPLES])
    target = distill.first_output(model(x))
    mods = dict(model.named_modules())
    out = {}
    for name in names:
        mod = mods[name]
        keep = mod.weight.detach().clone()
        mod.weight.copy_(torch.from_numpy(_posttraining(keep.numpy(), spec)))
        got = distill.first_output(model(x))
        out[name] = float(distill.kl(got, target) if kind == "kl" else distill.cosine(got, target))
        mod.weight.copy_(keep)
    return out


def most_sensitive(scores: dict[str, float], count: int) -> list[str]:
    """The ``count`` layers with the highest sensitivity (kept as multiplications)."""
    if count < 0 or count > len(scores):
        raise ValueError(f"--keep-multiply must be between 0 and the {len(scores)} conv/linear layers, got {count}")
    return sorted(scores, key=lambda n: -scores[n])[:count]


def layer_names(model: nn.Module) -> list[str]:
    """Every conv / linear module name in ``named_modules`` order."""
    return [n for n, m in model.named_modules() if isinstance(m, SHIFTABLE)]
