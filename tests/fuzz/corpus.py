"""A deterministic corpus of broken ONNX models for the frontend's error handling.

``generate(folder, n, seed)`` writes ``n`` cases, one folder each (``NNNN-<seed model>-<mutation>/
model.onnx`` plus any side files the mutation needs, e.g. external data), from a few seed models:
the repo's ``examples/models/cnn.onnx`` and tiny ``onnx.helper`` graphs. Mutations: byte flips
(anywhere, and inside strings, which breaks their UTF-8), truncations and splices of the serialized
bytes; protobuf field edits (dims, element types, missing inputs/initializers, bad attributes, op
types, opset and IR versions); external-data tricks (``../``, absolute paths, missing files,
offsets past the end); NaN/Inf weights; cycles; duplicate names; and pairs of these.

The same ``seed`` gives byte-identical files. Run as a script to write a corpus::

    python tests/fuzz/corpus.py OUT_DIR [-n 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
CNN = REPO / "examples" / "models" / "cnn.onnx"


@dataclass
class Case:
    """One corpus entry: the model's bytes and side files (relative path -> bytes, or a symlink)."""

    name: str
    seed_model: str
    mutation: str
    data: bytes
    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- seed models


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    vi = lambda n, s, t=TensorProto.FLOAT: helper.make_tensor_value_info(n, t, s)  # noqa: E731
    graph = helper.make_graph(nodes, "seed", [vi(*i) for i in inputs], [vi(*o) for o in outputs],
                              [numpy_helper.from_array(np.asarray(a), n) for n, a in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def seed_models() -> dict[str, onnx.ModelProto]:
    """Tiny static graphs (fast to compile) and the example CNN."""
    rng = np.random.default_rng(1234)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    seeds = {
        "conv": _model(
            [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1], name="conv0"),
             helper.make_node("Relu", ["c"], ["r"], name="relu0"),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool0")],
            [("x", [1, 3, 8, 8])], [("y", [1, 4, 4, 4])], {"w": f32(4, 3, 3, 3), "b": f32(4)}),
        "gemm": _model(
            [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc0"),
             helper.make_node("Relu", ["h"], ["r"], name="relu0"),
             helper.make_node("Softmax", ["r"], ["y"], axis=-1, name="softmax0")],
            [("x", [1, 16])], [("y", [1, 8])], {"w": f32(8, 16), "b": f32(8)}),
        "mlp2": _model(
            [helper.make_node("MatMul", ["a", "w"], ["m"], name="mm0"),
             helper.make_node("Add", ["m", "b"], ["s"], name="add0"),
             helper.make_node("Mul", ["s", "bb"], ["p"], name="mul0"),
             helper.make_node("Reshape", ["p", "shape"], ["q"], name="reshape0"),
             helper.make_node("Transpose", ["q"], ["y"], perm=[1, 0], name="transpose0")],
            [("a", [2, 6]), ("b", [2, 4])], [("y", [4, 2])],
            {"w": f32(6, 4), "bb": f32(4), "shape": np.array([2, 4], np.int64)}),
        "norm": _model(
            [helper.make_node("BatchNormalization", ["x", "g", "be", "mu", "var"], ["n"], epsilon=1e-5, name="bn0"),
             helper.make_node("Sigmoid", ["n"], ["s"], name="sig0"),
             helper.make_node("GlobalAveragePool", ["s"], ["y"], name="gap0")],
            [("x", [1, 4, 5, 5])], [("y", [1, 4, 1, 1])],
            {"g": f32(4), "be": f32(4), "mu": f32(4), "var": np.abs(f32(4)) + 0.5}),
    }
    if CNN.is_file():
        seeds["cnn"] = onnx.load(str(CNN))
    return seeds


# ----------------------------------------------------------------------------- byte-level mutations


def bit_flips(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 2, 4, 8, 32])):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def string_flips(rng: random.Random, data: bytes, proto: onnx.ModelProto) -> bytes:
    """Corrupt bytes inside the model's strings (names, op types, producer): invalid UTF-8 and typos."""
    words = sorted({s.encode() for n in proto.graph.node for s in (n.name, n.op_type, *n.input, *n.output) if len(s) >= 2}
                   | {proto.producer_name.encode()} - {b""})
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        word = rng.choice(words)
        at = b.find(word, rng.randrange(len(b) // 2)) if rng.random() < 0.5 else b.find(word)
        if at < 0:
            continue
        i = at + rng.randrange(len(word))
        b[i] = rng.choice([0xFF, 0xC3, 0x80, 0xFE, 0x00, ord("?"), b[i] ^ 0x20])
    return bytes(b)


def truncate(rng: random.Random, data: bytes) -> bytes:
    cut = rng.choice([0, 1, 2, 7, len(data) // 3, len(data) // 2, len(data) - 1, rng.randrange(len(data))])
    return data[:cut]


def splice(rng: random.Random, data: bytes) -> bytes:
    i, j = sorted(rng.randrange(len(data)) for _ in range(2))
    j = min(j, i + 64)
    kind = rng.choice(["delete", "duplicate", "insert", "garbage_tail", "zero"])
    if kind == "delete":
        return data[:i] + data[j:]
    if kind == "duplicate":
        return data[:j] + data[i:j] + data[j:]
    if kind == "insert":
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[i:]
    if kind == "zero":
        return data[:i] + bytes(j - i) + data[j:]
    return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))


def garbage(rng: random.Random, data: bytes) -> bytes:
    return rng.choice([b"", b"\x00" * 64, b"\xff" * 17, b"not an onnx model\n",
                       bytes(rng.randrange(256) for _ in range(rng.randint(1, 512))),
                       b"\x08\x08\x12\x00\x3a\x02\x0a\x00"])  # valid protobuf, nonsense model


# ----------------------------------------------------------------------------- protobuf mutations
# Each takes (rng, model copy) and edits the model in place.


def _tensor_vis(m: onnx.ModelProto):
    return [*m.graph.input, *m.graph.output]


def wrong_dims(rng, m):
    vi = rng.choice(_tensor_vis(m))
    dims = vi.type.tensor_type.shape.dim
    kind = rng.choice(["value", "param", "add", "drop", "clear", "noshape"])
    if kind == "value" and dims:
        dims[rng.randrange(len(dims))].dim_value = rng.choice([0, -1, -7, 2, 3, 1000, 2**31 - 1, 2**40])
    elif kind == "param" and dims:
        dims[rng.randrange(len(dims))].dim_param = rng.choice(["N", "", "batch size", "\u00e9"])
    elif kind == "add":
        dims.add().dim_value = rng.choice([1, 2, 5])
    elif kind == "drop" and dims:
        del dims[rng.randrange(len(dims))]
    elif kind == "clear":
        del dims[:]
    else:
        vi.type.tensor_type.ClearField("shape")


_DTYPES = list(range(0, 26))


def wrong_dtype(rng, m):
    if rng.random() < 0.5 or not m.graph.initializer:
        vi = rng.choice(_tensor_vis(m))
        if rng.random() < 0.15:
            vi.type.ClearField("tensor_type")
            vi.type.sequence_type.elem_type.tensor_type.elem_type = TensorProto.FLOAT
        else:
            vi.type.tensor_type.elem_type = rng.choice(_DTYPES)
    else:
        rng.choice(m.graph.initializer).data_type = rng.choice(_DTYPES)


def wrong_initializer(rng, m):
    if not m.graph.initializer:
        return wrong_dims(rng, m)
    t = rng.choice(m.graph.initializer)
    kind = rng.choice(["dims", "truncate_raw", "extend_raw", "to_float_data", "scalar", "negative_dim"])
    if kind == "dims" and t.dims:
        t.dims[rng.randrange(len(t.dims))] += rng.choice([-1, 1, 5])
    elif kind == "truncate_raw" and t.raw_data:
        t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data))]
    elif kind == "extend_raw":
        t.raw_data = t.raw_data + b"\x00" * rng.choice([1, 3, 4, 400])
    elif kind == "to_float_data":
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * rng.choice([0, 1, 3]))
    elif kind == "scalar":
        del t.dims[:]
    else:
        t.dims.append(-3)


