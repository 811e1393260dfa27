"""Shift pass: conv2d / matmul with constant weights -> shift-add kernels on packed PoT codes.

``RewriteShiftLayers(plan, encoded)`` (``shiftc.RewriteShiftLayers``), per layer of the plan::

    y = R.nn.conv2d(x, W_const, ...)      ->  y = R.call_tir(shift_conv2d_float, (x, packed_u8, alpha))
    y = R.matmul(x, W_const)              ->  y = R.call_tir(shift_matmul_float, (x, packed_u8, alpha))
    z = clip(R.add(y, b_const))           ->  z = R.call_tir(shift_..._float, (x, packed_u8, alpha, b))

``b`` also carries the layer's bias correction, where the stage computed one (``shift_bias``).

``W`` is encoded per output channel (``shiftc.reference.shift``: conv OIHW axis 0, matmul the
``N`` axis of ``W (K, N)``) into ``terms`` b-bit codes, stored as a packed uint8 bit stream
(``pack_codes``) and decoded inside the kernel, plus one float32 ``alpha`` per output channel.
A per-output-channel constant ``add`` and a following clamp (ReLU, Clip) are folded into the
kernel's epilogue (``min(max(acc * alpha + b, lo), hi)``, see ``shift_epilogue``). Only float32
NCHW/OIHW conv2d (any stride, padding, dilation, groups) and 2-D constant right-hand matmul
operands are candidates; constant transposes (ONNX Gemm ``transB``) are folded first. Each kernel
PrimFunc carries ``ShiftKernel(kind="shift_float", ...)`` (``shiftc.core.contract``), what the
integer pass needs to re-emit the layer.

Layers are named ``<op>_<i>`` (``conv2d_0``, ``matmul_3``), counting candidates of each op in
binding order of ``main``; the report lists them with those names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from shiftc.core.contract import ShiftKernel
from shiftc.core.provenance import tensors_of, with_tensors
from shiftc.core.relax_rewrite import rewrite_bindings
from shiftc.reference import shift as ref
from shiftc.reference import shift_uniform as ref_uniform
from shiftc.kernels import shift as K

from .shift_epilogue import Epilogue, data_arg, find_epilogues


@dataclass(frozen=True)
class ShiftConfig:
    """How one layer is encoded: ``terms`` power-of-two codes of ``bits`` bits each, or with
    ``uniform`` one ``bits``-bit uniform level per weight run as its ``terms`` canonical
    signed-digit shifts (``shiftc.reference.shift_uniform``; use ``uniform_config``)."""

    bits: int
    terms: int = 1
    zero_free: bool = True
    uniform: bool = False

    @property
    def label(self) -> str:
        return f"{self.bits}b uniform" if self.uniform else f"{self.bits}b x{self.terms}"

    @property
    def code_bits(self) -> int:
        """Stored code bits per weight."""
        return self.bits if self.uniform else self.bits * self.terms


def uniform_config(bits: int) -> ShiftConfig:
    return ShiftConfig(bits, ref_uniform.terms_for(bits), zero_free=False, uniform=True)


@dataclass(frozen=True)
class Int8Config:
    """A layer kept as a multiply (``shift_bits`` mixed plans): per-output-channel int8 weights and
    one float32 scale per channel. Float build: ``kernels.int8_weight``; ``--integer-only``: the
    layer stays a float op here and the integer pass gives it its own int8 codes."""

    bits: int = 8
    terms: int = 0  # no power-of-two terms: a multiply
    zero_free: bool = False

    @property
    def label(self) -> str:
        return "int8"


INT8 = Int8Config()


@dataclass
class Layer:
    """A rewrite candidate found in ``main``."""

    name: str
    op: str  # "conv2d" | "matmul"
    weight: np.ndarray  # as the op sees it: OIHW for conv2d, (K, N) for matmul
    attrs: dict  # conv2d: strides, padding, dilation, groups
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    epilogue: Epilogue = field(default_factory=Epilogue)  # bias add / clamp folded into the kernel

    @property
    def oi_weight(self) -> np.ndarray:
        """Weight with the output channel on axis 0 (CONTRACTS.md)."""
        return self.weight if self.op == "conv2d" else np.ascontiguousarray(self.weight.T)

    @property
    def macs(self) -> int:
        if self.op == "conv2d":
            return int(np.prod(self.out_shape)) * int(np.prod(self.weight.shape[1:]))
        return int(np.prod(self.out_shape)) * int(self.weight.shape[0])


# --------------------------------------------------------------------------- candidates
def _float_out(out_dtype) -> bool:
    return out_dtype is None or str(out_dtype) in ("", "float32", "void")


def _conv_candidate(call) -> bool:
    a = call.attrs
    return (
        isinstance(call.args[1], tvm.ir.expr.Constant)
        and a.data_layout == "NCHW" and a.kernel_layout == "OIHW" and a.out_layout == "NCHW"
        and _float_out(a.out_dtype)
        and call.args[0].ty.dtype == "float32"
        and call.args[1].value.dtype == "float32"
    )


def _matmul_candidate(call) -> bool:
    w = call.args[1]
    return (
        isinstance(w, tvm.ir.expr.Constant)
        and len(w.value.shape) == 2
        and w.value.dtype == "float32"
        and call.args[0].ty.dtype == "float32"
        and _float_out(call.attrs.out_dtype)
        and call.args[0].ty.ndim >= 1
    )


def candidate_kind(expr) -> str | None:
    """``"conv2d"``/``"matmul"`` if ``expr`` is a rewritable call, else None."""
    if not isinstance(expr, tvm.ir.expr.Call) or not isinstance(expr.op, tvm.ir.Op):
        return None
    if expr.op.name == "relax.nn.conv2d" and _conv_candidate(expr):
        return "conv2d"
    if expr.op.name == "relax.matmul" and _matmul_candidate(expr):
        return "matmul"
    return None


def _shape(sinfo) -> tuple[int, ...]:
    return tuple(int(d) for d in sinfo.shape)


def find_layers(mod: tvm.IRModule, func_name: str = "main") -> list[Layer]:
    """Every rewrite candidate of ``func_name`` in binding order, named ``<op>_<i>``."""
    layers: list[Layer] = []
    counts: dict[str, int] = {}
    func = mod[func_name]
    folds = find_epilogues(func, {b.var: candidate_kind(b.value) for blk in func.body.blocks for b in blk.bindings if candidate_kind(b.value)}, mod)
    for block in mod[func_name].body.blocks:
        for binding in block.bindings:
            kind = candidate_kind(binding.value)
            if kind is None:
                continue
            call = binding.value
            attrs = {}
            if kind == "conv2d":
                a = call.attrs
                attrs = {
                    "strides": tuple(int(v) for v in a.strides),
                    "padding": tuple(int(v) for v in a.padding),
                    "dilation": tuple(int(v) for v in a.dilation),
                    "groups": int(a.groups),
                }
            i = counts.get(kind, 0)
            counts[kind] = i + 1
            layers.append(Layer(
                f"{kind}_{i}", kind, call.args[1].value.numpy(), attrs, _shape(call.args[0].ty), _shape(binding.var.ty),
                folds[binding.var],
            ))
    return layers


# --------------------------------------------------------------------------- encoding
def encode(layer: Layer, cfg: ShiftConfig | Int8Config) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(terms, O, ...)`` int8 and alpha float32 ``(O,)`` of the layer's OI weight
    (``Int8Config``: int8 weights ``(O, ...)`` and their float32 scale per channel)."""
    w = layer.oi_weight
    if isinstance(cfg, Int8Config):
        from .integerize.scales import weight_codes

        q, scale = weight_codes(w, 0)
        return q, scale.astype(np.float32)
    if cfg.uniform:
        return ref_uniform.encode_uniform(w, cfg.bits)
    if cfg.terms == 1:
        codes, alpha = ref.encode_pot(w, cfg.bits, cfg.zero_free)
        return codes[None], alpha
    return ref.encode_multi(w, cfg.terms, cfg.bits, cfg.zero_free)


