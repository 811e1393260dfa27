"""Integer-only QAT (``shiftc finetune --integer-only``, docs/FINETUNE.md): the student's forward is
the integer program that ``shiftc compile --integer-only`` builds for the exported model, simulated
exactly (``qat_ops``), with straight-through gradients.

``IntegerProgram`` walks the ONNX graph. Every tensor carries a float value (the student's torch
ops, for the gradient) and its integer codes (the compiled program's). After every op the float
value is replaced by the dequantised codes in the forward pass while its gradient passes straight
through: ``y = dequant(codes) + (y_float - y_float.detach())``. The output is therefore exactly the
compiled model's output, and training sees the integer model's loss.

Activation thresholds are frozen before training by shiftc's own observers (``shiftc.calibrate``,
the compile's default method) on the training inputs, keyed by ONNX tensor name; the export records
them (``calibrate.RECORD_KEY``) and ``shiftc compile --integer-only`` uses the recorded ones.
Op set: ``SUPPORTED``; a Conv / Gemm is a shift-coded layer (``shift_param``: the integer shift
kernel) or one kept as a multiplication (int8 per-channel weights).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from shiftc import calibrate
from shiftc.core.errors import InputError
from shiftc.passes.integerize_stage import CNN_OBSERVER

from . import qat_ops as Q
from .shift_param import codes_of

SUPPORTED = ("Conv", "Gemm", "Relu", "Clip", "MaxPool", "GlobalAveragePool", "Flatten", "Add")
CALIBRATION_SAMPLES = 256  # at most this many training inputs calibrate


def check_ops(proto: onnx.ModelProto) -> None:
    """One-line ``InputError`` naming every op (and a node of it) outside ``SUPPORTED``."""
    bad: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type not in SUPPORTED:
            bad.setdefault(node.op_type, node.name or node.output[0])
    if bad:
        listing = ", ".join(f"{op} (node {where!r})" for op, where in bad.items())
        raise InputError(f"--integer-only fine-tuning has no integer form for {listing}; it takes {', '.join(SUPPORTED)}")


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            out[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
    return out


def ste(f: torch.Tensor, q: Q.IntV) -> torch.Tensor:
    """Forward: the dequantised codes exactly; backward: the gradient of ``f``."""
    return q.dequantized().to(f.device) + (f - f.detach())


def default_method(proto: onnx.ModelProto) -> str:
    """``--calibration-method auto`` of the compile (``integerize_stage.default_observer``) on this
    op set: percentile for a convolutional net, minmax otherwise."""
    return CNN_OBSERVER if any(n.op_type == "Conv" for n in proto.graph.node) else "minmax"


class IntegerProgram(nn.Module):
    """The integer forward of ``proto`` with the conv / linear layers of ``student`` (``layers``:
    module name -> (weight initializer, transposed, bias initializer), ``convert.initializer_map``)."""

    def __init__(self, proto: onnx.ModelProto, student: nn.Module, layers: dict):
        super().__init__()
        check_ops(proto)
        self.net = student
        self.nodes = list(proto.graph.node)
        self.consts = _constants(proto)
        by_weight = {w: m for m, (w, _t, _b) in layers.items()}
        self.modules_of = {i: by_weight.get(n.input[1]) for i, n in enumerate(self.nodes) if n.op_type in ("Conv", "Gemm")}
        missing = [self.nodes[i].name or self.nodes[i].output[0] for i, m in self.modules_of.items() if m is None]
        if missing:
            raise InputError(f"--integer-only: no shift-coded layer for node(s) {', '.join(missing)} (weights shared or not constant)")
        inputs = [i.name for i in proto.graph.input if i.name not in self.consts]
        if len(inputs) != 1 or len(proto.graph.output) != 1:
            raise InputError("--integer-only fine-tuning takes models with one input and one output")
        self.input, self.output = inputs[0], proto.graph.output[0].name
        self.calib: calibrate.Calibration | None = None
        self.frozen: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # module name -> (codes, alpha) once baked

    # ------------------------------------------------------------------ calibration
    def read_tensors(self) -> list[str]:
        """The tensors whose thresholds the program may use: the input, every op's data input, and
        both inputs and the output of an Add."""
        names = [self.input] + [n.input[0] for n in self.nodes]
        names += [t for n in self.nodes if n.op_type == "Add" for t in (n.input[1], n.output[0])]
        return list(dict.fromkeys(names))

    @torch.no_grad()
    def calibrate(self, inputs: np.ndarray, method: str, max_samples: int = CALIBRATION_SAMPLES) -> calibrate.Calibration:
        """Freeze the thresholds: shiftc's ``method`` observers on the float student's tensors, one
        update per batch of 64 inputs (the sampled observers keep a bounded subsample per update)."""
        names = self.read_tensors()
        obs = {n: calibrate.make_observer(method) for n in names}
        used = inputs[:max_samples]
        for i in range(0, len(used), 64):
            env = self.run(torch.from_numpy(used[i:i + 64]), integer=False)
            for n in names:
                obs[n].update(env[n][0].detach().cpu().numpy())
        self.calib = calibrate.Calibration.from_observers(obs, len(used))
        return self.calib

    def freeze(self, baked: dict) -> None:
        """After ``shift_param.bake``: the layers' codes come from the baked record."""
        self.frozen = {name: (codes, alpha) for name, (codes, alpha, _spec) in baked.items()}

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, integer=True)[self.output][0]

    def run(self, x: torch.Tensor, integer: bool = True) -> dict:
        """``tensor name -> (float value, IntV or None)`` for every tensor of the graph."""
        if integer and self.calib is None:
            raise RuntimeError("IntegerProgram.calibrate first")
        q = Q.quantize_input(x.detach().cpu().numpy().astype(np.float32), self.calib, self.input) if integer else None
        env = {self.input: (ste(x, q) if integer else x, q)}
        for i, node in enumerate(self.nodes):
            f, q = env[node.input[0]]
            f, q = self._add(node, env) if node.op_type == "Add" else self._op(i, node, f, q)
            env[node.output[0]] = (ste(f, q) if q is not None else f, q)
        return env

    def _codes(self, name: str, mod: nn.Module) -> tuple[np.ndarray, np.ndarray] | None:
        """The layer's shift codes and alphas; None for a layer kept as a multiplication."""
        if parametrize.is_parametrized(mod, "weight"):
            codes, alpha, _ = codes_of(mod)
            return codes, alpha
        return self.frozen.get(name)

    def _op(self, i: int, node, f: torch.Tensor, q: Q.IntV | None):
        op, at, src = node.op_type, _attrs(node), node.input[0]
        if op in ("Conv", "Gemm"):
            return self._linear(i, node, at, f, q)
        if op in ("Relu", "Clip"):
            lo, hi = (0.0, None) if op == "Relu" else self._clip_range(node, at)
            f = torch.clamp(f, min=lo, max=hi)
            return f, None if q is None else Q.clamp(q, lo, hi)
        if op == "MaxPool":
            pads = list(at.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:] or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise InputError(f"--integer-only: MaxPool {node.name!r} has asymmetric or automatic padding")
            kw = dict(kernel_size=list(at["kernel_shape"]), stride=list(at.get("strides", [1, 1])), padding=pads[:2],
                      dilation=list(at.get("dilations", [1, 1])), ceil_mode=bool(at.get("ceil_mode", 0)))
            return F.max_pool2d(f, **kw), None if q is None else Q.max_pool(q, **kw)
        if op == "GlobalAveragePool":
            return f.mean(dim=(2, 3), keepdim=True), None if q is None else Q.global_mean(q, self.calib, src)
        axis = int(at.get("axis", 1))  # Flatten: a per-channel value goes per tensor first (rules_layout)
        if q is not None:
            q = Q.as_int(q, self.calib, src, Q.WIDE_BITS) if q.axis is not None else q
            lead = int(np.prod(q.codes.shape[:axis]))
            q = Q.IntV(q.codes.reshape(lead, -1), q.scale, q.bits)
        return torch.flatten(f, axis) if axis > 0 else f.reshape(1, -1), q

    def _add(self, node, env):
        """The sum of two activations (a residual add; a constant operand is not simulated)."""
        if any(t in self.consts for t in node.input[:2]):
            raise InputError(f"--integer-only: Add {node.name!r} with a constant operand is not simulated")
        (fa, qa), (fb, qb) = env[node.input[0]], env[node.input[1]]
        q = None if qa is None else Q.add(qa, qb, self.calib, node.input[0], node.input[1], node.output[0])
        return fa + fb, q

    def _clip_range(self, node, at) -> tuple[float | None, float | None]:
        if "min" in at or "max" in at:  # opset < 11
            return at.get("min"), at.get("max")
        ends = []
        for k in (1, 2):
            name = node.input[k] if len(node.input) > k else ""
            if name and name not in self.consts:
                raise InputError(f"--integer-only: Clip {node.name!r} has a bound that is not a constant")
            ends.append(float(self.consts[name].reshape(-1)[0]) if name else None)
        return ends[0], ends[1]

    def _linear(self, i: int, node, at: dict, f: torch.Tensor, q: Q.IntV | None):
        name = self.modules_of[i]
        mod = self.net.get_submodule(name)
        coded = self._codes(name, mod) if q is not None else None
        if q is not None:  # a shift kernel reads signed int8; an int8 conv / matmul takes u8 too
            q = Q.as_int(q, self.calib, node.input[0], Q.ACT_BITS, unsigned_ok=coded is None)
            f = ste(f, q)
        bias = None if mod.bias is None else mod.bias.detach().cpu().numpy()
        if node.op_type == "Gemm":
            y = F.linear(f, mod.weight, mod.bias)
            conv = None
        else:
            t, l, b, r = list(at.get("pads", [0, 0, 0, 0]))
            conv = dict(padding=(t, l, b, r), stride=list(at.get("strides", [1, 1])),
                        dilation=list(at.get("dilations", [1, 1])), groups=int(at.get("group", 1)))
            y = F.conv2d(F.pad(f, (l, r, t, b)), mod.weight, mod.bias, conv["stride"], 0, conv["dilation"], conv["groups"])
        if q is None:
            return y, None
        if coded is None:
            return y, Q.int8_layer(q, mod.weight.detach().cpu().numpy(), bias, conv)
        return y, Q.shift_layer(q, *coded, bias, conv)
