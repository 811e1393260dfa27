"""Calibration: activation statistics of a Relax model, kept apart from the quantiser.

Observers (onnxruntime-style) see float activations and return a symmetric clipping threshold
``T``; the quantiser turns it into a scale ``T / (2**(bits-1) - 1)``. They never quantise.

- ``MinMax``: ``T = max |x|``.
- ``Percentile(p)``: ``T`` = the ``p``-th percentile of ``|x|`` (default 99.99).
- ``MSE``: ``T`` minimising the mean squared error of int8 fake quantisation of ``x``
  (grid search over ``max|x| * k / 128``, ``k = 16 .. 128``; uint8 codes for a value never negative).

``collect(mod, samples, which)`` records the statistics of Relax dataflow values by a probe: a copy
of ``main`` that returns the chosen intermediate values as its outputs, built for the host and run
on each sample. Values are named by their Relax variable name (unique in ``main``).

Every observer also keeps the smallest value seen: a value never negative on any sample is
recorded as non-negative (``Calibration.nonnegative``), and the integeriser may then give it
unsigned codes ``[0, 2**bits - 1]`` (scale ``T / (2**bits - 1)``: one more bit than symmetric).

Values with ``|x| >= 1e30`` (``-inf``, ``-FLT_MAX`` in additive attention masks) are masking
sentinels, not part of a range: observers skip them (the integer graph saturates them).

Percentile and MSE keep a bounded random subsample of ``|x|`` per value (all of it for small
tensors and few samples, e.g. one-sample calibration); MinMax keeps the exact maximum.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .core.errors import InputError
from .reference.quant import qmax

log = logging.getLogger(__name__)

_KEEP_PER_UPDATE = 1 << 17
SENTINEL = 1e30  # |x| >= this is a masking sentinel (e.g. -FLT_MAX in additive attention masks)
_KEEP_TOTAL = 1 << 20


class Observer(ABC):
    """Running statistics of one float tensor value; ``threshold()`` is its clipping range."""

    method = ""

    def __init__(self):
        self.absmax = 0.0
        self.minimum = np.inf  # the smallest value seen: >= 0 proves the value non-negative
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32)
        if np.any(np.isnan(x)):
            raise InputError("calibration produced a NaN activation; check the samples")
        x = x[np.abs(x) < SENTINEL]  # +-inf and +-FLT_MAX-like masking constants are not a range
        if x.size == 0:
            return
        self.absmax = max(self.absmax, float(np.max(np.abs(x))))
        self.minimum = min(self.minimum, float(np.min(x)))
        self.count += 1
        self._update(x)

    def _update(self, x: np.ndarray) -> None:
        pass

    @abstractmethod
    def threshold(self) -> float:
        """The clipping threshold (a positive float) chosen from what was observed."""

    def scale(self, bits: int = 8) -> float:
        """Symmetric per-tensor scale for ``bits``-bit codes (never 0: a constant-zero tensor gets
        the scale of threshold 1)."""
        t = self.threshold()
        return (t if t > 0 else 1.0) / qmax(bits)


class MinMax(Observer):
    method = "minmax"

    def threshold(self) -> float:
        return self.absmax


class _Sampled(Observer):
    """Keeps a seeded random subsample of |x| (bounded memory)."""

    def __init__(self):
        super().__init__()
        self._parts: list[np.ndarray] = []
        self._rng = np.random.default_rng(0)

    def _update(self, x):
        a = np.abs(x.reshape(-1))
        if a.size > _KEEP_PER_UPDATE:
            a = self._rng.choice(a, _KEEP_PER_UPDATE, replace=False)
        self._parts.append(a)
        if sum(p.size for p in self._parts) > _KEEP_TOTAL:
            allv = np.concatenate(self._parts)
            self._parts = [self._rng.choice(allv, _KEEP_TOTAL, replace=False)]

    def values(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)


class Percentile(_Sampled):
    method = "percentile"

    def __init__(self, percentile: float = 99.99):
        super().__init__()
        if not 0 < percentile <= 100:
            raise InputError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile

    def threshold(self) -> float:
        v = self.values()
        return min(float(np.percentile(v, self.percentile)), self.absmax) if v.size else 0.0


class MSE(_Sampled):
    method = "mse"

    def __init__(self, bits: int = 8, steps: int = 113):
        super().__init__()
        self.bits, self.steps = bits, steps

    def threshold(self) -> float:
        v = self.values().astype(np.float64)
        if not v.size or self.absmax == 0:
            return 0.0
        q = (1 << self.bits) - 1 if self.minimum >= 0 else qmax(self.bits)  # unsigned codes when never negative
        best_t, best_err = self.absmax, np.inf
        for t in np.linspace(self.absmax / 8, self.absmax, self.steps):
            s = t / q
            err = np.mean((np.minimum(np.floor(v / s + 0.5), q) * s - v) ** 2)
            if err < best_err:
                best_t, best_err = float(t), err
        return best_t


OBSERVERS = {"minmax": MinMax, "percentile": Percentile, "mse": MSE}


def make_observer(method: str) -> Observer:
    if method not in OBSERVERS:
        raise InputError(f"unknown calibration method {method!r}; known: {sorted(OBSERVERS)}")
    return OBSERVERS[method]()


def weight_scales(w: np.ndarray, axis: int, bits: int = 8) -> np.ndarray:
    """Per-output-channel symmetric scales ``max|w_c| / qmax`` along ``axis`` (float64).

    An all-zero channel gets scale 0 (its codes are 0 and its requantiser multiplies by 0)."""
    w = np.asarray(w, dtype=np.float64)
    axis = axis % w.ndim
    red = tuple(i for i in range(w.ndim) if i != axis)
    return np.max(np.abs(w), axis=red) / qmax(bits)


# ----------------------------------------------------------------------------- probing
def float_values(func) -> list[str]:
    """Names of the float32 tensor values of a Relax function: parameters, then bindings in order."""
    names = [p.name for p in func.params if _is_f32(p.ty)]
    for block in func.body.blocks:
        for b in block.bindings:
            if _is_f32(b.var.ty):
                names.append(b.var.name)
    return names


def _is_f32(ty) -> bool:
    from tvm import relax

    return isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32" and ty.shape is not None


def probe_module(mod, names: Sequence[str], func_name: str = "main"):
    """A copy of ``mod`` whose ``func_name`` returns the named values (a tuple) instead of its result.

    The dataflow block is turned into a plain binding block (``ToNonDataflow``) so that every
    intermediate value may leave it.
    """
    import tvm
    from tvm import relax

    f = relax.transform.ToNonDataflow()(tvm.IRModule({func_name: mod[func_name]}))[func_name]
    by_name = {p.name: p for p in f.params}
    for block in f.body.blocks:
        for b in block.bindings:
            if b.var.name in by_name:
                raise InputError(f"Relax value name {b.var.name!r} is not unique in {func_name}; cannot calibrate by name")
            by_name[b.var.name] = b.var
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(f"calibration asked for unknown value(s) {missing[:5]}")
    result = relax.BlockBuilder().normalize(relax.Tuple([by_name[n] for n in names]))
    probe = relax.Function(f.params, relax.SeqExpr(f.body.blocks, result), result.ty, True, f.attrs)
    out = tvm.IRModule({gv: fn for gv, fn in mod.functions.items() if gv.name_hint != func_name}, attrs=mod.attrs)
    out[func_name] = probe
    return out


def collect(
    mod,
    samples: Iterable[dict],
    which: Sequence[str] | None = None,
    method: str = "minmax",
    max_samples: int | None = None,
    func_name: str = "main",
) -> dict[str, Observer]:
    """Run ``mod`` on the samples and observe the named float values (default: all of them).

    ``samples``: dicts of input arrays keyed by the parameter names of ``main``; ``max_samples``
    limits how many are used (1 = one-sample calibration). Returns ``{value_name: observer}``.
    """
    import tvm

    from .core.host import flatten_outputs, host_vm

    samples = list(samples)
    if max_samples is not None:
        if max_samples < 1:
            raise InputError(f"calibration_samples must be >= 1, got {max_samples}")
        samples = samples[:max_samples]
    if not samples:
        raise InputError("calibration needs at least one sample")
    func = mod[func_name]
    names = list(which) if which is not None else float_values(func)
    observers = {n: make_observer(method) for n in names}
    if not names:
        return observers
    probe = probe_module(mod, names, func_name)
    vm = host_vm(probe)
    params = [p.name for p in func.params]
    for s in samples:
        missing = [p for p in params if p not in s]
        if missing:
            raise InputError(f"calibration sample lacks input(s) {missing}")
        args = [tvm.runtime.tensor(np.ascontiguousarray(s[p]), tvm.cpu()) for p in params]
        outs = flatten_outputs(vm[func_name](*args))
        for n, v in zip(names, outs):
            observers[n].update(v)
    log.info("calibrated %d values on %d sample(s) with %s", len(names), len(samples), method)
    return observers


@dataclass
class Calibration:
    """Per-value activation thresholds (what the integeriser consumes) and the values seen to be
    never negative on any sample (``nonnegative``: after ReLU / ReLU6 / a clip at >= 0, ...)."""

    method: str
    samples: int
    thresholds: dict[str, float] = field(default_factory=dict)
    nonnegative: frozenset = frozenset()
    absmax: dict[str, float] = field(default_factory=dict)  # max |x| seen (the observer's, unclipped)
    recorded: bool = False  # thresholds read from the model's record (``read_record``), not observed here

    def scale(self, name: str, bits: int = 8, unsigned: bool = False, full_range: bool = False) -> float:
        """``T / (2**(bits-1) - 1)``, or ``T / (2**bits - 1)`` for unsigned codes; ``full_range``:
        ``T = max |x|`` (an int16 value needs no clipping: percentile and MSE clip for int8)."""
        t = self.absmax.get(name, self.thresholds[name]) if full_range else self.thresholds[name]
        return (t if t > 0 else 1.0) / ((1 << bits) - 1 if unsigned else qmax(bits))

    @classmethod
    def from_observers(cls, observers: dict[str, Observer], samples: int) -> "Calibration":
        method = next(iter(observers.values())).method if observers else ""
        nonneg = frozenset(n for n, o in observers.items() if o.count and o.minimum >= 0)
        return cls(method, samples, {n: o.threshold() for n, o in observers.items()}, nonneg,
                   {n: o.absmax for n, o in observers.items()})


def calibrate(mod, samples, method: str = "minmax", max_samples: int | None = None, which=None) -> Calibration:
    """``collect`` then reduce every observer to its threshold."""
    samples = list(samples)
    used = len(samples) if max_samples is None else min(max_samples, len(samples))
    return Calibration.from_observers(collect(mod, samples, which, method, max_samples), used)


def channel_absmax(mod, samples, names: Sequence[str], max_samples: int | None = None, func_name: str = "main") -> dict[str, np.ndarray]:
    """``max |x|`` per channel (the last axis) of each named float value over the samples (masking
    sentinels ``|x| >= 1e30`` skipped): the per-channel statistics of SmoothQuant."""
    import tvm

    from .core.host import flatten_outputs, host_vm

    samples = list(samples)[:max_samples] if max_samples is not None else list(samples)
    if not samples:
        raise InputError("calibration needs at least one sample")
    vm = host_vm(probe_module(mod, names, func_name))
    params = [p.name for p in mod[func_name].params]
    out: dict[str, np.ndarray] = {}
    for s in samples:
        args = [tvm.runtime.tensor(np.ascontiguousarray(s[p]), tvm.cpu()) for p in params]
        for n, v in zip(names, flatten_outputs(vm[func_name](*args))):
            a = np.abs(v.reshape(-1, v.shape[-1]).astype(np.float32))
            m = np.where(a < SENTINEL, a, 0).max(axis=0)
            out[n] = m if n not in out else np.maximum(out[n], m)
    return out


# ----------------------------------------------------------------------------- recorded thresholds
RECORD_KEY = "shiftc.activation_thresholds"  # ONNX metadata_props key (written by ``shiftc finetune --integer-only``)


def record_json(method: str, samples: int, thresholds: dict[str, float], nonnegative) -> str:
    """The record of frozen activation thresholds, keyed by ONNX tensor name (JSON; floats
    round-trip exactly)."""
    return json.dumps({"method": method, "samples": int(samples), "thresholds": {k: float(v) for k, v in thresholds.items()},
                       "nonnegative": sorted(nonnegative)}, sort_keys=True)


def read_record(props: dict[str, str], tensors: set[str]) -> tuple[str, int, dict[str, float], frozenset] | None:
    """``(method, samples, {tensor: threshold}, non-negative tensors)`` from a model's
    ``metadata_props`` (None without a record); ``InputError`` (one line) when the record is
    malformed or names a tensor that is not in the graph (``tensors``)."""
    if RECORD_KEY not in props:
        return None
    bad = f"metadata_props[{RECORD_KEY!r}] is malformed"
    try:
        rec = json.loads(props[RECORD_KEY])
        method, samples, th, nonneg = rec["method"], int(rec["samples"]), rec["thresholds"], rec["nonnegative"]
        th = {str(k): float(v) for k, v in th.items()}
        nonneg = frozenset(str(n) for n in nonneg)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"{bad}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if method not in OBSERVERS or not th or any(not (math.isfinite(t) and t >= 0) for t in th.values()):
        raise InputError(f"{bad}: needs a known method ({sorted(OBSERVERS)}) and finite thresholds >= 0")
    unknown = sorted((set(th) | nonneg) - set(tensors))
    if unknown:
        raise InputError(f"{bad}: it names tensor(s) not in the model: {', '.join(map(repr, unknown[:5]))}")
    return method, samples, th, nonneg
