"""The ``integerize`` pipeline stage: calibrate on the compile's samples, then run the rewrite.

Enabled by ``--integer-only``. Integer coverage is checked first (``integerize.coverage``, no
calibration needed): without ``--float-fallback`` an op with no integer form fails the compile
before calibration runs, naming every such op and its ONNX node. After calibration, linear
layers' biases may be corrected for the mean error of their integer codes (``int_bias``,
``--int-bias-correction weights|full``; off by default). Everything the rewrite chose (widths, exponent parameters, lambda
of every lambda-ShiftGELU, model changes such as nearest upsampling or L2-norm removal) and every
op left in float goes into the stage report; the pipeline measures the model's output error.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from tvm import relax

from shiftc import calibrate, evaluate, reference
from shiftc.core.errors import CheckFailedError, InputError
from shiftc.core.provenance import nodes_of, tensors_of
from shiftc.core.stage import Stage

from . import int_bias, operand_sensitivity
from . import integerize_precision as P
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


CNN_OBSERVER = "percentile"  # measured on MobileNetV2 (benchmarks/fidelity.py): clipping the rare large ReLU outputs pays
TRANSFORMER_OPS = ("relax.nn.softmax", "relax.nn.layer_norm", "relax.nn.gelu", "relax.nn.gelu_tanh")


def default_observer(mod, func_name: str = "main") -> str:
    """``--calibration-method auto``: minmax for a model with attention or normalisation ops (their
    few large activations carry the signal: percentile clipping loses MiniLM cosine), percentile
    for a convolutional net, minmax otherwise."""
    ops = {getattr(getattr(b.value, "op", None), "name", "") for blk in mod[func_name].body.blocks for b in blk.bindings}
    if ops & set(TRANSFORMER_OPS) or any(isinstance(getattr(b.value, "op", None), relax.GlobalVar)
                                         for blk in mod[func_name].body.blocks for b in blk.bindings):
        return "minmax"
    return CNN_OBSERVER if "relax.nn.conv2d" in ops else "minmax"


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
    calib = recorded_calibration(mod, ctx)
    if calib is None:
        method = default_observer(mod) if o.calibration_method == "auto" else o.calibration_method
        calib = calibrate.calibrate(mod, ctx.samples, method, o.calibration_samples)
    if not o.unsigned_activations:  # every activation (Shiftmax output included) signed int8
        calib = dataclasses.replace(calib, nonnegative=frozenset())
    bias_note = None
    if o.int_bias_correction != "off":
        used = ctx.samples if o.calibration_samples is None else list(ctx.samples)[:o.calibration_samples]
        inputs = o.int_bias_correction == "full"
        mod, done = int_bias.correct(mod, used, calib, pow2=o.requant == "pow2", inputs=inputs)
        what = "integer weight and input codes" if inputs else "int8 weight codes"
        bias_note = (f"bias correction: {done['layers']} conv/matmul bias(es) corrected by the mean error of their "
                     f"{what} on the calibration data (mean |delta| {done['mean_abs_delta']:.3g})")
    if o.gelu == "lambda":
        opts.lambdas = calibrate_lambdas(mod, ctx.samples, o.calibration_samples)
    lambdas = opts.lambdas
    opts.wide = mixed_precision(mod, calib, opts, ctx)
    new, rep = integerize(mod, calib, opts)
    sr = ctx.report
    sr.summary.update({
        "calibration": (f"recorded in the model: {calib.method} on {calib.samples} sample(s)" if calib.recorded else
                        f"{calib.method} on {calib.samples} sample(s)" + (" (auto)" if o.calibration_method == "auto" else "")),
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
    if bias_note:
        sr.notes.append(bias_note)
    sr.notes.extend(rep.notes)
    return new


def recorded_calibration(mod, ctx) -> calibrate.Calibration | None:
    """The activation thresholds the model records (``shiftc finetune --integer-only`` froze them
    for its integer fake-quantisation; ``calibrate.read_record``), mapped from ONNX tensor names
    to the Relax values holding those tensors (``core.provenance.tensors_of``); None without a
    record. The compile's own samples then calibrate nothing (the stage report says so)."""
    proto = ctx.loaded.proto
    graph = proto.graph
    known = {i.name for i in graph.input} | {o for n in graph.node for o in n.output}
    rec = calibrate.read_record({p.key: p.value for p in proto.metadata_props}, known)
    if rec is None:
        return None
    method, samples, thresholds, nonneg = rec
    tensors = tensors_of(mod)
    calib = calibrate.Calibration(method, samples, {v: thresholds[t] for v, t in tensors.items() if t in thresholds},
                                  frozenset(v for v, t in tensors.items() if t in nonneg), recorded=True)
    ctx.report.notes.append(f"activation thresholds: the {len(thresholds)} recorded in the model ({method} on {samples} "
                            "sample(s), frozen by shiftc finetune --integer-only); the calibration data is not used for them")
    changed = _unlike_finetune(ctx.options)
    if changed:
        ctx.report.notes.append(f"warning: integer-only fine-tuning simulated the default options, not {', '.join(changed)}: "
                                "this build does not reproduce the fine-tuned model bit for bit")
    return calib


