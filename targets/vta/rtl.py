"""Synthesise the GEMM-core RTL (``rtl/*.v``) with Debian's open tools.

:func:`synthesize` runs ``yosys`` ``synth_xilinx`` (or ``synth_ecp5``) and parses the cell
counts into LUT / FF / DSP / carry numbers.  The testbench runner (iverilog / vvp on simulator
vectors, ``rtl/tb_gemm.v``) and the verilator lint are test code: ``tests/helpers/rtl_bench.py``.

A missing tool raises :class:`RtlToolError` naming the apt package that provides it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

RTL_DIR = Path(__file__).with_name("rtl")
CORES = {"shift": "shift_gemm_core", "mac": "mac_gemm_core"}
_APT = {"iverilog": "iverilog", "vvp": "iverilog", "verilator": "verilator", "yosys": "yosys"}


class RtlToolError(RuntimeError):
    """An RTL tool is missing or failed."""


def find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RtlToolError(f"'{name}' not found: install the Debian package '{_APT[name]}'")
    return path


def core_file(core: str) -> tuple[str, Path]:
    """(module name, Verilog file) of ``core`` ('shift' or 'mac')."""
    if core not in CORES:
        raise ValueError(f"unknown core {core!r}; choose one of {sorted(CORES)}")
    return CORES[core], RTL_DIR / f"{CORES[core]}.v"


_FAMILIES = {
    # target: (yosys command, LUT cell regex, FF cell regex, DSP cell regex, carry regex)
    "xilinx": ("synth_xilinx", r"LUT\d", r"FD\w*", r"DSP48\w*", r"CARRY\w*"),
    "ecp5": ("synth_ecp5", r"LUT4", r"TRELLIS_FF", r"MULT18X18D|ALU54B", r"CCU2C"),
}


def parse_stat(text: str, target: str = "xilinx") -> dict:
    """Cell counts from a yosys ``stat`` report -> {lut, ff, dsp, carry, cells}."""
    _cmd, lut, ff, dsp, carry = _FAMILIES[target]
    # the last module's section (flattened design: only the top)
    cells = dict((m.group(1), int(m.group(2)))
                 for m in re.finditer(r"^\s+(\$?\w+)\s+(\d+)\s*$", text, re.M))
    total = 0
    m = re.findall(r"Number of cells:\s+(\d+)", text)
    if m:
        total = int(m[-1])

    def count(rx):
        return sum(v for k, v in cells.items() if re.fullmatch(rx, k))

    return {"lut": count(lut), "ff": count(ff), "dsp": count(dsp), "carry": count(carry),
            "cells": total, "cell_types": {k: v for k, v in sorted(cells.items())}}


def synthesize(core: str, target: str = "xilinx", nodsp: bool = False, timeout: float = 600,
               **params) -> dict:
    """Synthesise ``core`` with yosys and return LUT / FF / DSP / carry counts.

    ``params`` override Verilog parameters (BLOCK_IN, BLOCK_OUT, CODE_W, SHIFT_BITS, ...).
    ``nodsp=True`` forbids DSP blocks (LUT-only multipliers).
    """
    name, src = core_file(core)
    if target not in _FAMILIES:
        raise ValueError(f"unknown synthesis target {target!r}; choose one of {sorted(_FAMILIES)}")
    synth = _FAMILIES[target][0] + f" -top {name}" + (" -nodsp" if nodsp else "")
    chparam = "".join(f" -set {k} {int(v)}" for k, v in params.items())
    with tempfile.TemporaryDirectory(prefix="vta_yosys_") as tmp:
        stat = Path(tmp) / "stat.txt"
        script = (f"read_verilog {src}; " + (f"chparam{chparam} {name}; " if params else "")
                  + f"{synth}; tee -q -o {stat} stat")
        r = subprocess.run([find_tool("yosys"), "-q", "-p", script], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode or not stat.exists():
            raise RtlToolError(f"yosys failed for {name}: {(r.stderr or r.stdout).strip()[-800:]}")
        text = stat.read_text()
    res = parse_stat(text, target)
    res.update(core=core, target=target, nodsp=nodsp, params=dict(params))
    return res
