"""What ``shiftc bench`` times: each artifact at the batch it was compiled for, and (``--against
onnxruntime``) onnxruntime FP32 and int8 on the artifact's source ONNX at the same input shapes.

An artifact records its source model's name and sha256 (``meta.json`` ``sources.model``), not the
model itself, so comparing needs the ONNX file (``--onnx``); its sha256 must match the record.
onnxruntime int8 is ``quantize_static`` (QDQ, per-channel s8 weights, s8 activations) calibrated
on the given samples; without calibration samples it is skipped, and the notes say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shiftc import artifact, calibration_data, frontend
from shiftc.core.errors import InputError
from shiftc.frontend import TensorSpec

from .driver import Variant


def _batch(meta: dict) -> int:
    shape = meta["inputs"][0]["shape"]
    return shape[0] if shape else 1


def _group_by_batch(artifacts: list[Path], batches: list[int] | None) -> dict[int, list[tuple[Path, dict]]]:
    """Verified artifacts by the batch they were compiled for; every requested batch must have one."""
    groups: dict[int, list[tuple[Path, dict]]] = {}
    for path in artifacts:
        meta = artifact.verify(Path(path))
        groups.setdefault(_batch(meta), []).append((Path(path), meta))
    for b in batches or []:
        if b not in groups:
            have = ", ".join(f"{p} is batch {k}" for k, items in groups.items() for p, _ in items)
            raise InputError(f"no artifact for batch {b} ({have}); an artifact runs the batch it was compiled for: "
                             f"compile one with --input-shape NAME={b}x... and pass it too")
    return {b: groups[b] for b in sorted(groups) if not batches or b in batches}


def _check_source(onnx_path: Path, items: list[tuple[Path, dict]]) -> None:
    """The ONNX file is the one the artifacts were compiled from (sha256 in meta.json)."""
    digest = artifact.sha256(onnx_path)
    for path, meta in items:
        want = (meta.get("sources") or {}).get("model") or {}
        if want.get("sha256") and want["sha256"] != digest:
            raise InputError(f"--onnx {onnx_path} is not the model {path} was compiled from "
                             f"(meta.json records {want.get('name')!r} with sha256 {want['sha256'][:12]}...)")


def pinned_onnx(onnx_path: Path, specs: list[TensorSpec], out: Path) -> Path:
    """The source model with its inputs pinned to the artifact's shapes, as shiftc compiled it."""
    import onnx

    proto = frontend.pin_shapes(frontend.read_model(onnx_path), {s.name: tuple(s.shape) for s in specs})
    onnx.save(proto, str(out))
    return out


def ort_quantize(src: Path, out: Path, samples: list[dict], activation: str = "s8") -> Path:
    """onnxruntime ``quantize_static`` of ``src`` into ``out``: QDQ, per-channel s8 weights, MinMax
    calibration on ``samples``; activations ``u8``, ``s8`` or ``s8sym`` (symmetric s8)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(samples)

        def get_next(self):
            return next(self.samples, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": activation == "s8sym"})
    return out


def ort_int8(fp32: Path, samples: list[dict], out: Path) -> tuple[Path, str]:
    """onnxruntime int8 (``ort_quantize``, s8 activations); the note says how it was made
    (``quant_pre_process`` is tried first; when it fails the note says so)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    note = f"QDQ per-channel s8s8, {len(samples)} calibration samples"
    pre = out.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - optional optimisation; quantise the model itself and say so
        pre, note = fp32, note + f"; quant_pre_process failed ({type(exc).__name__}), quantised without it"
    return ort_quantize(pre, out, samples), note


def inputs_file(specs: list[TensorSpec], out: Path, given: Path | None = None) -> Path:
    """The timed inputs as an .npz keyed by input name: ``given`` (.npy/.npz, checked against the
    specs) or one synthetic sample (``calibration_data.synthetic``)."""
    if given is not None:
        feeds = calibration_data.from_arrays(calibration_data.read_arrays(given, specs), specs)[0]
    else:
        feeds = calibration_data.synthetic(specs, n=1)[0]
    np.savez(out, **feeds)
    return out


def _names(items: list[tuple[Path, dict]]) -> list[str]:
    short = [p.name for p, _ in items]
    return short if len(set(short)) == len(short) else [str(p) for p, _ in items]


def artifact_variants(artifacts: list[Path], workdir: Path, *, batches: list[int] | None = None, against=(),
                      onnx: Path | None = None, calibrate: Path | None = None,
                      inputs: Path | None = None) -> tuple[dict[int, list[Variant]], list[str]]:
    """The variants of ``shiftc bench``, by batch (each batch is one set of rounds), and notes on
    what was skipped. ``against``: runtimes to compare with (``onnxruntime``)."""
    unknown = set(against) - {"onnxruntime"}
    if unknown:
        raise InputError(f"--against {sorted(unknown)[0]!r}: shiftc bench compares with onnxruntime")
    if against and onnx is None:
        raise InputError("--against onnxruntime needs the source model: an artifact records only its name and "
                         "sha256 (meta.json sources.model); pass it with --onnx PATH")
    groups, notes, out = _group_by_batch(artifacts, batches), [], {}
    for batch, items in groups.items():
        specs = [TensorSpec.from_json(d) for d in items[0][1]["inputs"]]
        if any([TensorSpec.from_json(d) for d in meta["inputs"]] != specs for _, meta in items):
            raise InputError(f"the batch-{batch} artifacts take different inputs; benchmark them separately")
        feeds = inputs_file(specs, workdir / f"inputs_b{batch}.npz", inputs)
        rows = [Variant(name, "shiftc", p, feeds, batch, note=_describe(meta)) for name, (p, meta) in zip(_names(items), items)]
        if against:
            _check_source(onnx, items)
            fp32 = pinned_onnx(onnx, specs, workdir / f"fp32_b{batch}.onnx")
            rows.append(Variant("onnxruntime fp32", "onnxruntime", fp32, feeds, batch))
            if calibrate is None:
                notes.append("onnxruntime int8 skipped: it needs calibration samples (--calibrate)")
            else:
                q, note = ort_int8(fp32, calibration_data.load(calibrate, specs), workdir / f"int8_b{batch}.onnx")
                rows.append(Variant("onnxruntime int8", "onnxruntime", q, feeds, batch, note=note))
        out[batch] = rows
    return out, notes


def _describe(meta: dict) -> str:
    """The artifact's target and the pass options it was compiled with (those not at their default)."""
    from shiftc.core.options import PassOptions

    target, default = meta["target"], PassOptions().to_json()
    opts = ", ".join(f"{k}={v}" for k, v in sorted((meta.get("options") or {}).items()) if default.get(k, v) != v)
    cpu = (target.get("options") or {}).get("cpu")
    return f"{target['name']}{f' ({cpu})' if cpu else ''}" + (f"; {opts}" if opts else "")
