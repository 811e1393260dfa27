"""Which form shift layers run in on a target: the shift-add kernels or their equal int
dot product (``shift_kernel_choice.json``, measured by ``benchmarks/shift_kernel_forms.py``)."""

from __future__ import annotations

import json
from pathlib import Path

CHOICE_FILE = Path(__file__).with_name("shift_kernel_choice.json")


def measured_forms() -> dict:
    """The recorded measurements, by target name (empty when never measured)."""
    return json.loads(CHOICE_FILE.read_text()) if CHOICE_FILE.exists() else {}


def int_kernel_form(target_name: str) -> str:
    """``"shift"`` or ``"dot"``: the integer form measured faster on ``target_name``.

    Targets never measured get the shift form (the point of the rewrite on multiplier-less
    hardware such as the FPGA).
    """
    return measured_forms().get(target_name, {}).get("int", "shift")


def float_kernel_form(target_name: str) -> str:
    """``"shift"`` or ``"dot"``: the float form measured faster on ``target_name`` (the recorded
    totals ``float_shift_ms`` vs ``float_mul_ms``, the latter an FP32 conv over decoded weights).
    Targets never measured get the shift form."""
    totals = measured_forms().get(target_name, {}).get("total_ms", {})
    if "float_shift_ms" not in totals or "float_mul_ms" not in totals:
        return "shift"
    return "dot" if totals["float_mul_ms"] < totals["float_shift_ms"] else "shift"
