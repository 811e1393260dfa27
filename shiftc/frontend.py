"""ONNX loading, checking and import into Relax.

Everything a user can get wrong about a model is caught here, with a one-line cause, before TVM
sees it: missing or corrupt files, checker failures, unpinned dynamic dimensions and ops the Relax
importer does not convert. After pinning, shape computations (``Shape`` -> ``Gather`` -> arithmetic
feeding ``Pad``/``Reshape``, as exporters emit them) are folded by onnxruntime's BASIC optimiser so
the importer sees static shapes (``simplify``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .core.errors import InputError, UnsupportedModelError
from .core.tensor_spec import TensorSpec  # noqa: F401 (re-exported: frontend.TensorSpec)

log = logging.getLogger(__name__)


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``name=1x3x224x224`` (as given to ``--input-shape``)."""
    m = re.fullmatch(r"\s*([^=]+)=(\d+(?:[x,]\d+)*)\s*", text)
    if not m:
        raise InputError(f"bad --input-shape {text!r}: expected NAME=DIMxDIMx... e.g. input=1x3x224x224")
    return m.group(1), tuple(int(d) for d in re.split("[x,]", m.group(2)))


def read_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """Read a path or pass a ModelProto through, then run ``onnx.checker``."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        path = Path(model)
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})".strip()) from None
        if not proto.graph.node and not proto.graph.output:
            raise InputError(f"{path} is not an ONNX model (it parsed to an empty graph)")
    # protobuf parses a string field with bad UTF-8 into bytes; the checker then fails decoding its own message
    where = _non_utf8_field(proto)
    if where:
        raise InputError(f"the model is corrupt: its field {where} is not valid UTF-8 text")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "validation failed"
        raise InputError(f"the ONNX checker rejected the model: {first}") from None
    return proto


def _non_utf8_field(msg, where: str = "model") -> str | None:
    """The path of the first string field of ``msg`` (recursively) that did not decode as UTF-8, or None."""
    for fd, value in msg.ListFields():
        if fd.type not in (fd.TYPE_STRING, fd.TYPE_MESSAGE):
            continue
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        for i, item in enumerate(value if repeated else [value]):
            at = f"{where}.{fd.name}" + (f"[{i}]" if repeated else "")
            if fd.type == fd.TYPE_STRING and not isinstance(item, str):
                return at
            if fd.type == fd.TYPE_MESSAGE:
                found = _non_utf8_field(item, at)
                if found:
                    return found
    return None


def check_weights(proto: onnx.ModelProto) -> None:
    """Refuse NaN/Inf in float initializers and Constant values: no quantizer can represent them, and
    folding them (e.g. into a BatchNorm scale) turns the whole layer into NaN."""
    tensors = [*proto.graph.initializer,
               *(a.t for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value")]
    for t in tensors:
        if t.data_type not in _FLOAT_TYPES:
            continue
        try:
            arr = numpy_helper.to_array(t)
        except Exception as exc:  # raw bytes that do not fill its dims: the checker lets some through
            raise InputError(f"weight {t.name!r} is corrupt ({type(exc).__name__}: {str(exc)[:200]})") from None
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"weight {t.name!r} holds {bad} NaN/Inf value(s); shiftc compiles only finite weights")


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (not initializers)."""
    inits = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def pin_shapes(proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None) -> onnx.ModelProto:
    """Replace every symbolic input dimension with the user's value; error on any left unbound."""
    input_shapes = dict(input_shapes or {})
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    inputs = graph_inputs(proto)
    unknown = set(input_shapes) - {i.name for i in inputs}
    if unknown:
        names = ", ".join(i.name for i in inputs)
        raise InputError(f"--input-shape names unknown input(s) {sorted(unknown)}; the model's inputs are: {names}")
    for inp in inputs:
        dims = inp.type.tensor_type.shape.dim
        if inp.name in input_shapes:
            pinned = input_shapes[inp.name]
            if len(pinned) != len(dims):
                raise InputError(f"input {inp.name!r} has rank {len(dims)} but --input-shape gives {len(pinned)} dims")
            for d, v in zip(dims, pinned):
                # -1 / 0 are exporters' spellings of "unknown", as dynamic as a dim_param
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != v:
                    raise InputError(f"input {inp.name!r} has static dim {d.dim_value}, --input-shape gives {v}")
                d.Clear()
                d.dim_value = v
        unbound = [d.dim_param or "?" for d in dims if not d.HasField("dim_value") or d.dim_value <= 0]
        if unbound:
            raise InputError(
                f"input {inp.name!r} has dynamic dimension(s) {unbound} with no bound; "
                f"pin them with --input-shape {inp.name}=" + "x".join("N" for _ in dims)
            )
    return reinfer(proto)


