"""The ``integerize`` pipeline stage: calibrate on the compile's samples, then run the rewrite.

Enabled by ``--integer-only``. Integer coverage is checked first (``integerize.coverage``, no
calibration needed): without ``--float-fallback`` an op with no integer form fails the compile
before calibration runs, naming every such op and its ONNX node. Everything the rewrite chose (widths, exponent parameters, lambda
of every lambda-ShiftGELU, model changes such as nearest upsampling or L2-norm removal) and every
op left in float goes into the stage report; the pipeline measures the model's output error.
"""

from __future__ import annotations

from collections import Counter

from shiftc import calibrate, reference
from shiftc.core.errors import InputError
from shiftc.core.stage import Stage

from .graph import unique_value_names
from .integerize import ACT_BITS, WIDE_BITS, IntOptions, coverage, integerize, unsupported_error


def gelu_inputs(mod, func_name: str = "main") -> list[str]:
    """Names of the values that feed ``nn.gelu`` / ``nn.gelu_tanh`` in ``main``."""
    names = []
    for block in mod[func_name].body.blocks:
        for b in block.bindings:
            v = b.value
            if getattr(getattr(v, "op", None), "name", "") in ("relax.nn.gelu", "relax.nn.gelu_tanh"):
                names.append(v.args[0].name)
    return names


def calibrate_lambdas(mod, samples, max_samples=None) -> dict:
    """Per-layer lambda of lambda-ShiftGELU from the GELU inputs seen on the samples."""
    names = gelu_inputs(mod)
    if not names:
        return {}
    obs = calibrate.collect(mod, samples, names, "percentile", max_samples)
    return {n: reference.calibrate_lambda(o.values()) for n, o in obs.items()}


def apply(mod, ctx):
    o = ctx.options
    if o.calibration_samples is not None and o.calibration_samples < 1:
        raise InputError(f"--calibration-samples must be >= 1, got {o.calibration_samples}")
    mod = unique_value_names(mod)  # calibration addresses values by name
    opts = IntOptions(gelu=o.gelu, upsample=o.upsample, l2norm=o.l2norm, requant=o.requant,
                      float_fallback=o.float_fallback)
    uncovered = coverage(mod, opts)  # fail before calibration, which can take minutes
    if uncovered and not o.float_fallback:
        raise unsupported_error(uncovered)
    calib = calibrate.calibrate(mod, ctx.samples, o.calibration_method, o.calibration_samples)
    if o.gelu == "lambda":
        opts.lambdas = calibrate_lambdas(mod, ctx.samples, o.calibration_samples)
    lambdas = opts.lambdas
    new, rep = integerize(mod, calib, opts)
    sr = ctx.report
    sr.summary.update({
        "calibration": f"{calib.method} on {calib.samples} sample(s)",
        "integer_ops": dict(Counter(r["op"] for r in rep.rows)),
        "float_ops": len(rep.float_ops),
        "requant": o.requant,
        "widths": f"int{ACT_BITS} matmul/conv operands, int{WIDE_BITS} residual sums and non-linear inputs, int32 accumulators",
    })
    sr.rows.extend(rep.rows)
    for f in rep.float_ops:
        where = f"ONNX node {f['node']!r} ({f['onnx_op']})" if f.get("node") else f["value"]
        sr.notes.append(f"stays float (--float-fallback): {f['op']} at {where}: no integer form in shiftc")
    for n, t in lambdas.items():
        sr.notes.append(f"lambda-ShiftGELU at {n}: lambda = {reference.lam_value(t)} = {t}")
    if any(r["op"] == "nearest_upsample" and r.get("replaces") for r in rep.rows):
        sr.notes.append("model changed: bilinear resize replaced by nearest upsampling (--upsample nearest)")
    if any(r["op"] == "l2_normalize removed" for r in rep.rows):
        sr.notes.append("model changed: L2 normalisation removed (--l2norm remove)")
    sr.notes.extend(rep.notes)
    return new


STAGE = Stage("integerize", lambda o: o.integer_only, apply, lossy=True)
