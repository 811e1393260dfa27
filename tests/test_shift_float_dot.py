"""Float shift layers on CPU: the shift-add kernels (decode per call) and the FP32 conv/matmul over
codes decoded while compiling (schedules/shift_float_dot.py) give the model with decoded weights
(onnxruntime) to FP32 round-off; the report says which form runs."""

from pathlib import Path

import numpy as np
import pytest
import tvm
from test_shift_pass import imported, ort_with_decoded_weights
from shift_helpers import ShiftWeights
from tvm import relax

from shiftc.passes import shift as S
from shiftc.schedules import FLOAT_FORM_NOTES, Lowering, ScheduleReport, lowering_pipeline, prepare, shift_form
from shiftc.targets.x86 import flatten_outputs

CNN = Path(__file__).resolve().parent.parent / "examples" / "models" / "cnn.onnx"

TARGET = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"})


def _build(mod, form):
    report = ScheduleReport()
    prepared = prepare(mod, TARGET, report=report, lowering=Lowering(cpu=True, float_shift_form=form))
    kernels = [gv.name_hint for gv, f in prepared.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    with TARGET, tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(prepared, target=TARGET, relax_pipeline=lowering_pipeline(TARGET))
    return relax.VirtualMachine(ex, tvm.cpu()), kernels, report


@pytest.mark.parametrize("cfg", [S.ShiftConfig(4), S.ShiftConfig(3, 2, False)])
def test_both_forms_equal_decoded_weights(cfg):
    _, mod = imported()
    plan = {layer.name: cfg for layer in S.find_layers(mod)}
    shifted = ShiftWeights(plan)(mod)
    x = np.random.default_rng(5).normal(size=(1, 3, 8, 8)).astype(np.float32)
    want = ort_with_decoded_weights(plan, x)
    outs = {}
    for form in ("shift", "dot"):
        vm, kernels, report = _build(shifted, form)
        assert any(n.startswith("shift_") for n in kernels) == (form == "shift"), kernels
        assert FLOAT_FORM_NOTES[form] in report.notes
        outs[form] = flatten_outputs(vm["main"](tvm.runtime.tensor(x)))[0]
        assert np.linalg.norm(outs[form] - want) / np.linalg.norm(want) < 1e-5
    np.testing.assert_allclose(outs["dot"], outs["shift"], rtol=1e-5, atol=1e-6)


def test_x86_float_form_follows_the_recorded_measurement():
    totals = shift_form.measured_forms()["x86"]["total_ms"]
    expect = "dot" if totals["float_mul_ms"] < totals["float_shift_ms"] else "shift"
    assert shift_form.float_kernel_form("x86") == expect
    assert shift_form.float_kernel_form("never-measured") == "shift"


def test_x86_target_option_picks_the_form_and_the_report_names_it(tmp_path):
    """``float_shift_form='shift'`` keeps the packed codes (the small artifact); 'dot' ships FP32 weights."""
    import shiftc

    sizes = {}
    for form in ("shift", "dot"):
        cm = shiftc.compile(CNN, target="x86", shift_bits=4, shift_bias_correction=False, float_shift_form=form,
                            output=tmp_path / form)
        assert cm.meta["target"]["options"]["float_shift_form"] == form
        notes = [n for s in cm.meta["report"]["stages"] for n in s["notes"]]
        assert FLOAT_FORM_NOTES[form] in notes
        sizes[form] = sum(p.stat().st_size for p in (tmp_path / form).iterdir())
    assert sizes["shift"] < sizes["dot"] / 2, sizes
