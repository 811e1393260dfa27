"""GEMM-core RTL: the simulator's vectors pass in iverilog; lint; one quick synthesis."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import rtl_bench
from helpers.rtl_bench import dump_gemm_vectors
from helpers.vta_layers import run_layer
from shiftc.targets.vta import rtl
from shiftc.targets.vta.codegen import QConv2d, QDense
from shiftc.targets.vta.config import load_config

needs = lambda *tools: pytest.mark.skipif(  # noqa: E731
    any(shutil.which(t) is None for t in tools), reason=f"needs {', '.join(tools)}")

# 4x4 blocks keep the testbench small; SRAM depths as in the default config.
CFG4 = load_config().replace(LOG_BLOCK_IN=2, LOG_BLOCK_OUT=2, LOG_INP_BUFF_SIZE=13,
                             LOG_WGT_BUFF_SIZE=14, LOG_ACC_BUFF_SIZE=15)


def _vectors(tmp_path, mode, cfg, P=6, seed=0, limit=None):
    """Run a small conv and a dense layer with GEMM tracing; dump all uop executions."""
    rng = np.random.default_rng(seed)

    def weights(shape):
        if mode == "int8":
            return rng.integers(-128, 128, shape, dtype=np.int8)
        c = rng.integers(0, P + 2, shape) * rng.choice([-1, 1], shape)  # includes zero codes
        return c.astype(np.int8)

    Ps = P if mode == "shift" else None
    x = rng.integers(-128, 128, (1, 6, 5, 5), dtype=np.int8)
    r1 = run_layer(QConv2d(weights((7, 6, 3, 3)), None, 6, 1, 1, wgt_mode=mode, shift_P=Ps),
                   x, cfg=cfg, trace_gemm=True)
    xd = rng.integers(-128, 128, (3, 9), dtype=np.int8)
    r2 = run_layer(QDense(weights((5, 9)), rng.integers(-99, 99, 5).astype(np.int32), 2,
                          wgt_mode=mode, shift_P=Ps), xd, cfg=cfg, trace_gemm=True)
    recs = r1.simulator.gemm_records + r2.simulator.gemm_records
    assert len(recs) > 100
    return dump_gemm_vectors(recs, tmp_path / mode, cfg, mode, P if mode == "shift" else 0,
                             limit=limit)


@needs("iverilog", "vvp")
@pytest.mark.parametrize("core, mode", [("mac", "int8"), ("shift", "shift")])
def test_rtl_core_matches_simulator_vectors(tmp_path, core, mode):
    d = _vectors(tmp_path, mode, CFG4)
    res = rtl_bench.run_testbench(core, d)
    assert res.passed, res.log
    assert res.vectors == json.loads((d / "meta.json").read_text())["n"]


@needs("iverilog", "vvp")
def test_rtl_16x16_shift_core_default_block(tmp_path):
    d = _vectors(tmp_path, "shift", load_config(), P=9, limit=150)
    assert rtl_bench.run_testbench("shift", d).passed


@needs("iverilog", "vvp")
def test_testbench_detects_a_wrong_output(tmp_path):
    d = _vectors(tmp_path, "shift", CFG4)
    lines = (d / "acc_out.hex").read_text().split()
    lines[3] = f"{int(lines[3], 16) ^ 1:0{len(lines[3])}x}"       # flip one bit of one lane
    (d / "acc_out.hex").write_text("\n".join(lines) + "\n")
    res = rtl_bench.run_testbench("shift", d)
    assert not res.passed and res.errors == 1 and "MISMATCH vector 3" in res.log


@needs("verilator")
@pytest.mark.parametrize("core", ["shift", "mac"])
def test_verilator_lint_clean(core):
    for b_in, b_out in ((16, 16), (1, 16), (4, 4)):
        rtl_bench.lint(core, BLOCK_IN=b_in, BLOCK_OUT=b_out)


@needs("yosys")
def test_quick_synthesis_shift_core_uses_no_dsp():
    s = rtl.synthesize("shift", BLOCK_IN=2, BLOCK_OUT=2)
    m = rtl.synthesize("mac", BLOCK_IN=2, BLOCK_OUT=2)
    assert s["dsp"] == 0 and s["lut"] > 0
    assert m["dsp"] > 0


def test_committed_resource_table():
    data = json.loads((Path(rtl.__file__).with_name("resources.json")).read_text())
    r = data["results"]
    for name in ("shift_16x16_code8", "shift_pe16_code5", "shift_pe16_code8"):
        assert r[name]["dsp"] == 0 and r[name]["lut"] > 0
    assert r["mac_16x16"]["dsp"] == 256 and r["mac_pe16"]["dsp"] == 16
    assert r["mac_pe16_nodsp"]["dsp"] == 0