def missing_input(rng, m):
    kind = rng.choice(["graph_input", "initializer", "node_input", "rename_input", "empty_name", "no_outputs", "bad_output"])
    g = m.graph
    if kind == "graph_input" and g.input:
        del g.input[rng.randrange(len(g.input))]
    elif kind == "initializer" and g.initializer:
        del g.initializer[rng.randrange(len(g.initializer))]
    elif kind == "node_input":
        node = rng.choice(g.node)
        if node.input:
            del node.input[rng.randrange(len(node.input))]
    elif kind == "rename_input":
        node = rng.choice(g.node)
        if node.input:
            node.input[rng.randrange(len(node.input))] = rng.choice(["missing_tensor", "", "x:0"])
    elif kind == "empty_name":
        rng.choice(g.node).output[0] = ""
    elif kind == "no_outputs":
        del g.output[:]
    else:
        g.output[0].name = "no_such_tensor"


def bad_attribute(rng, m):
    node = rng.choice(m.graph.node)
    kind = rng.choice(["drop", "type", "ints", "int", "unknown", "graph", "empty_name"])
    if kind == "drop" and node.attribute:
        del node.attribute[rng.randrange(len(node.attribute))]
        return
    if kind == "unknown" or not node.attribute:
        node.attribute.append(helper.make_attribute(rng.choice(["axis", "group", "kernel_shape", "bogus", "perm"]),
                                                    rng.choice([0, -5, 99, [0, 0], [1, 2, 3], "text", 1.5])))
        return
    attr = rng.choice(node.attribute)
    if kind == "type":
        attr.type = rng.choice(list(range(0, 15)))
    elif kind == "ints":
        attr.ClearField("ints")
        attr.ints.extend(rng.choice([[], [0], [-1, -1], [0, 0, 0, 0], [1] * 9, [2**40, 1]]))
        attr.type = onnx.AttributeProto.INTS
    elif kind == "int":
        attr.i = rng.choice([0, -1, 99, 2**62])
        attr.type = onnx.AttributeProto.INT
    elif kind == "graph":
        attr.g.CopyFrom(helper.make_graph([], "sub", [], []))
        attr.type = onnx.AttributeProto.GRAPH
    else:
        attr.name = ""


