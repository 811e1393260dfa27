"""Run one quantised layer on the simulated accelerator, or on the host through the NumPy
reference when the code generator does not lower it (grouped / depthwise conv)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shiftc.reference.accelerator import qconv2d, qdense
from shiftc.targets.vta import layout
from shiftc.targets.vta.codegen import (CodegenError, Program, QConv2d, QDense, compile_layer,
                                        run_program)
from shiftc.targets.vta.config import VTAConfig, load_config
from shiftc.targets.vta.simulator import Simulator, Stats


@dataclass
class LayerReport:
    """Where a layer ran and how it was tiled."""

    name: str
    kind: str
    placement: str                 # "vta" or "host"
    reason: str = ""
    tiling: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


@dataclass
class LayerResult:
    output: np.ndarray
    stats: Stats | None
    report: list            # [LayerReport]
    program: Program | None = None
    simulator: Simulator | None = None


def _host(layer, x, reason: str) -> LayerResult:
    if isinstance(layer, QDense):
        y = qdense(x, layer.weight, layer.bias, layer.shift_e, layer.relu, layer.wgt_mode,
                   layer.shift_P, layer.out_bits)
        kind = "dense"
    else:
        y = qconv2d(x, layer.weight, layer.bias, layer.shift_e, layer.stride, layer.padding,
                    layer.groups, layer.relu, layer.wgt_mode, layer.shift_P, layer.out_bits)
        kind = "conv2d"
    return LayerResult(y, None, [LayerReport(layer.name, kind, "host", reason)])


def run_layer(layer, x: np.ndarray, cfg: VTAConfig | None = None, nbuf: int = 2,
              trace_gemm: bool = False, vectorize: bool = True,
              schedule="program") -> LayerResult:
    """Run one quantised layer on the simulated accelerator (or on the host, reported)."""
    cfg = cfg or load_config()
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise CodegenError(f"{layer.name}: input must be int8, got {x.dtype}")
    if isinstance(layer, QConv2d) and layer.groups != 1:
        return _host(layer, x, f"groups={layer.groups} (grouped/depthwise conv) is not lowered "
                               "to VTA; computed by the NumPy reference on the host")
    prog = compile_layer(layer, x.shape, cfg, nbuf)
    if isinstance(layer, QDense):
        xp = layout.pack_activations(x.T[None, :, :, None], cfg.block_in)
        out, sim = run_program(prog, xp, trace_gemm, vectorize, schedule)
        y = layout.unpack_activations(out, layer.weight.shape[0])[0, :, :, 0].T
        kind = "dense"
    else:
        xp = layout.pack_activations(x, cfg.block_in)
        out, sim = run_program(prog, xp, trace_gemm, vectorize, schedule)
        y = layout.unpack_activations(out, layer.weight.shape[0])
        kind = "conv2d"
    rep = LayerReport(layer.name, kind, "vta", "", prog.tiling, prog.notes)
    return LayerResult(np.ascontiguousarray(y), sim.stats, [rep], prog, sim)
