"""Static statistics of an ONNX model: op histogram, multiply-accumulates, rewrite candidates."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx


@dataclass
class NodeStats:
    name: str
    op_type: str
    macs: int
    weight_shape: tuple[int, ...] | None = None


@dataclass
class ModelStats:
    ops: Counter = field(default_factory=Counter)
    nodes: list[NodeStats] = field(default_factory=list)

    @property
    def macs_by_op(self) -> dict[str, int]:
        out: Counter = Counter()
        for n in self.nodes:
            out[n.op_type] += n.macs
        return dict(out)

    @property
    def total_macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    def to_json(self) -> dict:
        return {
            "ops": dict(sorted(self.ops.items())),
            "macs_by_op": self.macs_by_op,
            "total_macs": self.total_macs,
        }


def _shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for vi in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for init in proto.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def constant_names(proto: onnx.ModelProto) -> set[str]:
    """Initializers and Constant-node outputs."""
    names = {i.name for i in proto.graph.initializer}
    names |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm (0 for anything else)."""
    if node.op_type in ("Conv", "ConvTranspose"):
        w, y = shapes.get(node.input[1]), shapes.get(node.output[0])
        if w is None or y is None:
            return 0
        if node.op_type == "Conv":
            # every output element sums (Cin/groups) * kh * kw products; w is (Cout, Cin/g, kh, kw)
            return int(np.prod(y)) * int(np.prod(w[1:]))
        x = shapes.get(node.input[0])
        return int(np.prod(x)) * int(np.prod(w[1:])) if x else 0
    if node.op_type in ("MatMul", "Gemm"):
        a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        if a is None or y is None:
            return 0
        trans_a = any(at.name == "transA" and at.i for at in node.attribute)
        k = a[0] if (node.op_type == "Gemm" and trans_a) else a[-1]
        return int(np.prod(y)) * int(k)
    return 0


def analyse(proto: onnx.ModelProto) -> ModelStats:
    """Statistics of a shape-inferred model."""
    shapes = _shapes(proto)
    stats = ModelStats()
    for i, node in enumerate(proto.graph.node):
        stats.ops[node.op_type] += 1
        macs = node_macs(node, shapes)
        if macs:
            wshape = shapes.get(node.input[1]) if len(node.input) > 1 else None
            stats.nodes.append(NodeStats(node.name or f"#{i}", node.op_type, macs, wshape))
    return stats