def decoded_weight(layer: Layer, codes: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The encoded weight in the op's own layout (float32); int8 weights when ``codes`` has the
    layer's own rank (``Int8Config``)."""
    if codes.ndim == layer.weight.ndim:
        w = (codes.astype(np.float32) * alpha.reshape((-1,) + (1,) * (codes.ndim - 1))).astype(np.float32)
        return w if layer.op == "conv2d" else np.ascontiguousarray(w.T)
    w = ref.decode_multi(codes, alpha) if codes.shape[0] > 1 else ref.decode_pot(codes[0], alpha)
    return w if layer.op == "conv2d" else np.ascontiguousarray(w.T)


def pack(codes: np.ndarray, cfg: ShiftConfig | Int8Config) -> np.ndarray:
    """The packed bit stream plus one spare byte (kernels read fields as two bytes); int8
    weights as they are."""
    if isinstance(cfg, Int8Config):
        return np.ascontiguousarray(codes, dtype=np.int8).view(np.uint8)
    stream = ref_uniform.pack_uniform(codes, cfg.bits) if cfg.uniform else ref.pack_codes(codes, cfg.bits, cfg.zero_free)
    return np.frombuffer(stream + b"\0", dtype=np.uint8).copy()


# --------------------------------------------------------------------------- rewrite
KERNEL_FORM = "float exponent-shift (packed codes decoded in-kernel)"


def kernel_bias(layer: Layer, correction: np.ndarray | None) -> np.ndarray | None:
    """The bias the kernel adds: the folded one plus the bias correction (``shift_bias``), if any."""
    bias = layer.epilogue.bias
    if correction is None:
        return bias
    return (correction if bias is None else bias + correction).astype(np.float32)


def _int8_call(bb: relax.BlockBuilder, layer: Layer, x, q, scale, bias):
    """The layer as a float multiply over its int8 weights (``kernels.int8_weight``)."""
    from shiftc.kernels import int8_weight as K8

    args = [x, relax.const(np.ascontiguousarray(q, dtype=np.int8), "int8"), relax.const(scale.astype(np.float32), "float32")]
    args += [relax.const(bias, "float32")] if bias is not None else []
    ep, a = layer.epilogue, layer.attrs
    if layer.op == "conv2d":
        return bb.call_te(K8.int8w_conv2d_float, *args, stride=a["strides"], padding=a["padding"], dilation=a["dilation"],
                          groups=a["groups"], lo=ep.lo, hi=ep.hi, primfunc_name_hint="int8w_conv2d_float")
    return bb.call_te(K8.int8w_matmul_float, *args, lo=ep.lo, hi=ep.hi, primfunc_name_hint="int8w_matmul_float")


def _kernel_call(bb: relax.BlockBuilder, layer: Layer, x, cfg: ShiftConfig | Int8Config, codes, alpha, correction=None):
    if isinstance(cfg, Int8Config):
        return _int8_call(bb, layer, x, codes, alpha, kernel_bias(layer, correction))
    packed = relax.const(pack(codes, cfg), "uint8")
    alpha_c = relax.const(alpha.astype(np.float32), "float32")
    ep = layer.epilogue
    bias = kernel_bias(layer, correction)
    extra = [relax.const(bias, "float32")] if bias is not None else []
    common = dict(terms=cfg.terms, bits=cfg.bits, zero_free=cfg.zero_free, packed=True, lo=ep.lo, hi=ep.hi, uniform=cfg.uniform)
    a = layer.attrs
    # what a later pass (integerize) needs to re-emit the layer on the integer path
    attrs = ShiftKernel(kind="shift_float", op=layer.op, bits=cfg.bits, terms=cfg.terms, zero_free=cfg.zero_free,
                        weight_shape=tuple(layer.weight.shape), strides=a.get("strides", ()), padding=a.get("padding", ()),
                        dilation=a.get("dilation", ()), groups=a.get("groups", 1), lo=ep.lo, hi=ep.hi, uniform=cfg.uniform).to_attrs()
    if layer.op == "conv2d":
        return bb.call_te(
            K.shift_conv2d_float, x, packed, alpha_c, *extra, weight_shape=layer.weight.shape, stride=a["strides"],
            padding=a["padding"], dilation=a["dilation"], groups=a["groups"], **common,
            primfunc_name_hint="shift_conv2d_float", primfunc_attrs=attrs,
        )
    return bb.call_te(
        K.shift_matmul_float, x, packed, alpha_c, *extra, out_features=layer.weight.shape[1], **common,
        primfunc_name_hint="shift_matmul_float", primfunc_attrs=attrs,
    )


@tvm.transform.module_pass(opt_level=0, name="shiftc.RewriteShiftLayers")
class RewriteShiftLayers:
    """Rewrite every layer of ``main`` named in ``plan`` (``name -> ShiftConfig``) into a shift
    kernel over its codes ``encoded[name] = (codes, alpha)``, with the bias add and clamp after it
    folded into the kernel (see the module docstring), plus ``bias_correction[name]`` (one value
    per output channel, ``shift_bias``) where given. Layers are found by ``find_layers``; the
    module should be constant-folded first (the shift stage is)."""

    def __init__(self, plan: dict[str, ShiftConfig], encoded: dict[str, tuple[np.ndarray, np.ndarray]],
                 bias_correction: dict[str, np.ndarray] | None = None):
        self.plan, self.encoded, self.bias_correction = plan, encoded, bias_correction or {}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        layers = find_layers(mod)
        folded = [v for layer in layers if layer.name in self.plan for v in layer.epilogue.consumed]
        seen, alias = [], {}

        def rule(_var, value, bb):
            first = data_arg(value)
            if first is not None and any(first.same_as(v) for v in folded):
                alias[_var.name] = first.name
                return first  # this bias add / clamp is already done inside the shift kernel
            if candidate_kind(value) is None:
                return None
            layer = layers[len(seen)]
            seen.append(layer.name)
            cfg = self.plan.get(layer.name)
            if cfg is None:
                return None
            return _kernel_call(bb, layer, value.args[0], cfg, *self.encoded[layer.name], self.bias_correction.get(layer.name))

        out, _ = rewrite_bindings(mod, lambda _func: rule, ["main"])
        if len(seen) != len(layers):
            raise RuntimeError(f"shift pass visited {len(seen)} candidates, expected {len(layers)}")
        out = relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(out))
        return _moved_tensors(out, alias)


