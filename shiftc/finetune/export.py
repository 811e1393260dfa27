"""The fine-tuned model as ONNX: weights exactly on the code grid, codes and alpha recorded in
``metadata_props`` (``shiftc.reference.shift_record``) for a lossless ``shiftc compile``."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from shiftc.reference import shift_record as R


def _set_initializer(proto: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, init in enumerate(proto.graph.initializer):
        if init.name == name:
            old = numpy_helper.to_array(init)
            if old.shape != value.shape:
                raise RuntimeError(f"initializer {name}: shape {value.shape} != {old.shape}")
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(old.dtype), name))
            return
    raise RuntimeError(f"no initializer {name!r}")


def _set_prop(proto: onnx.ModelProto, key: str, value: str) -> None:
    """Set (replace) one ``metadata_props`` entry, keeping the others."""
    props = {p.key: p.value for p in proto.metadata_props}
    props[key] = value
    onnx.helper.set_model_props(proto, props)


def record(proto: onnx.ModelProto, coded: list[R.CodedWeight], **extra) -> None:
    """Write (replace) the shift-codes record in ``proto.metadata_props``."""
    _set_prop(proto, R.METADATA_KEY, R.dumps(coded, **extra))


def record_thresholds(proto: onnx.ModelProto, calib) -> None:
    """Write (replace) the frozen activation thresholds of integer-only QAT in ``metadata_props``
    (``shiftc.calibrate.RECORD_KEY``; ``shiftc compile --integer-only`` uses them)."""
    from shiftc import calibrate

    _set_prop(proto, calibrate.RECORD_KEY,
              calibrate.record_json(calib.method, calib.samples, calib.thresholds, calib.nonnegative))


def write_back(proto: onnx.ModelProto, model: nn.Module, mapping: dict, baked: dict, **extra) -> onnx.ModelProto:
    """A copy of the source ``proto`` with every mapped module's weight and bias replaced by the
    fine-tuned ones (``convert.initializer_map``) and the codes of the ``baked`` ones recorded."""
    out = copy.deepcopy(proto)
    mods = dict(model.named_modules())
    coded = []
    for mname, (w_name, transposed, b_name) in mapping.items():
        mod = mods[mname]
        w = mod.weight.detach().cpu().numpy()
        _set_initializer(out, w_name, w.T if transposed else w)
        if b_name is not None and mod.bias is not None:
            _set_initializer(out, b_name, mod.bias.detach().cpu().numpy())
        if mname in baked:
            codes, alpha, spec = baked[mname]
            coded.append(R.CodedWeight(w_name, codes, alpha, spec.bits, spec.zero_free))
    record(out, coded, **extra)
    onnx.checker.check_model(out)
    return out


def _find_initializer(proto: onnx.ModelProto, weight: np.ndarray) -> str | None:
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        for cand in (arr, arr.T if arr.ndim == 2 else None):
            if cand is not None and cand.shape == weight.shape and np.array_equal(cand, weight):
                return init.name
    return None


def export_module(model: nn.Module, example: torch.Tensor, baked: dict, **extra) -> onnx.ModelProto:
    """``torch.onnx.export`` of a fine-tuned ``nn.Module`` (opset 17) with the codes recorded under
    the exported initializers' names; raises when the exporter changed a coded weight (e.g. by
    folding a BatchNorm into it: fuse those before fine-tuning)."""
    model = model.eval().cpu()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (example.cpu(),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"], do_constant_folding=True)
        proto = onnx.load(str(path))
    mods = dict(model.named_modules())
    coded = []
    for mname, (codes, alpha, spec) in baked.items():
        name = _find_initializer(proto, mods[mname].weight.detach().numpy())
        if name is None:
            raise RuntimeError(f"the ONNX export changed the coded weight of {mname} (fold BatchNorm into it before fine-tuning)")
        coded.append(R.CodedWeight(name, codes, alpha, spec.bits, spec.zero_free))
    record(proto, coded, **extra)
    return proto
