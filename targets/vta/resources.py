"""Synthesise the GEMM cores with yosys and write ``resources.json`` (committed).

Run ``python -m shiftc.targets.vta.resources`` (several minutes: the 16x16 shift core and the
LUT-only 16x16 MAC dominate).  Tests read the committed JSON and run only one quick
synthesis, so the numbers here are reproducible but not recomputed on every test run.

Configurations:
* full GEMM cores at the default VTA block (BLOCK_IN = BLOCK_OUT = 16), int8 inputs,
  int32 accumulators, int8 weight words (shift codes in the shift core, 4-bit shift amount);
* a 16-lane PE (BLOCK_IN=1, BLOCK_OUT=16: one int8 input times 16 weights into 16 int32
  accumulators), the unit docs/NUMERICS.md section 5.3 tabulates, with 8-bit and 5-bit codes
  (5-bit: sign + 4-bit magnitude, i.e. the "5-bit-code shift PE") and the MAC with and
  without DSPs;
* the same PE on ECP5 (synth_ecp5) for a second opinion.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .rtl import synthesize

OUT = Path(__file__).with_name("resources.json")

CONFIGS = [
    # name, core, target, nodsp, params
    ("mac_16x16", "mac", "xilinx", False, dict(BLOCK_IN=16, BLOCK_OUT=16)),
    ("mac_16x16_nodsp", "mac", "xilinx", True, dict(BLOCK_IN=16, BLOCK_OUT=16)),
    ("shift_16x16_code8", "shift", "xilinx", False, dict(BLOCK_IN=16, BLOCK_OUT=16, CODE_W=8)),
    ("mac_pe16", "mac", "xilinx", False, dict(BLOCK_IN=1, BLOCK_OUT=16)),
    ("mac_pe16_nodsp", "mac", "xilinx", True, dict(BLOCK_IN=1, BLOCK_OUT=16)),
    ("shift_pe16_code8", "shift", "xilinx", False, dict(BLOCK_IN=1, BLOCK_OUT=16, CODE_W=8)),
    ("shift_pe16_code5", "shift", "xilinx", False, dict(BLOCK_IN=1, BLOCK_OUT=16, CODE_W=5)),
    ("mac_pe16_ecp5", "mac", "ecp5", False, dict(BLOCK_IN=1, BLOCK_OUT=16)),
    ("shift_pe16_code5_ecp5", "shift", "ecp5", False, dict(BLOCK_IN=1, BLOCK_OUT=16, CODE_W=5)),
]

NUMERICS_TABLE = {  # docs/NUMERICS.md section 5.3, 16-lane int8 PE with int32 accumulator
    "int8 MAC": {"dsp": 16, "lut": 32},
    "int8 MAC, no DSPs": {"dsp": 0, "lut": 4100},
    "5-bit-code shift PE": {"dsp": 0, "lut": 1700},
}


def main(argv=None) -> int:
    only = set(argv or sys.argv[1:])
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    results = dict(old.get("results", {}))
    for name, core, target, nodsp, params in CONFIGS:
        if only and name not in only:
            continue
        r = synthesize(core, target=target, nodsp=nodsp, **params)
        results[name] = {k: r[k] for k in ("core", "target", "nodsp", "params", "lut", "ff",
                                           "dsp", "carry", "cell_types")}
        print(f"{name:24s} LUT {r['lut']:6d}  FF {r['ff']:5d}  DSP {r['dsp']:4d}  "
              f"carry {r['carry']:5d}", flush=True)
    version = subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()
    data = {
        "tool": version,
        "note": ("yosys generic estimates (no place and route). LUT = LUT1..LUT6 (xilinx) or "
                 "LUT4 (ecp5); carry cells (CARRY4 / CCU2C) are counted separately."),
        "numerics_md_table": NUMERICS_TABLE,
        "results": {n: results[n] for n, *_ in CONFIGS if n in results},
    }
    OUT.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