def _unlike_finetune(o) -> list[str]:
    """The options set away from the integer program ``shiftc finetune --integer-only`` simulates."""
    changed = {"--requant pow2": o.requant != "dyadic", "--int16-layers": bool(o.int16_layers),
               "--accuracy-budget": o.accuracy_budget is not None, "--int-bias-correction": o.int_bias_correction != "off",
               "--no-unsigned-activations": not o.unsigned_activations, "--smooth-quant": o.smooth_quant is not None}
    return [flag for flag, on in changed.items() if on]


def mixed_precision(mod, calib, opts: IntOptions, ctx) -> frozenset:
    """The operands carried at int16 (``integerize_precision``): ``--int16-layers`` by name, plus
    the most sensitive ones that ``--accuracy-budget`` needs; recorded in the stage report."""
    o, sr = ctx.options, ctx.report
    layers = P.operands(mod)
    wide = P.by_pattern(layers, o.int16_layers, _layer_nodes(mod, ctx.loaded))
    if o.int16_layers and not wide:
        raise InputError(f"--int16-layers {o.int16_layers!r} matches no matmul / conv")
    if o.accuracy_budget is not None:
        wide = wide | _budgeted(mod, calib, opts, ctx, layers, wide)
    if wide:
        chosen = sorted(k for k, names in layers.items() if set(names) & wide)
        sr.summary["int16_operands"] = {"count": len(wide), "layers": chosen}
        sr.notes.append(f"mixed precision: {len(chosen)} layer(s) read int16 operands: {', '.join(chosen[:12])}"
                        + (" ..." if len(chosen) > 12 else ""))
    return wide


def _layer_nodes(mod, loaded) -> dict:
    """Value name -> ONNX node, with the graph's result (which passes may have renamed ``gv``)
    attributed to the node of the model's single output."""
    table = nodes_of(mod)
    result = mod["main"].body.body
    outs = [o.name for o in getattr(loaded, "outputs", [])]
    if len(outs) == 1 and outs[0] in table and hasattr(result, "name") and result.name not in table:
        table[result.name] = table[outs[0]]
    return table


def _budgeted(mod, calib, opts: IntOptions, ctx, layers, fixed: frozenset) -> frozenset:
    """The fewest most-sensitive operands to widen for ``--accuracy-budget`` (on held-back samples)."""
    o = ctx.options
    samples = list(ctx.samples)[: o.calibration_samples] if o.calibration_samples else list(ctx.samples)
    if len(samples) < 2:
        raise InputError(f"--accuracy-budget needs at least 2 calibration samples (half are held back to check); got {len(samples)}")
    held = samples[len(samples) - len(samples) // 2:]
    names = sorted({n for ns in layers.values() for n in ns} - fixed)
    normalise = opts.l2norm == "remove"
    sens = operand_sensitivity.measure(mod, names, calib, samples, lambda r, g: P.output_error(r, g, normalise),
                                       pow2=opts.requant == "pow2")
    order = P.ranked(sens)
    reference = evaluate.relax_outputs(mod, ctx.loaded.inputs, held)

    def error_of(extra):
        new, _ = integerize(mod, calib, dataclasses.replace(opts, wide=fixed | extra))
        got = evaluate.relax_outputs(new, ctx.loaded.inputs, held)
        return P.output_error(reference, [g[: len(r)] for g, r in zip(got, reference)], normalise)

    wide, trials, met = P.choose(order, o.accuracy_budget, error_of)
    ctx.report.summary["budget"] = {"budget": o.accuracy_budget, "held_back_samples": len(held), "tries": trials, "met": met,
                                    "measured_against": "the float model" + (" (rows L2-normalised: --l2norm remove)" if opts.l2norm == "remove" else "")}
    if not met:
        msg = (f"--accuracy-budget {o.accuracy_budget:g} not met with every matmul / conv operand at int16: "
               f"rel-L2 {trials[-1]['rel_l2']:.4g} on {len(held)} held-back calibration sample(s)")
        if not o.budget_best_effort:
            raise CheckFailedError(msg + "; give a larger budget or --budget-best-effort to keep this build")
        ctx.report.notes.append(msg + " (--budget-best-effort: the build is kept)")
    return wide


STAGE = Stage("integerize", lambda o: o.integer_only, apply, lossy=True)
