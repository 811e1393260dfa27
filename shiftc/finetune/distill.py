"""Distillation losses: the FP32 model teaches its shift-coded copy on unlabelled inputs
(Hinton et al., "Distilling the Knowledge in a Neural Network", 2015), plus cross-entropy when
labels are given."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("auto", "kl", "cosine")


def first_output(out) -> torch.Tensor:
    """The model's first output (converted graphs may return a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def resolve(kind: str, teacher_out: torch.Tensor) -> str:
    """``auto`` -> ``kl`` for logits ``(N, classes)``, ``cosine`` for anything else (embeddings)."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    if kind != "auto":
        return kind
    return "kl" if teacher_out.ndim == 2 and teacher_out.shape[1] > 1 else "cosine"


def kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over the batch of ``KL(softmax(teacher/T) || softmax(student/T)) * T**2``."""
    t = F.log_softmax(teacher / temperature, dim=-1)
    s = F.log_softmax(student / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(student, teacher)`` over the batch (outputs flattened per sample)."""
    return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()


def loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None,
         temperature: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Distillation (``kl`` / ``cosine``) plus cross-entropy on ``labels`` if given: ``(total, parts)``."""
    d = kl(student, teacher, temperature) if kind == "kl" else cosine(student, teacher)
    parts = {kind: float(d.detach())}
    if labels is None:
        return d, parts
    ce = F.cross_entropy(student, labels)
    parts["ce"] = float(ce.detach())
    return d + ce, parts