def reinfer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop output and intermediate shapes and re-derive them from the (pinned) inputs."""
    for vi in proto.graph.output:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") or (d.HasField("dim_value") and d.dim_value <= 0):
                d.Clear()
    del proto.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"ONNX shape inference failed: {first}") from None


def unsupported_nodes(proto: onnx.ModelProto) -> dict[str, list[str]]:
    """Op type -> node names for every node the Relax ONNX importer has no converter for."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    missing: dict[str, list[str]] = {}
    for i, node in enumerate(proto.graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in known:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            missing.setdefault(key, []).append(node.name or f"#{i}")
    return missing


_SHAPE_OPS = ("Shape", "Size")


def _static(vi: onnx.ValueInfoProto | None) -> bool:
    if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return False
    return all(d.HasField("dim_value") and d.dim_value >= 0 for d in vi.type.tensor_type.shape.dim)


def needs_simplify(proto: onnx.ModelProto) -> str | None:
    """Why a pinned, shape-inferred graph needs its shape computations folded; None if it is static."""
    shape_ops = sum(n.op_type in _SHAPE_OPS for n in proto.graph.node)
    if shape_ops:
        return f"{shape_ops} Shape/Size node(s)"
    known = {vi.name: vi for vi in list(proto.graph.value_info) + list(proto.graph.output)}
    for node in proto.graph.node:
        for name in node.output:
            if name and not _static(known.get(name)):
                return f"tensor {name!r} has no static shape"
    return None


# BASIC-level rewrites that change the graph's structure (fusions, transpose motion) rather than fold
# what is constant: left off, so the passes downstream see the model's own ops.
_ORT_KEEP_STRUCTURE = ["MatMulAddFusion", "ConvAddFusion", "ConvMulFusion", "ConvBNFusion", "ReshapeFusion",
                       "GemmTransposeFusion", "DivMulFusion", "FuseReluClip", "NotWhereFusion", "ConstantSharing",
                       "CommonSubexpressionElimination", "TransposeOptimizer"]


def _ort_basic(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's BASIC graph optimiser, structural rewrites off: constant and shape folding and
    redundant-node removal (Identity, Dropout, no-op Slice/Unsqueeze/Cast)."""
    import tempfile

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="shiftc-simplify-") as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "simplified.onnx")
        try:
            ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=_ORT_KEEP_STRUCTURE)
        except Exception as exc:
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
            raise UnsupportedModelError(f"onnxruntime could not load the model: {lines[0][:300]}") from None
        return onnx.load(opts.optimized_model_filepath)


def _check_simplified(graph: onnx.ModelProto) -> str | None:
    """Why the optimiser's graph cannot replace the original (None: it can)."""
    try:
        onnx.checker.check_model(graph)
    except onnx.checker.ValidationError as exc:
        return "the ONNX checker rejected it: " + (str(exc).strip().splitlines() or ["?"])[0]
    missing = unsupported_nodes(graph)
    if missing:
        return f"it has op(s) the Relax importer lacks: {sorted(missing)}"
    return None


def simplify(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """Fold the shape computations of a pinned model with onnxruntime's BASIC optimiser, then re-infer
    shapes (with data propagation). An already static model is returned as is. The result computes
    the same function within float round-off; ``proto`` stays the reference for onnxruntime runs."""
    before = len(proto.graph.node)
    reason = needs_simplify(proto)
    unchanged = {"nodes_before": before, "nodes_after": before, "applied": False}
    if reason is None:
        return proto, {**unchanged, "reason": "already static"}
    graph = reinfer(_ort_basic(proto))
    problem = _check_simplified(graph)
    if problem:
        log.warning("graph simplification not used: %s", problem)
        return proto, {**unchanged, "reason": f"{reason}; not used: {problem}"}
    summary = {"nodes_before": before, "nodes_after": len(graph.graph.node), "applied": True, "reason": reason}
    log.info("simplified the graph (%s): %d -> %d nodes", reason, before, summary["nodes_after"])
    return graph, summary


_DTYPES = {getattr(onnx.TensorProto, n): n.lower() for n in ("FLOAT", "FLOAT16", "DOUBLE", "INT8", "UINT8", "INT16", "INT32", "INT64", "BOOL")}
_DTYPES[onnx.TensorProto.FLOAT] = "float32"
_DTYPES[onnx.TensorProto.DOUBLE] = "float64"
_DTYPES[onnx.TensorProto.FLOAT16] = "float16"


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    if tt.elem_type not in _DTYPES:
        raise UnsupportedModelError(f"tensor {vi.name!r} has unsupported element type {onnx.TensorProto.DataType.Name(tt.elem_type)}")
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
    return TensorSpec(vi.name, shape, _DTYPES[tt.elem_type])


def io_specs(proto: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of a pinned, shape-inferred model."""
    outs = [_spec(o) for o in proto.graph.output]
    for o in outs:
        if any(d < 0 for d in o.shape):
            raise UnsupportedModelError(f"output {o.name!r} has a shape ONNX inference could not make static: {o.shape}")
    ins = [_spec(i) for i in graph_inputs(proto)]
    for kind, specs in (("input", ins), ("output", outs)):
        names = [s.name for s in specs]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise InputError(f"the model names two graph {kind}s {dup!r}; {kind} names must be unique")
    return ins, outs


@dataclass
class LoadedModel:
    """A checked, shape-pinned ONNX model ready for import.

    ``proto`` is the user's model with its inputs pinned: the reference that onnxruntime runs.
    ``graph`` is what the Relax importer gets: ``proto`` with its shape computations folded
    (``simplify``; the same object when nothing needed folding). ``simplified`` says what that did.
    """

    proto: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    graph: onnx.ModelProto | None = None
    simplified: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.graph is None:
            self.graph = self.proto

    def initializers(self) -> dict[str, np.ndarray]:
        return {i.name: numpy_helper.to_array(i) for i in self.graph.graph.initializer}


def load(model: str | Path | onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None) -> LoadedModel:
    """Read, check, pin and validate a model (no TVM involved)."""
    proto = read_model(model)
    check_weights(proto)
    missing = unsupported_nodes(proto)
    if missing:
        listing = "; ".join(f"{op} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" for op, names in missing.items())
        raise UnsupportedModelError(f"unsupported op(s): {listing}")
    proto = pin_shapes(proto, input_shapes)
    graph, summary = simplify(proto)
    inputs, outputs = io_specs(graph)
    return LoadedModel(proto, inputs, outputs, graph, summary)


def to_relax(loaded: LoadedModel):
    """Import into a Relax IRModule with weights bound as constants; every value is named after
    the ONNX node it came from, and the module carries the table (``shiftc.core.provenance``)."""
    from .core.provenance import with_nodes, with_tensors

    shape_dict = {i.name: list(i.shape) for i in loaded.inputs}
    dtype_dict = {i.name: i.dtype for i in loaded.inputs}
    try:
        # the importer print()s "Error converting operator ..." to stdout before it raises
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            importer = _naming_importer()(shape_dict, dtype_dict, keep_params_in_input=False)
            mod = importer.import_model(loaded.graph)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(f"the Relax ONNX importer failed: {msg[:300]}") from None
    mod, table, tensors = _name_values(mod, importer.owner)
    log.info("imported %d nodes into Relax", len(loaded.graph.graph.node))
    tensors.update({p.name: spec.name for p, spec in zip(mod["main"].params, loaded.inputs)})
    return with_tensors(with_nodes(mod, table), tensors)


def _naming_importer():
    """TVM's ONNX importer, binding each node's result to a variable that remembers its node.

    The stock importer keeps no provenance (values are ``lv0, lv1, ...``, no spans). This subclass
    binds a node's result as soon as it is converted (the stock importer binds it where it is first
    used, once per use: the same values) and records ``var -> node``; ``_name_values``
    then names the variables. Graph nodes get unique labels first (``_labelled``) because the
    converter hook sees a node only through its name."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as OF

    from .core.provenance import OnnxNode

    class NamingImporter(OF.ONNXGraphImporter):
        def import_model(self, model: onnx.ModelProto):
            self.owner, self.by_label = {}, {}
            graph = _labelled(model.graph, self.by_label)
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
            return self.from_onnx(graph, opset)

        def _convert_operator(self, op_name, inputs, attrs, opset):
            sym = _relax_pad(inputs, attrs, opset, [self._nodes, self._params]) if op_name == "Pad" else None
            if sym is not None:
                sym = self.bb.normalize(sym)
            else:
                sym = super()._convert_operator(op_name, inputs, attrs, opset)
            node = self.by_label.get(attrs["tvm_custom"]["name"])
            return sym if node is None else self._bound(sym, OnnxNode(*node))

        def _bound(self, sym, node):
            if isinstance(sym, relax.Tuple):
                return relax.Tuple([self._bound(f, node) for f in sym.fields])
            if isinstance(sym, (relax.Call, relax.TupleGetItem)):
                sym = self.bb.emit(sym)
            if isinstance(sym, relax.Var) and sym not in self.owner:
                self.owner[sym] = node
                if isinstance(sym.ty, relax.TupleType):  # unpacked here, so its items are this node's too
                    return relax.Tuple([self._bound(relax.TupleGetItem(sym, i), node) for i in range(len(sym.ty.fields))])
            return sym

    return NamingImporter


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


def _relax_pad(inputs, attrs, opset: int, params):
    """ONNX ``Pad`` on a float tensor as one ``relax.nn.pad`` (whose attributes the passes read;
    the stock converter emits an opaque kernel), for constant / reflect / edge modes with constant,
    non-negative pads; None leaves the node to the stock converter. Same TOPI kernels once legalised."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as OF

    mode = attrs.get("mode", b"constant").decode()
    ty = inputs[0].ty
    if mode not in PAD_MODES or not isinstance(ty, relax.TensorType) or not str(ty.dtype).startswith("float"):
        return None
    if opset < 11:
        pads, value = list(attrs.get("pads", ())), attrs.get("value", 0.0)
        before, after = pads[: len(pads) // 2], pads[len(pads) // 2:]
    else:
        try:
            before, after, value = OF.Pad._parse_pads_and_axes(inputs, params)
        except ValueError:  # dynamic pads or axes: the stock converter says so
            return None
    if min(list(before) + list(after), default=0) < 0:  # a negative pad crops
        return None
    width = [int(p) for pair in zip(before, after) for p in pair]
    return relax.op.nn.pad(inputs[0], width, PAD_MODES[mode], float(value))


def _labelled(graph: onnx.GraphProto, by_label: dict) -> onnx.GraphProto:
    """A copy of ``graph`` whose nodes have unique names (``by_label``: label -> (name, op, output))."""
    graph = onnx.GraphProto.FromString(graph.SerializeToString())
    for i, node in enumerate(graph.node):
        label = f"{node.name}#{i}"
        by_label[label] = (node.name, node.op_type, node.output[0] if node.output else "")
        node.name = label
    return graph


def _identifier(name: str) -> str:
    s = re.sub(r"\W+", "_", name).strip("_")
    return s if s and not s[0].isdigit() else f"n_{s}"


def _name_values(mod, owner: dict):
    """``mod`` with each binding of ``main`` named after its node: the node's own results by the
    node's name, values bound while converting it (they precede its result and follow the
    previous node's) by that name plus ``_k``. Returns the module, its provenance table (value name
    -> OnnxNode) and the tensors table (a node's own result -> its first output tensor)."""
    from tvm.relax import TensorType

    func = mod["main"]
    bindings = [b for block in func.body.blocks for b in block.bindings]
    taken = {p.name for p in func.params}
    names, table, pending, tensors, done = {}, {}, [], {}, set()

    def fresh(base):
        k, name = 0, base
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    for b in bindings:
        node = owner.get(b.var)
        if node is None:
            pending.append(b.var)
            continue
        base = _identifier(node.name or node.output or node.op_type)
        for v in [b.var] + pending:
            names[v] = fresh(base)
            table[names[v]] = node
        if node.output and node not in done and isinstance(b.var.ty, TensorType):
            tensors[names[b.var]] = node.output  # the node's own (first) result
            done.add(node)
        pending = []
    for v in pending:  # the graph outputs' bindings
        names[v] = fresh(v.name)
    return _renamed(mod, names), table, tensors


def _renamed(mod, names: dict):
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Renamer(relax.PyExprMutator):
        def visit_var_def_(self, var):
            if var not in names or names[var] == var.name:
                return var
            new = (relax.DataflowVar if isinstance(var, relax.DataflowVar) else relax.Var)(names[var], var.ty)
            self.set_var_remap(var, new)
            return new

    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    out["main"] = Renamer(mod).visit_expr(mod["main"])
    return out
