"""``shiftc.finetune(model, data, ...)``: shift-aware fine-tuning end to end (docs/FINETUNE.md).

ONNX (path or ``ModelProto``) or ``torch.nn.Module`` in -> FP32 teacher + re-parameterised student
-> optional per-layer choice of multiply vs shift (``mixture``) -> distillation (``train``) ->
weights baked onto the code grid -> ONNX with the codes recorded (``export``).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import nn

from shiftc import frontend
from shiftc.core.errors import InputError

from . import convert, data as D, distill, export, mixture
from .attention import with_attention
from .shift_param import ShiftSpec, bake, shiftify
from .train import History, TrainConfig, device, fit, outputs


@dataclass
class FinetuneResult:
    """What fine-tuning produced and measured."""

    model: onnx.ModelProto
    path: Path | None
    history: History
    shifted: list[str]
    multiply: list[str]
    sensitivity: dict[str, float] = field(default_factory=dict)
    not_mapped: list[str] = field(default_factory=list)
    device: str = "cpu"
    seconds: float = 0.0
    program: object = None  # integer_only: the integer forward (``qat.IntegerProgram``) of the fine-tuned model
    attention: str = "softmax"
    attention_modules: list[str] = field(default_factory=list)


def _spec(bits, terms, zero, form) -> ShiftSpec:
    if zero not in ("free", "with-zero"):
        raise InputError(f"--shift-zero must be 'free' or 'with-zero', got {zero!r}")
    try:
        return ShiftSpec(int(bits), int(terms), zero == "free", form)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _fuse_bn(model: nn.Module) -> nn.Module:
    """Conv + BatchNorm folded (the exporter would fold them after training, moving the weights
    off the grid); models that torch.fx cannot trace are left as they are."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval())
    except Exception:  # noqa: BLE001 - untraceable model: the export check reports any moved weight
        return model


TORCH_SUFFIXES = (".pt", ".pth")


def load_module(path: Path) -> nn.Module:
    """A whole torch module saved with ``torch.save(model, path)`` (unpickled: its classes must be
    importable, and only trusted files should be loaded)."""
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - pickle / zip errors of every kind: one line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(f"{path} is not a loadable torch module ({type(exc).__name__}: {first})") from None
    if not isinstance(obj, nn.Module):
        raise InputError(f"{path} holds a {type(obj).__name__}, not a torch module: save the whole module "
                         "(torch.save(model, path)), not its state_dict")
    return obj.eval()


