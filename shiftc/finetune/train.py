"""The fine-tuning loop: Adam on the shift latents, alphas and biases, cosine learning rate,
teacher outputs computed once, checkpoints and resume. Progress goes to a callback."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from shiftc.core.errors import InputError

from . import distill
from .shift_param import shift_modules


@dataclass
class TrainConfig:
    """How long and how fast to train (``steps`` wins over ``epochs`` when both are given)."""

    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    lr: float = 1e-4
    loss: str = "auto"
    temperature: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    max_seconds: float | None = None  # wall-clock bound: the schedule runs to its end by then

    def total_steps(self, n: int) -> int:
        if self.steps is not None:
            if self.steps < 1:
                raise InputError(f"--steps must be >= 1, got {self.steps}")
            return int(self.steps)
        epochs = 1.0 if self.epochs is None else self.epochs
        if not epochs > 0:
            raise InputError(f"--epochs must be > 0, got {epochs}")
        return max(1, math.ceil(epochs * n / self.batch_size))


@dataclass
class History:
    """Per-step training loss (``loss``) and its parts."""

    loss: list[float] = field(default_factory=list)
    parts: list[dict] = field(default_factory=list)
    resumed_at: int = 0
    seconds: float = 0.0  # training time, over all runs of a resumed fine-tune
    progress: float = 0.0  # schedule position reached (1.0 = done)


def progress(step: int, total: int, seconds: float, cfg: TrainConfig) -> float:
    """Schedule position in [0, 1]: the step fraction, or the time fraction when ``max_seconds``
    is set and further along."""
    frac = step / total
    return max(frac, seconds / cfg.max_seconds) if cfg.max_seconds else frac


def device() -> torch.device:
    """CUDA when present, else the CPU (the default)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def outputs(model: nn.Module, inputs: np.ndarray, batch: int, dev: torch.device) -> torch.Tensor:
    """The model's first output on every input, batched (on ``dev``)."""
    model.eval()
    try:
        outs = [distill.first_output(model(torch.from_numpy(inputs[i:i + batch]).to(dev))) for i in range(0, len(inputs), batch)]
    except RuntimeError as exc:
        raise InputError(f"the model does not run on a batch of {min(batch, len(inputs))} inputs (a fixed batch size in a "
                         f"Reshape?): {str(exc).splitlines()[0]}") from None
    return torch.cat(outs)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The shift latents and alphas of every re-parameterised module, and their biases."""
    params = []
    for mod in shift_modules(model).values():
        params.extend(mod.parametrizations.weight.parameters())  # latents (original*) and alpha
        if mod.bias is not None:
            params.append(mod.bias)
    return params


def _state(step, model, opt, cfg, history) -> dict:
    return {"step": step, "model": model.state_dict(), "opt": opt.state_dict(), "config": asdict(cfg),
            "loss": history.loss, "parts": history.parts, "seconds": history.seconds}


def _resume(path: Path, model, opt, cfg, history) -> int:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("config") != asdict(cfg):
        raise InputError(f"--resume: checkpoint {path} was made with other training settings: {state.get('config')}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    history.seconds = float(state["seconds"])
    history.loss, history.parts, history.resumed_at = list(state["loss"]), list(state["parts"]), state["step"]
    return int(state["step"])


def _batches(n: int, batch: int, gen: torch.Generator):
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1 if n >= batch else 1, batch):
            yield perm[i:i + batch]


def fit(student: nn.Module, teacher: nn.Module, inputs: np.ndarray, labels: np.ndarray | None, cfg: TrainConfig,
        callback: Callable[[dict], None] | None = None, checkpoint: Path | None = None, resume: bool = False) -> History:
    """Distil ``teacher`` into the re-parameterised ``student`` (both in eval mode: normalisation
    statistics and dropout stay fixed) for ``cfg.total_steps`` steps; returns the loss history."""
    dev = device()
    student.to(dev).eval()
    teacher.to(dev).eval()
    target = outputs(teacher, inputs, max(cfg.batch_size, 64), dev)
    kind = distill.resolve(cfg.loss, target)
    if labels is not None and kind != "kl":
        raise InputError("--labels needs a classifier: the model output must be logits (N, classes)")
    if labels is not None and labels.max() >= target.shape[1]:
        raise InputError(f"--labels has class {labels.max()} but the model has {target.shape[1]} outputs")
    total = cfg.total_steps(len(inputs))
    opt = torch.optim.Adam(trainable(student), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = History()
    step = _resume(checkpoint, student, opt, cfg, history) if resume and checkpoint and checkpoint.exists() else 0
    if resume and step == 0 and (checkpoint is None or not checkpoint.exists()):
        raise InputError(f"--resume: no checkpoint at {checkpoint}")
    history.progress = progress(step, total, history.seconds, cfg)
    x_all = torch.from_numpy(inputs)
    y_all = None if labels is None else torch.from_numpy(labels)
    batches = _batches(len(inputs), min(cfg.batch_size, len(inputs)), gen)
    for _ in range(step):  # a resumed run sees the batches of an uninterrupted one (same seed)
        next(batches)
    start = time.perf_counter() - history.seconds
    while history.progress < 1.0:
        for group in opt.param_groups:  # cosine decay over the schedule
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * history.progress))
        idx = next(batches)
        out = distill.first_output(student(x_all[idx].to(dev)))
        y = None if y_all is None else y_all[idx].to(dev)
        loss, parts = distill.loss(kind, out, target[idx.to(dev)], y, cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        history.seconds = time.perf_counter() - start
        history.progress = progress(step, total, history.seconds, cfg)
        history.loss.append(float(loss.detach()))
        history.parts.append(parts)
        if callback:
            callback({"step": step, "total": total, "progress": history.progress, "loss": history.loss[-1], **parts})
        if checkpoint is not None and (step % cfg.checkpoint_every == 0 or history.progress >= 1.0):
            torch.save(_state(step, student, opt, cfg, history), checkpoint)
    return history
