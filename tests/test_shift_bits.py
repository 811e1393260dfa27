"""``--max-bits-per-weight`` (passes/shift_bits.py): the size budget is kept to the bit, int8 layers
kept as multiplies run and match onnxruntime, and the shift layers of a mixed plan still hold no
weight x activation multiply (tests/test_shift_tir.py's scan)."""

import math

import numpy as np
import pytest
import tvm
from shift_helpers import ShiftWeights
from test_shift_pass import imported, ort_with_decoded_weights, tiny_model
from test_shift_tir import data_multiplies, lower

import shiftc
from shiftc import evaluate
from shiftc.core.contract import ShiftKernel
from shiftc.core.errors import InputError
from shiftc.passes import shift as S
from shiftc.passes import shift_bits as SB
from shiftc.schedules.shift_schedule import schedule_cpu

MIXED = {"conv2d_0": S.ShiftConfig(4), "conv2d_1": S.INT8, "matmul_0": S.INT8, "matmul_1": S.ShiftConfig(3, 2)}


def _calibration(n=4, seed=5):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0.5, 1.0, (1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def test_greedy_path_stays_within_the_cap_and_lowers_the_error():
    costs = {"big": [300, 400, 800], "small": [30, 40, 80]}
    err2 = {"big": [0.5, 0.2, 0.19], "small": [0.9, 0.3, 0.001]}
    path = SB.greedy_path(costs, err2, cap=500)
    totals = [t for _, t, _, _ in path]
    errors = [e for _, _, e, _ in path]
    assert totals[0] == 330 and all(t <= 500 for t in totals)
    assert all(b < a for a, b in zip(errors, errors[1:]))
    # small -> 8 bits first (0.9 - 0.001 over 50 bits), then big -> 4b (0.3 / 100); big -> 8b does not fit
    assert path[-1][0] == {"big": 1, "small": 2} and totals[-1] == 480


def test_stored_bits_count_everything_the_kernels_store():
    _, mod = imported()
    layer = next(l for l in S.find_layers(mod) if l.name == "matmul_0")  # (128, 16), has a bias
    for cfg in (S.ShiftConfig(3), S.ShiftConfig(4, 2), S.INT8):
        codes, alpha = S.encode(layer, cfg)
        want = 8 * (S.pack(codes, cfg).nbytes + alpha.astype(np.float32).nbytes + layer.epilogue.bias.nbytes)
        assert SB.stored_bits(layer, cfg, bias_stored=True) == want


def test_budget_is_respected_to_the_bit(tmp_path):
    budget = 5.0
    cm = shiftc.compile(tiny_model(), "x86", max_bits_per_weight=budget, calibration=_calibration(), output=tmp_path / "a")
    stage = next(s for s in cm.report.stages if s.name == "shift")
    info = stage.summary["bit_allocation"]
    rows = [r for r in stage.rows if r["bits"]]
    weights = sum(int(np.prod(r["weight_shape"])) for r in rows)
    assert len(rows) == 4 and info["weights"] == weights and info["budget_bits"] == math.floor(budget * weights)
    assert 8 * sum(r["packed_bytes"] for r in rows) == info["stored_bits"] <= info["budget_bits"]
    assert stage.summary["bits_per_weight"] <= budget and stage.summary["mode"] == "max-bits"
    pareto = info["pareto"]
    assert pareto[0]["step"] == 0 and "measured_rel_l2" in pareto[0] and "measured_rel_l2" in pareto[-1]
    assert pareto[-1]["measured_rel_l2"] < pareto[0]["measured_rel_l2"]
    assert {r["layer"]: r["bits"] and r["terms"] for r in rows}.keys() == {l["layer"] for l in info["layers"]}
    assert cm.run(_calibration(1, seed=9)[0]["x"])["y"].shape == (1, 10)


def test_budget_below_the_smallest_plan_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="below the smallest plan"):
        shiftc.compile(tiny_model(), "x86", max_bits_per_weight=2.0, calibration=_calibration(), output=tmp_path / "a")


def test_int8_kept_layers_equal_their_dequantised_weights_in_onnxruntime():
    loaded, mod = imported()
    x = np.random.default_rng(3).normal(size=(1, 3, 8, 8)).astype(np.float32)
    got = evaluate.relax_outputs(ShiftWeights(MIXED)(mod), loaded.inputs, [{"x": x}])[0][0]
    want = ort_with_decoded_weights(MIXED, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    q, scale = S.encode(S.find_layers(mod)[1], S.INT8)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and scale.dtype == np.float32


def test_shift_layers_of_a_mixed_plan_never_multiply_and_int8_layers_do():
    _, mod = imported()
    out = ShiftWeights(MIXED)(mod)
    funcs = {gv.name_hint: f for gv, f in out.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    shift = [f for f in funcs.values() if ShiftKernel.from_func(f) is not None]
    int8 = [f for n, f in funcs.items() if n.startswith("int8w_")]
    assert len(shift) == 2 and len(int8) == 2
    for func in shift:
        loops, muls = data_multiplies(lower(schedule_cpu(func)))
        assert loops >= 1 and muls == [], muls
    for func in int8:  # control: the int8 kernels multiply x by the widened weight, and the scan sees it
        loops, muls = data_multiplies(lower(func), data={p.name for p in func.params})
        assert loops >= 1 and muls
    text = out["main"].script(show_meta=False)
    assert "R.nn.conv2d(" not in text and "R.matmul(" not in text


def test_integer_only_leaves_int8_layers_to_the_integer_pass(tmp_path):
    cm = shiftc.compile(tiny_model(), "x86", max_bits_per_weight=9, integer_only=True, calibration=_calibration(8), output=tmp_path / "a")
    stage = next(s for s in cm.report.stages if s.name == "shift")
    kept = {r["layer"] for r in stage.rows if r["kernel"] == "int8 (left to the integer pass)"}
    assert kept and kept == {r["layer"] for r in stage.summary["bit_allocation"]["layers"] if r["rung"] == "int8"}
    assert any("left to the integer pass" in n for n in stage.notes)
    integer = next(s for s in cm.report.stages if s.name == "integerize")
    assert integer.error["rel_l2"] < 0.2
    assert np.isfinite(cm.run(_calibration(1, seed=9)[0]["x"])["y"]).all()
