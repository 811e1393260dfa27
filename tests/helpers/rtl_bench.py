"""The GEMM-core testbench: simulator GEMM uops as hex vectors, ``rtl/tb_gemm.v`` run with
iverilog / vvp on them, and the verilator lint of the cores."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shiftc.targets.vta.config import VTAConfig
from shiftc.targets.vta.rtl import RTL_DIR, RtlToolError, core_file, find_tool
from shiftc.targets.vta.simulator import SimError, Simulator


def _hex_word(values, width: int) -> str:
    word = 0
    for k, v in enumerate(np.asarray(values).reshape(-1)):
        word |= (int(v) & ((1 << width) - 1)) << (k * width)
    digits = -(-len(np.asarray(values).reshape(-1)) * width // 4)
    return f"{word:0{digits}x}"


def dump_gemm_vectors(records, directory, cfg: VTAConfig, wgt_mode: str = "int8",
                      shift_P: int = 0, limit: int | None = None) -> Path:
    """Write GEMM uop executions as hex files for ``rtl/tb_gemm.v``.

    ``records``: a list of :class:`GemmRecord` or a Simulator run with ``trace_gemm=True``.
    Files (one vector per line, lane 0 in the least significant bits): ``inp.hex``
    (BLOCK_IN x 8 bit), ``wgt.hex`` (BLOCK_OUT*BLOCK_IN x 8 bit, index j*BLOCK_IN + k),
    ``acc_in.hex`` and ``acc_out.hex`` (BLOCK_OUT x 32 bit), plus ``meta.json``.
    """
    if isinstance(records, Simulator):
        records = records.gemm_records
    records = list(records)[:limit]
    if not records:
        raise SimError("no GEMM records to dump (run the simulator with trace_gemm=True)")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "inp.hex").write_text("".join(_hex_word(r.inp, 8) + "\n" for r in records))
    (d / "wgt.hex").write_text("".join(_hex_word(r.wgt, 8) + "\n" for r in records))
    (d / "acc_in.hex").write_text("".join(_hex_word(r.acc_in, 32) + "\n" for r in records))
    (d / "acc_out.hex").write_text("".join(_hex_word(r.acc_out, 32) + "\n" for r in records))
    meta = {"n": len(records), "block_in": cfg.block_in, "block_out": cfg.block_out,
            "wgt_mode": wgt_mode, "shift_p": int(shift_P), "shift_bits": cfg.SHIFT_BITS}
    (d / "meta.json").write_text(json.dumps(meta, indent=1))
    return d


@dataclass
class TbResult:
    passed: bool
    errors: int
    vectors: int
    log: str


def run_testbench(core: str, vectors, timeout: float = 120) -> TbResult:
    """Simulate ``core`` ('shift' or 'mac') on a vector folder from ``dump_gemm_vectors``."""
    _name, src = core_file(core)
    vec = Path(vectors)
    meta = json.loads((vec / "meta.json").read_text())
    with tempfile.TemporaryDirectory(prefix="vta_tb_") as tmp:
        exe = Path(tmp) / "tb.vvp"
        cmd = [find_tool("iverilog"), "-g2005", "-o", str(exe), f"-DVEC_DIR=\"{vec.resolve()}\"",
               f"-Ptb_gemm.BLOCK_IN={meta['block_in']}", f"-Ptb_gemm.BLOCK_OUT={meta['block_out']}",
               f"-Ptb_gemm.N={meta['n']}", f"-Ptb_gemm.SHIFT_P={meta['shift_p']}",
               f"-Ptb_gemm.SHIFT_BITS={meta['shift_bits']}"]
        if core == "shift":
            cmd.append("-DSHIFT_CORE")
        cmd += [str(RTL_DIR / "tb_gemm.v"), str(src)]
        comp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if comp.returncode:
            raise RtlToolError(f"iverilog failed: {comp.stderr.strip()}")
        run = subprocess.run([find_tool("vvp"), "-n", str(exe)], capture_output=True, text=True,
                             timeout=timeout)
    log = run.stdout + run.stderr
    m = re.search(r"RESULT errors=(\d+) vectors=(\d+)", log)
    if run.returncode or not m:
        raise RtlToolError(f"testbench did not finish: {log.strip()[-500:]}")
    errors, n = int(m.group(1)), int(m.group(2))
    return TbResult(errors == 0 and n == meta["n"], errors, n, log)


def lint(core: str, **params) -> str:
    """``verilator --lint-only -Wall`` with parameter overrides; returns its output."""
    name, src = core_file(core)
    cmd = [find_tool("verilator"), "--lint-only", "-Wall", "--top-module", name]
    cmd += [f"-G{k}={v}" for k, v in params.items()] + [str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise RtlToolError(f"verilator lint of {name} failed:\n{r.stderr.strip()}")
    return r.stdout + r.stderr
