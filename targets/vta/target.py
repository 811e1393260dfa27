"""The ``vta`` target: int8 conv2d / dense layers on the VTA-compatible accelerator (run in its
functional simulator), everything else on the x86 host through LLVM.

``lower`` (before the Relax build) finds the VTA layers of the integerised graph
(:mod:`.partition`), compiles each to an instruction stream + DRAM image (:mod:`.codegen`),
replaces it by ``call_dps_packed("shiftc.vta.<digest>.layer_<i>", x)`` and writes the partition,
the simulator counters and the resource table into the compile report. ``build`` writes the host
library and the layer programs (:mod:`.runtime` documents the files); ``load`` registers one packed
function per layer that runs its program in the simulator, then opens the host library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shiftc.core.errors import InputError

from ..base import Comparison, TargetOption, Tool
from ..x86 import X86, VMSession
from . import partition, runtime
from .codegen import CodegenError, QConv2d, QDense, compile_layer
from .config import ConfigError, VTAConfig, load_config
from .simulator import SimError

RESOURCES = Path(__file__).with_name("resources.json")
# RTL simulation and synthesis of the GEMM cores (targets/vta/rtl.py); compiling needs none of them
OPTIONAL_TOOLS = (
    Tool("iverilog", "iverilog", "simulates the RTL", needed_for="rtl"),
    Tool("verilator", "verilator", "lints and simulates the RTL", needed_for="rtl"),
    Tool("yosys", "yosys", "synthesises the GEMM cores", needed_for="rtl"),
)


@dataclass
class VTA(X86):
    """``cpu``/``cores``: the x86 host's (as for ``x86``); ``nbuf``: 2 = double-buffered VTA
    programs, 1 = single; ``vta_config``: a VTA configuration JSON (None: the packaged one)."""

    nbuf: int = 2
    vta_config: str | None = None
    name = "vta"
    loads_on_tvm_runtime = False  # its layers' packed functions and partition module need TVM's compiler side
    summary = "VTA-compatible accelerator (functional simulator) + x86 host (LLVM)"
    option_specs = X86.option_specs + (
        TargetOption("nbuf", int, "VTA program buffering: 2 = double-buffered, 1 = single", choices=(1, 2), default=2),
        TargetOption("vta_config", str, "VTA hardware configuration JSON: log2 sizes of blocks and buffers, "
                     "shift bits, cycle-model constants (default: the packaged targets/vta/vta_config.json)"),
    )
    _layers: list = field(default_factory=list, init=False, repr=False)

    def required_options(self) -> dict:
        """VTA's ALU has no multiplier: every requantiser must be a shift on integers."""
        return {"integer_only": True, "requant": "pow2"}

    def apt_tools(self) -> tuple[Tool, ...]:
        return super().apt_tools() + OPTIONAL_TOOLS

    def comparison(self) -> Comparison:
        """Integer-only, and bit-exact with the x86 integer path of the same pass options."""
        return Comparison("x86", self.required_options(), tolerance=0)

    def config(self) -> VTAConfig:
        try:
            return load_config(self.vta_config)
        except ConfigError as exc:
            raise InputError(f"target 'vta': --vta-config: {exc}") from None

    # ------------------------------------------------------------------ compile
    def lower(self, mod, report):
        """Partition ``main``; compile the VTA layers; record the partition in ``report``."""
        cfg = self.config()
        chains, host = partition.find_layers(mod)
        layers, placed, rows = [], [], []
        for c in chains:
            try:
                layer = self._compile(c, cfg)
            except (CodegenError, SimError) as exc:  # the whole chain stays on the host, reported
                host.update({m: f"VTA code generation failed: {exc}" for m in c.members})
                continue
            layers.append(layer)
            placed.append(c)
        digest = runtime.content_digest(layers)
        for i, (c, layer) in enumerate(zip(placed, layers)):
            layer.func = f"shiftc.vta.{digest}.layer_{i}"
        self._layers = layers
        new = partition.offload(mod, placed, [layer.func for layer in layers])
        by_var = {m: (i, c) for i, c in enumerate(placed) for m in c.members}
        for b in (b for blk in mod["main"].body.blocks for b in blk.bindings):
            label = partition.call_label(mod, b.value)
            if b.var in by_var and b.var in by_var[b.var][1].pool_vars:
                i, c = by_var[b.var]
                rows.append({"value": b.var.name, "op": label, "placement": "host", "layer": i,
                             "reason": f"moved after VTA layer {i}'s requantiser (exact: it is monotone per "
                                       "channel); runs on the host on the int8 result"})
            elif b.var in by_var:
                i, c = by_var[b.var]
                rows.append({"value": b.var.name, "op": label, "placement": "vta", "layer": i,
                             "reason": f"part of VTA layer {i} ({c.kind}: {' -> '.join(c.ops)})"})
            elif b.var in host:
                rows.append({"value": b.var.name, "op": label, "placement": "host", "reason": host[b.var]})
        self._report(report, placed, layers, rows)
        return new

    def _compile(self, c: partition.Chain, cfg) -> runtime.Layer:
        x_shape = partition._shape(c.x)
        common = dict(relu=c.relu, name=c.last.name, out_bits=c.out_bits, wgt_mode=c.wgt_mode, shift_P=c.shift_P)
        if c.kind == "conv2d":
            q = QConv2d(c.weight, c.bias, c.shift_e, c.stride, c.padding, **common)
        else:
            q = QDense(c.weight, c.bias, c.shift_e, **common)
        prog = compile_layer(q, x_shape, cfg, self.nbuf)
        layer = runtime.Layer("", c.kind, int(c.weight.shape[0]), prog)
        _, stats = layer.run(np.zeros(x_shape, np.int8))  # counters do not depend on the data
        layer.stats = stats.to_dict()
        return layer

    def _report(self, report, chains, layers, rows) -> None:
        sr = report.stage("vta")
        per_layer = []
        for i, (c, layer) in enumerate(zip(chains, layers)):
            s = layer.stats
            per_layer.append({
                "layer": i, "kind": c.kind, "values": " -> ".join(c.ops), "weights": list(c.weight.shape),
                "relu": c.relu, "out_bits": c.out_bits, "host_after": [p.op.name for p in c.pools],
                "cycles": s["cycles"], "gemm_uops": s["gemm_uops"], "macs": s["gemm_macs"],
                "shift_adds": s["gemm_shift_adds"], "alu_lane_ops": s["alu_lane_ops"],
                "dram_bytes_loaded": sum(s["bytes_loaded"].values()),
                "dram_bytes_stored": sum(s["bytes_stored"].values()), "tiling": layer.program.tiling,
                "wgt_mode": layer.program.wgt_mode, "shift_P": layer.program.shift_P,
            })
        n_vta = sum(r["placement"] == "vta" for r in rows)
        sr.summary.update({
            "vta_layers": len(layers), "ops_on_vta": n_vta, "ops_on_host": len(rows) - n_vta,
            "total_cycles": int(sum(r["cycles"] for r in per_layer)), "layers": per_layer,
            "cycle_model": "estimate of the functional simulator (targets/vta/README.md), per inference",
            "resources": resource_table(),
            "optional_tools": {t.program: t.path() is not None for t in OPTIONAL_TOOLS},
        })
        sr.rows.extend(rows)
        for c in chains:
            sr.notes.extend(f"{c.last.name}: {n}" for n in c.notes)
        for i, layer in enumerate(layers):
            sr.notes.extend(f"layer {i}: {n}" for n in layer.program.notes)
        for c in chains:
            if c.pools:
                sr.notes.append(f"{c.last.name}: max pool runs on the host after the VTA requantiser "
                                "(exact: the requantiser is monotone per channel)")

    def build(self, executable, out_dir: Path) -> list[str]:
        files = super().build(executable, out_dir)
        names = runtime.write(self._layers, self.config(), out_dir / "vta")
        return files + [f"vta/{n}" for n in names]

    # ------------------------------------------------------------------ run
    def load(self, artifact_dir: Path, meta: dict) -> "VTASession":
        layers = runtime.read(Path(artifact_dir) / "vta")
        counters = runtime.register(layers)
        return VTASession(Path(artifact_dir) / "model.so", counters)


class VTASession(VMSession):
    """The host VM; VTA layers run in the simulator through their packed functions."""

    def __init__(self, lib_path: Path, counters: runtime.Counters):
        super().__init__(lib_path)
        self.counters = counters


def resource_table() -> list[dict]:
    """The yosys table of the GEMM cores (MAC vs shift), from resources.json."""
    doc = json.loads(RESOURCES.read_text())
    rows = []
    for key, r in doc["results"].items():
        rows.append({"core": key, "kind": r["core"], "fpga": r["target"], "nodsp": r.get("nodsp", False),
                     "lut": r["lut"], "ff": r["ff"], "dsp": r["dsp"], "carry": r["carry"]})
    return rows
