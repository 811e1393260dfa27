"""VTA layers in an artifact, and their runtime: packed functions that run each layer's program in
the functional simulator.

Artifact files (under ``vta/``; everything little-endian):

* ``layers.json``: ``{"format": "shiftc-vta/1", "config": <vta_config>, "layers": [...]}``; per
  layer: ``func`` (the packed-function name ``main`` calls), ``kind`` (conv2d | dense),
  ``channels`` (output channels kept), ``inp_byte`` / ``inp_shape`` (packed NCHW16c int8 input in
  DRAM), ``out_byte`` / ``out_shape`` / ``out_bits`` (blocked output, ``out_bits // 8`` byte planes,
  low byte first), ``wgt_mode``, ``shift_P``, ``tiling``, ``notes``, ``stats`` (counters of one
  simulated run: they do not depend on the data);
* ``layer_<i>.insn``: the 128-bit instruction stream (``isa.encode_stream``), uops included in
  the DRAM image;
* ``layer_<i>.dram``: the DRAM image the stream runs on (uops, packed weights, bias, shift
  amounts; zeros where the input and output go).

A host writes the packed input at ``inp_byte``, sets the shift core's ``P`` register, runs the
stream and reads the output planes. Dense layers see ``x (N, K)`` as the image ``(1, K, N, 1)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import isa, layout
from .codegen import Program, run_program
from .config import VTAConfig
from .simulator import Stats

FORMAT = "shiftc-vta/1"


@dataclass
class Layer:
    """One compiled VTA layer: its program and how to pack/unpack host tensors."""

    func: str
    kind: str
    channels: int
    program: Program
    stats: dict = field(default_factory=dict)

    def pack(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "dense":
            x = x.T[None, :, :, None]
        return layout.pack_activations(x, self.program.cfg.block_in)

    def unpack(self, y: np.ndarray) -> np.ndarray:
        y = layout.unpack_activations(y, self.channels)
        return y[0, :, :, 0].T if self.kind == "dense" else y

    def run(self, x: np.ndarray) -> tuple[np.ndarray, Stats]:
        out, sim = run_program(self.program, self.pack(np.asarray(x, np.int8)))
        return np.ascontiguousarray(self.unpack(out)), sim.stats


def content_digest(layers: list[Layer]) -> str:
    """A hash of every program (names the packed functions, so artifacts never clash)."""
    h = hashlib.sha256()
    for layer in layers:
        h.update(layer.program.stream())
        h.update(layer.program.dram.tobytes())
    return h.hexdigest()[:12]


def write(layers: list[Layer], cfg: VTAConfig, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    descs = []
    for i, layer in enumerate(layers):
        p = layer.program
        (folder / f"layer_{i}.insn").write_bytes(p.stream())
        (folder / f"layer_{i}.dram").write_bytes(p.dram.tobytes())
        descs.append({
            "func": layer.func, "kind": layer.kind, "channels": layer.channels,
            "inp_byte": p.inp_byte, "inp_shape": list(p.inp_shape), "out_byte": p.out_byte,
            "out_shape": list(p.out_shape), "out_bits": p.out_bits, "wgt_mode": p.wgt_mode,
            "shift_P": p.shift_P, "tiling": p.tiling, "notes": p.notes, "stats": layer.stats,
        })
    doc = {"format": FORMAT, "config": cfg.to_dict(), "layers": descs}
    (folder / "layers.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return ["layers.json"] + [f"layer_{i}.{ext}" for i in range(len(layers)) for ext in ("insn", "dram")]


def read(folder: Path) -> list[Layer]:
    doc = json.loads((folder / "layers.json").read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{folder}/layers.json has format {doc.get('format')!r}, expected {FORMAT!r}")
    cfg = VTAConfig.from_dict(doc["config"])
    layers = []
    for i, d in enumerate(doc["layers"]):
        insns = isa.decode_stream((folder / f"layer_{i}.insn").read_bytes())
        dram = np.frombuffer((folder / f"layer_{i}.dram").read_bytes(), dtype=np.uint8).copy()
        prog = Program(cfg, insns, dram, d["inp_byte"], tuple(d["inp_shape"]), d["out_byte"],
                       tuple(d["out_shape"]), d["wgt_mode"], d["shift_P"], d["tiling"], d["notes"],
                       d["out_bits"])
        layers.append(Layer(d["func"], d["kind"], d["channels"], prog, d["stats"]))
    return layers


class Counters:
    """Simulator counters of every layer run through the packed functions (per layer, summed)."""

    def __init__(self, layers: list[Layer]):
        self.calls = {layer.func: 0 for layer in layers}
        self.cycles = {layer.func: 0 for layer in layers}

    def add(self, func: str, stats: Stats) -> None:
        self.calls[func] += 1
        self.cycles[func] += stats.cycles


def register(layers: list[Layer]) -> Counters:
    """Register each layer's packed function (DPS: ``f(x, out)``) with TVM's global registry."""
    import tvm

    counters = Counters(layers)

    def make(layer: Layer):
        def run(x, out):
            y, stats = layer.run(x.numpy())
            out.copyfrom(y)
            counters.add(layer.func, stats)

        return run

    for layer in layers:
        tvm.register_global_func(layer.func, make(layer), override=True)
    return counters