_OPS = ["Conv", "Relu", "Gemm", "MatMul", "Add", "Softmax", "MaxPool", "Reshape", "Transpose", "Concat", "Split", "Gather",
        "Loop", "If", "Scan", "NonZero", "Unique", "Resize", "Einsum", "TopK", "Celu", "NoSuchOp", "", "conv", "Identity",
        "Shape", "ConstantOfShape", "Expand", "Tile", "Pad", "Slice", "LSTM", "QuantizeLinear", "Cast", "Where"]


def wrong_op(rng, m):
    node = rng.choice(m.graph.node)
    if rng.random() < 0.8:
        node.op_type = rng.choice(_OPS)
    else:
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "bogus.domain", "ai.onnx"])


def wrong_version(rng, m):
    kind = rng.choice(["opset", "opset", "ir", "no_opset", "dup_opset"])
    if kind == "opset":
        m.opset_import[0].version = rng.choice([0, 1, 6, 9, 11, 13, 99, 10**6, -1])
    elif kind == "ir":
        m.ir_version = rng.choice([0, 1, 3, 4, 12, 99, -1])
    elif kind == "no_opset":
        del m.opset_import[:]
    else:
        m.opset_import.append(helper.make_opsetid("", rng.choice([9, 13, 17])))


def nonfinite_weights(rng, m):
    floats = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT]
    if not floats:
        return wrong_initializer(rng, m)
    for t in rng.sample(floats, rng.randint(1, len(floats))):
        arr = numpy_helper.to_array(t).copy()
        value = rng.choice([np.nan, np.inf, -np.inf, np.float32(3e38)])
        if rng.random() < 0.5:
            arr[...] = value
        else:
            arr.reshape(-1)[rng.randrange(arr.size)] = value
        t.CopyFrom(numpy_helper.from_array(arr, t.name))


def cycle(rng, m):
    nodes = m.graph.node
    kind = rng.choice(["self", "back", "reorder", "reverse"])
    if kind == "self" or len(nodes) < 2:
        node = rng.choice(nodes)
        node.input[0] = node.output[0]
    elif kind == "back":
        i = rng.randrange(len(nodes) - 1)
        j = rng.randrange(i + 1, len(nodes))
        nodes[i].input[0] = nodes[j].output[0]
    elif kind == "reorder":
        order = list(nodes)
        rng.shuffle(order)
        del nodes[:]
        nodes.extend(order)
    else:
        order = list(nodes)[::-1]
        del nodes[:]
        nodes.extend(order)


def duplicate_names(rng, m):
    g = m.graph
    kind = rng.choice(["node_output", "graph_input", "initializer", "output", "node", "input_is_output", "init_shadows_input"])
    if kind == "node_output" and len(g.node) >= 2:
        a, b = rng.sample(range(len(g.node)), 2)
        g.node[b].output[0] = g.node[a].output[0]
    elif kind == "graph_input":
        g.input.append(g.input[0])
    elif kind == "initializer" and g.initializer:
        g.initializer.append(rng.choice(g.initializer))
    elif kind == "output":
        g.output.append(g.output[0])
    elif kind == "node":
        g.node.append(rng.choice(g.node))
    elif kind == "input_is_output":
        rng.choice(g.node).output[0] = g.input[0].name
    elif g.initializer:
        t = onnx.TensorProto()
        t.CopyFrom(g.initializer[0])
        t.name = g.input[0].name
        g.initializer.append(t)


PROTO_MUTATIONS = {f.__name__: f for f in (wrong_dims, wrong_dtype, wrong_initializer, missing_input, bad_attribute,
                                           wrong_op, wrong_version, nonfinite_weights, cycle, duplicate_names)}