def _moved_tensors(mod: tvm.IRModule, alias: dict[str, str]) -> tvm.IRModule:
    """The ONNX-tensor table (``core.provenance``) after epilogue folding: a kernel's value holds
    the tensor of the last folded op (a ReLU's output, not the conv's), under whichever of the
    two names canonicalisation kept. ``alias``: folded value name -> the value it now equals."""
    tensors = tensors_of(mod)
    if not alias or not tensors:
        return mod
    present = {b.var.name for blk in mod["main"].body.blocks for b in blk.bindings}
    for last in set(alias) - set(alias.values()):  # the end of each folded chain
        chain = [last]
        while chain[-1] in alias:
            chain.append(alias[chain[-1]])
        tensor = tensors.get(last)
        for name in chain:
            tensors.pop(name, None)
        if tensor is not None:
            tensors.update({name: tensor for name in (chain[-1], last) if name in present})
    return with_tensors(mod, tensors)


# --------------------------------------------------------------------------- selection
def skipped(layers: list[Layer], spec: str | None) -> set[str]:
    """Layer names excluded by ``spec``: comma-separated ``first``, ``last``, names or regexes."""
    out: set[str] = set()
    for item in (s.strip() for s in (spec or "").split(",")):
        if not item:
            continue
        if item == "first" and layers:
            out.add(layers[0].name)
        elif item == "last" and layers:
            out.add(layers[-1].name)
        else:
            try:
                rx = re.compile(item)
            except re.error as exc:
                raise ValueError(f"--shift-skip item {item!r} is not a layer name or regex: {exc}") from None
            out |= {layer.name for layer in layers if rx.fullmatch(layer.name)}
    return out
