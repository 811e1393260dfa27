"""Fine-tuning data: unlabelled inputs (``.npy``, or ``.npz`` with one array per model input) and
optional integer class labels (``.npy``), checked against each other and the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shiftc.core.errors import InputError


def load_inputs(path: str | Path, input_name: str | None = None) -> np.ndarray:
    """Float32 inputs ``(N, ...)`` from a ``.npy`` file or an ``.npz`` (the array named after the
    model input, or its only array)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--data {path}: not a readable .npy/.npz array file ({str(exc).splitlines()[0]})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = list(data.keys())
        if input_name in keys:
            data = data[input_name]
        elif len(keys) == 1:
            data = data[keys[0]]
        else:
            raise InputError(f"--data {path}: holds {keys}; name one array after the model input {input_name!r}")
    arr = np.asarray(data)
    if arr.ndim < 2 or arr.shape[0] < 1 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"--data {path}: expected a numeric array (N, ...) with N >= 1, got {arr.dtype} {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"--data {path}: contains NaN or Inf")
    return arr.astype(np.float32)


def load_labels(path: str | Path, n: int) -> np.ndarray:
    """Int64 class labels ``(n,)`` from a ``.npy`` file."""
    try:
        labels = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--labels {path}: not a readable .npy file ({str(exc).splitlines()[0]})") from None
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"--labels {path}: shape {labels.shape} does not match the {n} inputs of --data (expected ({n},))")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise InputError(f"--labels {path}: expected non-negative integer class indices, got {labels.dtype}")
    return labels.astype(np.int64)


def check_sample_shape(inputs: np.ndarray, expected: tuple[int, ...] | None) -> None:
    """``inputs[0]`` must have the model input's per-sample shape (batch axis excluded) if known."""
    if expected is not None and tuple(inputs.shape[1:]) != tuple(expected):
        raise InputError(f"--data samples have shape {tuple(inputs.shape[1:])}, the model input needs {tuple(expected)} per sample")
