"""ShiftAddViT add-only attention for fine-tuning (``--attention shiftadd``).

After ShiftAddViT (H. You, H. Shi, Y. Guo, Y. Lin: "ShiftAddViT: Mixture of Multiplication
Primitives Towards Efficient Vision Transformer", NeurIPS 2023): queries and keys are mapped to
binary codes by a learned hash, attention is computed in linear order, and every matmul among
Q, K and V becomes additions.

Formulation (per head, ``T`` tokens, head width ``d``)::

    Qb = sign(x Wq + bq)       Kb = sign(x Wk + bk)        (the learned hash: sign after a linear map)
    V  = x Wv + bv
    out = 2**-c * Qb @ (Kbᵀ @ V)                               c = round(log2(T * d)), a constant

``Qb @ Kbᵀ`` is the ±1 match count (matches minus mismatches of the two codes, XNOR-popcount);
linear ordering computes ``Kbᵀ @ V`` first, a ``d x d`` sum over tokens of ``±V`` rows, then
``Qb @ (KbᵀV)``, again a sum of ``±`` entries. The normaliser is the constant ``2**-c`` (no
softmax, no data-dependent division): it folds into the output scale. So the integer form needs no
multiplication anywhere between the projections: ``sign`` compares, the two matmuls select and
add (shiftc.reference.sign_attention), and the scale is a power of two. The projections themselves
are linear layers that the shift re-parameterisation turns into shift-add layers.

Training: ``sign`` has a straight-through gradient, clipped to ``|x| <= 1`` (hardtanh's).
Export: plain ONNX (``Sign``, ``Transpose``, ``MatMul``, ``Mul``), which shiftc imports; its
integer-only pass lowers ``Sign`` and the sign-operand ``MatMul`` to the add-only kernels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ATTENTIONS", "SignSTE", "ShiftAddAttention", "use_shiftadd_attention", "with_attention"]

ATTENTIONS = ("softmax", "shiftadd")


class SignSTE(torch.autograd.Function):
    """``sign(x)`` forward; the gradient passes where ``|x| <= 1`` (straight-through)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)

    @staticmethod
    def symbolic(g, x):
        return g.op("Sign", x)


class ShiftAddAttention(nn.Module):
    """Multi-head add-only attention: binary-hashed Q/K, linear ordering, power-of-two normaliser."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        qb, kb = SignSTE.apply(q), SignSTE.apply(k)
        kv = kb.transpose(-2, -1) @ v  # heads x d x d: sums of +-V rows
        out = (qb @ kv) * 2.0 ** -round(math.log2(int(t) * (c // self.heads)))
        return self.proj(out.transpose(1, 2).reshape(b, t, c))

    @classmethod
    def from_attention(cls, attn: nn.Module) -> "ShiftAddAttention":
        """The add-only attention initialised from a softmax attention's ``qkv`` / ``proj``."""
        new = cls(attn.proj.in_features, attn.heads)
        new.load_state_dict({f"{n}.{p}": v for n in ("qkv", "proj") for p, v in getattr(attn, n).state_dict().items()})
        return new


def use_shiftadd_attention(model: nn.Module) -> list[str]:
    """Replace, in place, every softmax attention module of ``model`` (one with ``qkv`` and
    ``proj`` Linear layers and a ``heads`` count, as in examples/models.py) by
    :class:`ShiftAddAttention`. Returns the replaced modules' names; raises ValueError when there
    are none."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear)
             and hasattr(m, "heads") and not isinstance(m, ShiftAddAttention)]
    if not found:
        raise ValueError("--attention shiftadd: the model has no attention module with qkv/proj linear layers")
    for name, m in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ShiftAddAttention.from_attention(m).to(m.proj.weight.device))
    return [name for name, _ in found]


def with_attention(model: nn.Module, kind: str) -> list[str]:
    """``--attention KIND`` on a torch student: 'softmax' keeps it (returns []), 'shiftadd'
    replaces its attention modules (:func:`use_shiftadd_attention`). Raises ValueError otherwise."""
    if kind not in ATTENTIONS:
        raise ValueError(f"--attention must be one of {ATTENTIONS}, got {kind!r}")
    return use_shiftadd_attention(model) if kind == "shiftadd" else []
