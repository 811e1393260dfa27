"""ONNX -> torch through onnx2torch (a maintained converter), with the ops it cannot take named up
front, and the way back: which ONNX initializers hold each converted conv / linear weight.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

from shiftc.core.errors import InputError, UnsupportedModelError

# onnx2torch imports torchvision only to convert NonMaxSuppression and RoiAlign. shiftc does not install
# torchvision (no CPU build matches the pinned torch), so without it these ops are unsupported.
NEEDS_TORCHVISION = ("NonMaxSuppression", "RoiAlign")


def _torchvision_absent() -> bool:
    tv = sys.modules.get("torchvision")
    return getattr(tv, "shiftc_placeholder", False) or (tv is None and importlib.util.find_spec("torchvision") is None)


def _onnx2torch():
    """The onnx2torch package; when torchvision is absent, a placeholder module that refuses to run
    the ``torchvision.ops`` it uses is registered for its import (only those two converters use it),
    and removed again: other packages asking for torchvision (transformers) must find it absent."""
    placeholder = _torchvision_absent() and "torchvision" not in sys.modules
    if placeholder:
        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        tv.__path__, tv.ops, tv.shiftc_placeholder = [], ops, True
        ops.nms = ops.box_convert = ops.roi_align = _no_torchvision
        sys.modules.update({"torchvision": tv, "torchvision.ops": ops})
    try:
        import onnx2torch
    except ImportError as exc:
        raise InputError(f"shiftc finetune needs onnx2torch: pip install 'shiftc[finetune]' ({exc})") from None
    finally:
        if placeholder:
            for name in ("torchvision.ops", "torchvision"):
                sys.modules.pop(name, None)
    return onnx2torch


def _no_torchvision(*_a, **_k):
    raise UnsupportedModelError(f"{' and '.join(NEEDS_TORCHVISION)} need torchvision, which is not installed")


def unconvertible_ops(proto: onnx.ModelProto) -> list[str]:
    """ONNX op types of ``proto`` that onnx2torch has no converter for (at the model's opset)."""
    _onnx2torch()
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain: o.version for o in proto.opset_import}
    missing = set()
    for node in proto.graph.node:
        if node.op_type in NEEDS_TORCHVISION and _torchvision_absent():
            missing.add(node.op_type)
            continue
        try:
            get_converter(node.op_type, opsets.get(node.domain, opsets.get("", 1)), node.domain or "")
        except NotImplementedError:
            missing.add(node.op_type if not node.domain else f"{node.domain}.{node.op_type}")
    return sorted(missing)


def to_torch(proto: onnx.ModelProto) -> nn.Module:
    """The model as a torch ``fx.GraphModule`` (eval mode); ``UnsupportedModelError`` names the
    ops onnx2torch cannot convert."""
    missing = unconvertible_ops(proto)
    if missing:
        raise UnsupportedModelError(f"onnx2torch cannot convert op(s): {', '.join(missing)}")
    try:
        return _onnx2torch().convert(proto).eval()
    except (NotImplementedError, ValueError, RuntimeError) as exc:
        raise UnsupportedModelError(f"onnx2torch could not convert the model: {str(exc).splitlines()[0]}") from None


def _consumers(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _gemm_plain(node) -> bool:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)


def initializer_map(proto: onnx.ModelProto, model: nn.Module) -> dict[str, tuple[str, bool, str | None]]:
    """``module name -> (weight initializer, transposed, bias initializer or None)`` for every
    Conv2d / Linear of the converted ``model`` whose weight is one ONNX initializer used by exactly
    one Conv or plain Gemm node (found by value). Modules absent here cannot be written back."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    consumers = _consumers(proto)
    out = {}
    for mname, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        w = mod.weight.detach().cpu().numpy()
        hits = []
        for name, arr in inits.items():
            users = consumers.get(name, [])
            if len(users) != 1 or users[0].op_type not in ("Conv", "Gemm") or list(users[0].input[1:2]) != [name]:
                continue
            if users[0].op_type == "Gemm" and not _gemm_plain(users[0]):
                continue
            for transposed in (False, True):
                cand = arr.T if transposed else arr
                if cand.shape == w.shape and np.array_equal(cand, w):
                    bias = users[0].input[2] if len(users[0].input) > 2 and users[0].input[2] in inits else None
                    hits.append((name, transposed, bias))
        if len(hits) == 1:
            out[mname] = hits[0]
    return out