def _models(model) -> tuple[nn.Module, nn.Module, onnx.ModelProto | None, tuple | None]:
    """``(teacher, student, source ONNX or None, per-sample input shape or None)``."""
    if isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() in TORCH_SUFFIXES:
        model = load_module(Path(model))
    if isinstance(model, nn.Module):
        teacher = _fuse_bn(copy.deepcopy(model).eval())
        return teacher, copy.deepcopy(teacher), None, None
    proto = frontend.read_model(model)
    inputs = frontend.graph_inputs(proto)
    if len(inputs) != 1:
        raise InputError(f"shiftc finetune takes models with one input; this one has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:]) if all(d.dim_value > 0 for d in dims[1:]) else None
    teacher = convert.to_torch(proto)
    return teacher, copy.deepcopy(teacher), proto, shape


def _as_inputs(data, shape) -> np.ndarray:
    arr = D.load_inputs(data) if isinstance(data, (str, os.PathLike)) else np.asarray(data, dtype=np.float32)
    D.check_sample_shape(arr, shape)
    return arr


def _as_labels(labels, n) -> np.ndarray | None:
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        return D.load_labels(labels, n)
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise InputError(f"labels: shape {arr.shape} does not match the {n} inputs (expected ({n},))")
    return arr.astype(np.int64)


def _attention(student: nn.Module, kind: str, proto) -> list[str]:
    """``--attention``: the student's attention replaced (ShiftAddViT) or kept; the replaced names."""
    if kind != "softmax" and proto is not None:
        raise InputError(f"--attention {kind} rewrites attention modules: pass the torch module (an ONNX "
                         "model's graph keeps its softmax attention)")
    try:
        return with_attention(student, kind)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _integer_only_checks(proto) -> None:
    """What ``--integer-only`` fine-tuning takes: an ONNX model of ``qat.SUPPORTED`` ops."""
    from . import qat

    if proto is None:
        raise InputError("--integer-only fine-tunes ONNX models (its integer program follows the graph): export the module to ONNX first")
    qat.check_ops(proto)


def _program(proto, student: nn.Module, mapping: dict, inputs: np.ndarray, not_mapped: list[str]):
    """The integer program of the student with its activation thresholds frozen (``qat``)."""
    from . import qat

    if not_mapped:
        raise InputError(f"--integer-only: layer(s) {', '.join(not_mapped)} do not map back to one ONNX initializer")
    program = qat.IntegerProgram(proto, student, mapping)
    program.calibrate(inputs, qat.default_method(proto))
    return program


def _save(proto: onnx.ModelProto, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def finetune(model, data, labels=None, output: str | Path | None = None, *, bits: int = 4, terms: int = 1,
             zero: str = "free", form: str = "dense", steps: int | None = None, epochs: float | None = None,
             batch_size: int = 32, lr: float = 1e-4, loss: str = "auto", keep_multiply: int = 0,
             max_seconds: float | None = None,
             checkpoint: str | Path | None = None, resume: bool = False, attention: str = "softmax",
             integer_only: bool = False, callback: Callable[[dict], None] | None = None) -> FinetuneResult:
    """Fine-tune ``model`` (ONNX path / ``ModelProto`` / ``nn.Module`` / ``.pt`` path of a whole
    module) to ``bits``-bit, ``terms``-term shift codes by distillation from its FP32 self on ``data`` (array or .npy/.npz),
    plus cross-entropy on ``labels`` if given; writes ``output`` (ONNX) if given. ``keep_multiply``
    layers, the most sensitive ones, stay float multiplications. ``max_seconds`` bounds the training
    time (the learning-rate schedule then ends on time). ``attention='shiftadd'`` replaces the
    student's attention by ShiftAddViT add-only attention (``attention.py``; torch modules only).
    ``integer_only``: integer-only QAT (``qat.py``): the student trains through the integer program
    of ``shiftc compile --integer-only``, whose activation thresholds the export records.
    ``callback`` gets one dict per step."""
    t0 = time.perf_counter()
    spec = _spec(bits, terms, zero, form)
    teacher, student, proto, shape = _models(model)
    if integer_only:
        _integer_only_checks(proto)
    attention_modules = _attention(student, attention, proto)
    inputs = _as_inputs(data, shape)
    targets = _as_labels(labels, len(inputs))
    cfg = TrainConfig(steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, max_seconds=max_seconds)
    names = mixture.layer_names(student)
    mapping = convert.initializer_map(proto, student) if proto is not None else {n: None for n in names}
    not_mapped = [n for n in names if n not in mapping]
    try:
        kind = distill.resolve(loss, outputs(teacher, inputs[:2], 2, torch.device("cpu")))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    try:
        scores = mixture.sensitivity(student, list(mapping), inputs, spec, kind) if keep_multiply else {}
        keep = mixture.most_sensitive(scores, keep_multiply) if keep_multiply else []
    except ValueError as exc:
        raise InputError(str(exc)) from None
    shifted = shiftify(student, spec, skip=set(keep) | set(not_mapped))
    if not shifted:
        raise InputError("no conv / linear layer to fine-tune (none left after --keep-multiply, or none maps back to the ONNX)")
    program = _program(proto, student, mapping, inputs, not_mapped) if integer_only else None
    history = fit(program or student, teacher, inputs, targets, cfg, callback, Path(checkpoint) if checkpoint else None, resume)
    student.cpu()
    baked = bake(student)
    mods = dict(student.named_modules())
    extra = {"finetune": {"bits": spec.bits, "terms": spec.terms, "zero_free": spec.zero_free, "form": spec.form,
                          "attention": attention, "attention_modules": attention_modules,
                          "loss": kind, "steps": len(history.loss), "train_seconds": round(history.seconds, 1), "final_loss": history.loss[-1] if history.loss else None,
                          "labels": targets is not None, "integer_only": integer_only},
             "primitives": {n: ("multiply" if n in keep else "shift" if n in baked else "float (not mapped)") for n in names},
             "sensitivity": scores,
             "multiply": [mixture.weight_digest(mods[n].weight.detach().numpy()) for n in keep]}
    if proto is not None:
        out = export.write_back(proto, student, mapping, baked, **extra)
    else:
        example = torch.from_numpy(inputs[:1])
        out = export.export_module(student, example, baked, **extra)
    if program is not None:
        program.freeze(baked)
        export.record_thresholds(out, program.calib)
    path = Path(output) if output else None
    if path is not None:
        _save(out, path)
    return FinetuneResult(out, path, history, shifted, keep, scores, not_mapped, str(device()), time.perf_counter() - t0,
                          program, attention, attention_modules)