def external_data(rng, m) -> tuple[dict[str, bytes], dict[str, str]]:
    """Move an initializer to external data at a hostile or broken location; returns side files and symlinks."""
    inits = [t for t in m.graph.initializer if t.raw_data] or list(m.graph.initializer)
    t = rng.choice(inits)
    raw = t.raw_data or numpy_helper.to_array(t).tobytes()
    files, links = {}, {}
    kind = rng.choice(["ok", "parent", "absolute", "missing", "offset", "length", "dir", "symlink", "empty", "nested_parent"])
    location, offset, length = "weights.bin", None, None
    if kind == "ok":
        files["weights.bin"] = raw
    elif kind == "parent":
        location = "../outside.bin"
    elif kind == "absolute":
        location = rng.choice(["/etc/passwd", "/dev/zero", "/proc/self/environ"])
    elif kind == "missing":
        location = "nope.bin"
    elif kind == "offset":
        files["weights.bin"] = raw
        offset = len(raw) + rng.choice([1, 4096, 2**40])
    elif kind == "length":
        files["weights.bin"] = raw
        length = len(raw) + rng.choice([1, 2**40])
    elif kind == "dir":
        location = "."
    elif kind == "symlink":
        links["weights.bin"] = rng.choice(["/dev/zero", "/etc/passwd", "../outside.bin"])
        length = len(raw)
    elif kind == "empty":
        location = ""
    else:
        location = "sub/../../outside.bin"
    t.ClearField("raw_data")
    del t.float_data[:], t.int64_data[:], t.int32_data[:]
    entries = {"location": location}
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        t.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
    t.data_location = TensorProto.EXTERNAL
    return files, links


# ----------------------------------------------------------------------------- the corpus


BYTE_MUTATIONS = {"bit_flips": bit_flips, "truncate": truncate, "splice": splice, "garbage": garbage}
# relative weights of the mutation families
FAMILIES = [("bit_flips", 3), ("string_flips", 2), ("truncate", 1), ("splice", 2), ("garbage", 0.3),
            *[(name, 1.5) for name in PROTO_MUTATIONS], ("external_data", 2), ("pair", 2)]


def _mutate(rng: random.Random, seed_name: str, proto: onnx.ModelProto, data: bytes) -> Case:
    family = rng.choices([f for f, _ in FAMILIES], [w for _, w in FAMILIES])[0]
    if family in BYTE_MUTATIONS:
        return Case("", seed_name, family, BYTE_MUTATIONS[family](rng, data))
    if family == "string_flips":
        return Case("", seed_name, family, string_flips(rng, data, proto))
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    files, links = {}, {}
    if family == "external_data":
        files, links = external_data(rng, m)
    elif family == "pair":
        names = rng.sample(sorted(PROTO_MUTATIONS), 2)
        for name in names:
            try:
                PROTO_MUTATIONS[name](rng, m)
            except (ValueError, IndexError):  # the first edit broke what the second one reads: keep the first
                pass
        family = "+".join(names)
    else:
        PROTO_MUTATIONS[family](rng, m)
    return Case("", seed_name, family, m.SerializeToString(), files, links)


def cases(n: int = 1000, seed: int = 0, cnn_share: float = 0.2) -> list[Case]:
    """``n`` cases; about ``cnn_share`` of them from the example CNN (the rest from tiny graphs)."""
    rng = random.Random(seed)
    seeds = seed_models()
    serialized = {k: v.SerializeToString() for k, v in seeds.items()}
    tiny = sorted(k for k in seeds if k != "cnn")
    out = []
    for i in range(n):
        name = "cnn" if "cnn" in seeds and rng.random() < cnn_share else rng.choice(tiny)
        case = _mutate(rng, name, seeds[name], serialized[name])
        case.name = f"{i:04d}-{name}-{case.mutation}"
        out.append(case)
    return out


def write(case: Case, root: Path) -> Path:
    """Write one case into ``root/<case.name>/``; returns the model's path."""
    folder = root / case.name
    folder.mkdir(parents=True)
    for rel, content in case.files.items():
        (folder / rel).write_bytes(content)
    for rel, target in case.links.items():
        (folder / rel).symlink_to(target)
    path = folder / "model.onnx"
    path.write_bytes(case.data)
    return path


def generate(root: str | Path, n: int = 1000, seed: int = 0) -> list[tuple[Case, Path]]:
    """Write the corpus under ``root`` (plus ``root/outside.bin``, the target of the ``../`` tricks)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "outside.bin").write_bytes(b"\x00" * 4096)
    return [(c, write(c, root)) for c in cases(n, seed)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = generate(args.out, args.n, args.seed)
    print(f"wrote {len(written)} cases under {args.out}")
