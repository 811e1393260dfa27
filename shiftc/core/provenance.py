"""Which ONNX node each Relax value came from, so messages and reports use the user's names.

The frontend (``shiftc.frontend.to_relax``) names every value of ``main`` after the ONNX node that
produced it (a valid identifier derived from the node's name; the values a node's conversion
needs on the way get ``_1``, ``_2``, ... suffixes) and records the table
``{relax value name: (ONNX node name, ONNX op type)}`` as the module attribute ``ATTR``. Passes
keep a rewritten binding's variable (and so its name), so the table stays valid through the
pipeline; values a pass creates itself are not in it and are named as Relax names them.
"""

from __future__ import annotations

from typing import NamedTuple

ATTR = "shiftc.onnx_nodes"


class OnnxNode(NamedTuple):
    name: str  # the node's name in the ONNX graph ("" when the exporter left it empty)
    op_type: str
    output: str  # its first output tensor, which names an unnamed node

    def describe(self) -> str:
        """``'node_name' (OpType)``; an unnamed node by its output tensor."""
        who = repr(self.name) if self.name else f"<unnamed, output {self.output!r}>"
        return f"{who} ({self.op_type})"


def with_nodes(mod, table: dict[str, OnnxNode]):
    """``mod`` carrying ``table`` (value name -> OnnxNode) as its ``ATTR`` attribute."""
    return mod.with_attr(ATTR, {k: [v.name, v.op_type, v.output] for k, v in table.items()})


def nodes_of(mod) -> dict[str, OnnxNode]:
    """The table ``with_nodes`` stored on ``mod`` (empty for a module built without the frontend)."""
    attrs = getattr(mod, "attrs", None)
    if attrs is None or ATTR not in attrs:
        return {}
    return {str(k): OnnxNode(*(str(x) for x in v)) for k, v in attrs[ATTR].items()}


def with_consumers(func, table: dict[str, OnnxNode]) -> dict[str, OnnxNode]:
    """``table`` extended to the values a pass created inside ``func`` (not in it): each gets the
    node of the nearest later value that reads it and has one (e.g. the conv that BatchNorm
    folding emitted is attributed to the BatchNormalization node whose variable it now feeds)."""
    from tvm import relax

    out = dict(table)
    params = {p.name for p in func.params}
    bindings = [b for block in func.body.blocks for b in block.bindings]
    for b in reversed(bindings):
        node = out.get(b.var.name)
        if node is None:
            continue
        for v in relax.analysis.free_vars(b.value):
            if v.name not in params:
                out.setdefault(v.name, node)
    return out


TENSORS_ATTR = "shiftc.onnx_tensors"


def with_tensors(mod, table: dict[str, str]):
    """``mod`` carrying ``table`` (value name -> the ONNX tensor whose values it holds) as its
    ``TENSORS_ATTR`` attribute. The frontend records each node's own result and each graph input;
    a pass that makes one value compute a later tensor (an epilogue folded into a kernel) moves
    the entry (``passes/shift.py``)."""
    return mod.with_attr(TENSORS_ATTR, dict(table))


def tensors_of(mod) -> dict[str, str]:
    """The table ``with_tensors`` stored on ``mod`` (empty when none was recorded)."""
    attrs = getattr(mod, "attrs", None)
    if attrs is None or TENSORS_ATTR not in attrs:
        return {}
    return {str(k): str(v) for k, v in attrs[TENSORS_ATTR].items()}
