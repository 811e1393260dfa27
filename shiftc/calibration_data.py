"""Calibration samples: loading them from files, or synthesising labelled stand-ins.

A sample is a dict ``{input_name: array}`` with the model's exact input shape and dtype.
Files: an ``.npz`` whose keys are input names and whose arrays are one sample (the input's shape)
or a stack of samples (a leading sample axis); or a folder of ``.npy`` (single-input models) or
``.npz`` files, one sample each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core.errors import InputError
from .core.tensor_spec import TensorSpec


def _split(name: str, arr: np.ndarray, spec: TensorSpec) -> list[np.ndarray]:
    shape = tuple(spec.shape)
    if arr.shape == shape:
        return [arr]
    if arr.shape[1:] == shape:
        return list(arr)
    if arr.ndim == len(shape) and arr.shape[1:] == shape[1:]:
        # a batch of N along the batch axis for a batch-1 model
        if shape[0] == 1:
            return [a[None] for a in arr]
    raise InputError(f"calibration array {name!r} has shape {arr.shape}; expected {shape} or (N, *{shape})")


def _cast(arr: np.ndarray, spec: TensorSpec, name: str) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating) != np.issubdtype(np.dtype(spec.dtype), np.floating):
        raise InputError(f"calibration array {name!r} is {arr.dtype}; the input is {spec.dtype}")
    out = arr.astype(spec.dtype, copy=False)
    bad = nonfinite_count(out)
    if bad:
        raise InputError(f"calibration array {name!r} holds {bad} NaN/Inf value(s); calibration needs finite samples")
    return out


def nonfinite_count(arr: np.ndarray) -> int:
    """How many NaN/Inf entries a (float) array holds; 0 for integer arrays."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fc":
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def from_arrays(arrays: dict[str, np.ndarray], specs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        if len(specs) == 1 and len(arrays) == 1:
            arrays = {specs[0].name: next(iter(arrays.values()))}
        else:
            raise InputError(f"calibration data lacks input(s) {missing}; it has {sorted(arrays)}")
    per_input = {s.name: [_cast(a, s, s.name) for a in _split(s.name, np.asarray(arrays[s.name]), s)] for s in specs}
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise InputError(f"calibration inputs have different sample counts: { {k: len(v) for k, v in per_input.items()} }")
    return [{k: v[i] for k, v in per_input.items()} for i in range(counts.pop())]


def load(path: str | Path, specs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """Read calibration samples from an .npz file or a folder of .npy/.npz files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            raise InputError(f"calibration folder {path} has no .npy or .npz files")
        samples = []
        for f in files:
            samples.extend(load(f, specs))
        return samples
    return from_arrays(read_arrays(path, specs, "calibration data"), specs)


def read_arrays(path: Path, specs: list[TensorSpec], what: str = "input") -> dict[str, np.ndarray]:
    """Arrays of an .npy (single-input models) or .npz (keyed by input name) file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read {what} {path} as .npy/.npz: {exc}") from None
    if isinstance(data, np.ndarray):
        if len(specs) != 1:
            raise InputError(f"{path} holds one array but the model has {len(specs)} inputs; use an .npz keyed by input name")
        return {specs[0].name: data}
    # an .npz opens lazily: a pickled member or a bad CRC only shows when its array is read
    try:
        with data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # ValueError (pickle), zipfile.BadZipFile (CRC), EOFError, zlib.error, ...
        raise InputError(f"cannot read {what} {path} as .npz: {type(exc).__name__}: {str(exc).strip()[:200]}") from None


def synthetic(specs: list[TensorSpec], n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Stand-in samples (N(0,1) floats, small non-negative ints) when the user gave none."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sample = {}
        for s in specs:
            if np.issubdtype(np.dtype(s.dtype), np.floating):
                sample[s.name] = rng.standard_normal(s.shape).astype(s.dtype)
            else:
                sample[s.name] = rng.integers(0, 2, size=s.shape).astype(s.dtype)
        out.append(sample)
    return out
