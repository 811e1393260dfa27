"""Shift codes recorded in an ONNX model's metadata: what ``shiftc finetune`` writes and the shift
pass reads back, so that fine-tuned weights are encoded losslessly (no second rounding).

``metadata_props[METADATA_KEY]`` is JSON ``{"version": 1, "layers": [...]}``; one entry per
coded weight: ``name`` (the ONNX initializer), ``bits``, ``terms``, ``zero_free``, ``shape`` (the
output-channel-first shape, OIHW or (N, K)), ``alpha`` (base64 float32, one per output channel)
and ``codes`` (base64 of ``pack_codes`` of the ``(terms, *shape)`` int8 codes).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from . import shift as ref

METADATA_KEY = "shiftc.shift_codes"
VERSION = 1


@dataclass
class CodedWeight:
    """One weight's codes on shiftc's grid (output channel on axis 0 of ``codes[i]``)."""

    name: str
    codes: np.ndarray  # int8 (terms, O, ...)
    alpha: np.ndarray  # float32 (O,)
    bits: int
    zero_free: bool = True

    @property
    def terms(self) -> int:
        return int(self.codes.shape[0])

    def weight(self) -> np.ndarray:
        """The decoded output-channel-first weight (float32, the reference decoder)."""
        if self.terms > 1:
            return ref.decode_multi(self.codes, self.alpha)
        return ref.decode_pot(self.codes[0], self.alpha)

    def to_json(self) -> dict:
        packed = ref.pack_codes(self.codes, self.bits, self.zero_free)
        return {"name": self.name, "bits": self.bits, "terms": self.terms, "zero_free": self.zero_free,
                "shape": list(self.codes.shape[1:]), "alpha": _b64(self.alpha.astype("<f4").tobytes()),
                "codes": _b64(packed)}

    @classmethod
    def from_json(cls, d: dict) -> "CodedWeight":
        shape = (int(d["terms"]), *(int(v) for v in d["shape"]))
        codes = ref.unpack_codes(base64.b64decode(d["codes"]), int(d["bits"]), int(np.prod(shape)), bool(d["zero_free"]), shape)
        alpha = np.frombuffer(base64.b64decode(d["alpha"]), dtype="<f4").astype(np.float32)
        if alpha.shape != (shape[1],):
            raise ValueError(f"{d['name']}: {alpha.size} alpha values for {shape[1]} output channels")
        return cls(str(d["name"]), codes, alpha, int(d["bits"]), bool(d["zero_free"]))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dumps(weights: list[CodedWeight], **extra) -> str:
    """The metadata value for ``weights`` (``extra``: further JSON fields, e.g. the training setup)."""
    return json.dumps({"version": VERSION, "layers": [w.to_json() for w in weights], **extra})


def loads(text: str) -> list[CodedWeight]:
    """The coded weights of a metadata value; ``ValueError`` on a malformed or newer record."""
    try:
        doc = json.loads(text)
        if doc.get("version") != VERSION:
            raise ValueError(f"unknown shift-codes record version {doc.get('version')!r}")
        return [CodedWeight.from_json(d) for d in doc["layers"]]
    except (KeyError, TypeError, json.JSONDecodeError, base64.binascii.Error) as exc:
        raise ValueError(f"malformed {METADATA_KEY} metadata: {exc}") from None


def from_metadata(props: dict[str, str]) -> list[CodedWeight]:
    """The recorded coded weights of a model's ``metadata_props`` (empty when none)."""
    return loads(props[METADATA_KEY]) if METADATA_KEY in props else []
