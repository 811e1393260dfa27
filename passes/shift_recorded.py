"""Shift codes recorded by ``shiftc finetune`` (``shiftc.reference.shift_record``): the layers
whose weights already lie on the code grid keep those exact codes (no second rounding), and the
layers fine-tuning kept as multiplications stay float.

A layer matches a record when its output-channel-first weight equals the record's decoded weight
bit for bit (weights are matched by value: the importer does not keep ONNX initializer names).
"""

from __future__ import annotations

import json

import numpy as np

from shiftc.reference import shift_record as R

from . import shift as S


def _digest(weight: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(weight, dtype=np.float32).tobytes()).hexdigest()


def recorded(layers: list[S.Layer], props: dict[str, str]) -> tuple[dict, set[str], list[str]]:
    """``(name -> (ShiftConfig, codes, alpha), names kept as multiply, notes)`` for the layers of
    ``layers`` that the model's ``metadata_props`` record. Raises ``ValueError`` on a malformed record."""
    coded = R.from_metadata(props)
    if not coded:
        return {}, set(), []
    multiply = set(json.loads(props[R.METADATA_KEY]).get("multiply", []))
    by_shape: dict[tuple, list[R.CodedWeight]] = {}
    for c in coded:
        by_shape.setdefault(tuple(c.codes.shape[1:]), []).append(c)
    found, keep, used = {}, set(), set()
    for layer in layers:
        w = layer.oi_weight
        for c in by_shape.get(tuple(w.shape), []):
            if np.array_equal(c.weight(), w):
                found[layer.name] = (S.ShiftConfig(c.bits, c.terms, c.zero_free), c.codes, c.alpha)
                used.add(c.name)
                break
        else:
            if multiply and _digest(w) in multiply:
                keep.add(layer.name)
    notes = [f"fine-tuned shift codes: {len(found)} of {len(coded)} recorded layer(s) matched bit for bit and encoded "
             "with their recorded codes (no second rounding, no bias correction)"]
    missed = [c.name for c in coded if c.name not in used]
    if missed:
        notes.append(f"recorded shift codes matched no layer (weights changed by an earlier pass?): {', '.join(missed)}")
    if keep:
        notes.append(f"kept as float multiplications by fine-tuning's choice: {', '.join(sorted(keep))}")
    return found, keep, notes
