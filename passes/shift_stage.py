"""The ``shift`` pipeline stage: choose per-layer codes, rewrite, and report what it cost.

Uniform mode (``--shift-bits b``): every candidate layer not skipped gets ``b`` bits and
``--shift-terms`` terms.

Automatic allocation (``--accuracy-budget B``), measured, not assumed:

1. every candidate layer is encoded with each rung of ``LADDER`` (cheapest first, in stored bits
   per weight: 3b, 4b, 5b, 3b x2, 4b x2, 5b x2, 5b x3) and its *local* output error
   ``||op(x, W_enc) - op(x, W)|| / ||op(x, W)||`` is measured on the real activations ``x`` that
   reach it on the calibration samples (its sensitivity);
2. a threshold ``tau`` gives each layer the cheapest rung whose local error is <= ``tau``
   (the most accurate rung where none is);
3. ``tau`` is bisected over the measured local errors for the largest value whose *whole-model*
   output error (relative L2 vs FP32 over the calibration samples, the model built once with
   weights as parameters) is <= ``B``.  About ``log2(layers * rungs)`` model runs.
   If even the most accurate rung everywhere misses ``B``, that plan is used and the report says
   the budget was not met;
4. refinement: layers in decreasing weight count step down one rung at a time while the measured
   model error stays within ``B`` (one model run per step).

Rounding (``--shift-rounding``): every encoding below, fixed plan or allocation rung, rounds the
weights to their nearest codes, or with ``gptq`` through ``shift_gptq`` (each layer's ``H`` from its
inputs on every calibration sample not held back), so the allocations measure the codes the build
gets.

Size budget (``--max-bits-per-weight B``): ``shift_bits`` chooses per layer between power-of-two
codes and int8 weights kept as a multiply, for the least measured error within ``B`` stored bits
per weight (its docstring). With ``--accuracy-budget`` as well, the held-back check below applies
to that plan.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tvm import relax

from shiftc.core.errors import CheckFailedError, InputError
from shiftc.core.stage import Stage

from . import shift as S
from . import shift_bias as SB
from . import shift_bits as SBITS
from . import shift_gptq as SG
from . import shift_measure as M
from . import shift_reconstruct as SRC
from . import shift_recorded as SR

log = logging.getLogger(__name__)

LADDER = [(3, 1), (4, 1), (5, 1), (3, 2), (4, 2), (5, 2), (5, 3)]
MEASURE_SAMPLES = 4  # calibration samples used for per-layer errors and the allocation search
BIAS_SAMPLES = 16  # at most this many calibration samples measure the bias correction (layers + 2 host runs each)


def _validate(o) -> bool:
    if o.shift_zero not in ("free", "with-zero"):
        raise InputError(f"--shift-zero must be 'free' or 'with-zero', got {o.shift_zero!r}")
    uniform = o.shift_grid == "uniform"
    allowed = (3, 4, 5, 6) if uniform else (3, 4, 5)
    if o.shift_bits is not None and o.shift_bits not in allowed:
        raise InputError(f"--shift-bits must be {', '.join(map(str, allowed[:-1]))} or {allowed[-1]}{' with --shift-grid uniform' if uniform else ''}, got {o.shift_bits}")
    fixed = o.max_bits_per_weight is None and o.accuracy_budget is None
    if uniform and fixed and (o.shift_bits is None or o.shift_terms != 1 or o.shift_zero != "free"):
        raise InputError("--shift-grid uniform needs --shift-bits and takes no --shift-terms or --shift-zero (its terms are the level's signed digits, zero included)")
    if not 1 <= int(o.shift_terms) <= 3:
        raise InputError(f"--shift-terms must be 1, 2 or 3, got {o.shift_terms}")
    if o.max_bits_per_weight is not None and not o.max_bits_per_weight > 0:
        raise InputError(f"--max-bits-per-weight must be > 0, got {o.max_bits_per_weight}")
    if o.shift_rounding not in ("nearest", "gptq"):
        raise InputError(f"--shift-rounding must be 'nearest' or 'gptq', got {o.shift_rounding!r}")
    if o.shift_rounding == "gptq" and o.shift_reconstruct:
        raise InputError("--shift-rounding gptq and --shift-reconstruct are two ways to choose the codes: give one")
    if o.accuracy_budget is not None and not o.accuracy_budget > 0:
        raise InputError(f"--accuracy-budget must be > 0 (a relative L2 error), got {o.accuracy_budget}")
    return o.shift_zero == "free"


def allocate(layers, active, inputs, zero_free, budget, evaluator, notes, encode=S.encode) -> tuple[dict, dict, float]:
    """The greedy threshold search of the module docstring: returns ``(plan, local_errors,
    model error of the plan on the evaluator's samples)``; ``encode(layer, cfg)`` rounds."""
    rungs = [S.ShiftConfig(b, t, zero_free) for b, t in LADDER]
    errors: dict[str, list[float]] = {}
    decoded: dict[str, list[np.ndarray]] = {}
    for i, layer in enumerate(layers):
        if layer.name not in active:
            continue
        decoded[layer.name] = [S.decoded_weight(layer, *encode(layer, c)) for c in rungs]
        errors[layer.name] = M.layer_output_error(layer, [s[i] for s in inputs], decoded[layer.name])

    def plan_for(tau):
        return {n: next((j for j, e in enumerate(errs) if e <= tau), len(rungs) - 1) for n, errs in errors.items()}

    fp32 = [layer.weight for layer in layers]
    ref = evaluator.run(fp32)

    def model_error(choice):
        return M.rel_l2(ref, evaluator.run([decoded[l.name][choice[l.name]] if l.name in choice else l.weight for l in layers]))

    taus = sorted({0.0, *[e for errs in errors.values() for e in errs]})
    lo, hi = 0, len(taus) - 1  # invariant: taus[lo] meets the budget (checked below)
    best = plan_for(taus[0])
    err0 = model_error(best)
    evals = 1
    if err0 > budget:
        notes.append(f"accuracy budget {budget:g} not met: the most accurate rungs give model rel-L2 {err0:.4g}")
        return {n: rungs[j] for n, j in best.items()}, errors, err0
    top = plan_for(taus[hi])
    err_top = model_error(top)
    evals += 1
    if err_top <= budget:
        lo, best, err0 = hi, top, err_top
    while hi - lo > 1:
        mid = (lo + hi) // 2
        cand = plan_for(taus[mid])
        err = model_error(cand)
        evals += 1
        if err <= budget:
            lo, best, err0 = mid, cand, err
        else:
            hi = mid
    tau_evals = evals
    # refinement: largest layers first, step down one rung while the model stays within budget
    by_size = sorted(best, key=lambda n: -next(l.weight.size for l in layers if l.name == n))
    for name in by_size:
        while best[name] > 0:
            cand = dict(best, **{name: best[name] - 1})
            err = model_error(cand)
            evals += 1
            if err > budget:
                break
            best, err0 = cand, err
    notes.append(
        f"auto allocation: tau={taus[lo]:.4g} (largest local layer error allowed; {tau_evals} model runs), then "
        f"per-layer step-down; model rel-L2 {err0:.4g} <= budget {budget:g} on its {len(ref)} allocation sample(s) "
        f"(before bias correction), {evals} model evaluations"
    )
    return {n: rungs[j] for n, j in best.items()}, errors, err0


def _bits_plan(o, mod, layers, active, zero_free, inputs, names, samples, summary, notes, encode) -> tuple[dict, dict]:
    """The plan and encodings chosen under ``--max-bits-per-weight`` (``shift_bits``), recorded in
    the report."""
    if o.shift_bits is not None or o.shift_terms != 1 or o.shift_grid != "pot":
        notes.append("--max-bits-per-weight chooses bits, terms, grid and int8 per layer; --shift-bits/--shift-terms/--shift-grid are ignored")
    evaluator = M.ModelWithWeightParams(mod, names, samples)
    plan, encoded, info = SBITS.allocate_bits(layers, set(active), inputs, zero_free, o.max_bits_per_weight,
                                              bool(o.shift_bias_correction), evaluator, encode)
    summary["bit_allocation"] = info
    measured = [r for r in info["pareto"] if "measured_rel_l2" in r]
    notes.append(
        f"bit allocation: {info['bits_per_weight']:.3f} of at most {o.max_bits_per_weight:g} stored bits per weight "
        f"({info['stored_bits']} of {info['budget_bits']} bits), primitives {info['primitives']}; greedy over "
        f"{len(info['pareto'])} step(s), model rel-L2 on {len(samples)} allocation sample(s) (before bias correction) "
        + ", ".join(f"{r['bits_per_weight']:.2f} b/w: {r['measured_rel_l2']:.4g}" for r in measured)
    )
    if o.integer_only:
        kept = sorted(n for n, c in plan.items() if isinstance(c, S.Int8Config))
        if kept:
            notes.append(f"int8 layers left to the integer pass (its own int8 codes): {', '.join(kept)}")
    return plan, encoded


def _plan(o, mod, layers, active, zero_free, inputs, names, samples, notes, encode) -> tuple[dict, float | None]:
    """The per-layer codes: one config from the options for every layer, or allocated under the accuracy budget
    (then also the plan's model error on the allocation samples)."""
    if o.accuracy_budget is None:
        if o.shift_grid == "uniform":
            return {n: S.uniform_config(o.shift_bits) for n in active}, None
        return {n: S.ShiftConfig(o.shift_bits, int(o.shift_terms), zero_free) for n in active}, None
    if o.shift_bits is not None or o.shift_terms != 1 or o.shift_grid != "pot":
        notes.append("--accuracy-budget chooses power-of-two bits and terms per layer; --shift-bits/--shift-terms/--shift-grid are ignored")
    evaluator = M.ModelWithWeightParams(mod, names, samples)
    plan, _, err = allocate(layers, set(active), inputs, zero_free, o.accuracy_budget, evaluator, notes, encode)
    return plan, err


def split_samples(samples: list, budget: bool) -> tuple[list[int], list[int]]:
    """Indices of the samples the stage fits on (allocation, bias correction) and of those held
    back for the budget check (the last half; none without a budget)."""
    n = len(samples)
    if not budget:
        return list(range(min(n, BIAS_SAMPLES))), []
    if n < 2:
        raise InputError(f"--accuracy-budget needs at least 2 calibration samples (one to allocate on, one held back to check); got {n}")
    held = n // 2
    return list(range(min(n - held, BIAS_SAMPLES))), list(range(n - held, n))


def check_budget(o, model, decoded, bias, held, fit_error, summary, notes) -> None:
    """The whole-model error of the final build (codes and bias correction) on the held-back
    samples against ``--accuracy-budget``: recorded; not met raises ``CheckFailedError`` unless
    ``--budget-best-effort``."""
    corr = SB.as_corrections(model, bias)
    ref = model.outputs([layer.weight for layer in model.layers], model.zero_corrections(), held)
    got = model.outputs([decoded.get(layer.name, layer.weight) for layer in model.layers], corr, held)
    err = M.rel_l2(ref, got)
    met = err <= o.accuracy_budget
    summary["budget"] = {"budget": o.accuracy_budget, "held_back_samples": len(held), "held_back_rel_l2": round(err, 6),
                         "allocation_rel_l2": round(fit_error, 6) if fit_error is not None else None, "met": met,
                         "best_effort": bool(o.budget_best_effort)}
    if met:
        notes.append(f"accuracy budget {o.accuracy_budget:g} met on {len(held)} held-back calibration sample(s): model rel-L2 {err:.4g}")
        return
    msg = f"--accuracy-budget {o.accuracy_budget:g} not met: model rel-L2 {err:.4g} on {len(held)} held-back calibration sample(s)"
    if not o.budget_best_effort:
        raise CheckFailedError(msg + "; give a larger budget, more calibration samples, or --budget-best-effort to keep this build")
    notes.append(msg + " (--budget-best-effort: the build is kept)")


INT8_FORM = "int8 weights, float multiply (kept by the bit allocation)"


def _rows(layers, plan, encoded, inputs, bias) -> list[dict]:
    """One report row per candidate layer: its codes, what it stores and its measured weight /
    output error."""
    rows = []
    for i, layer in enumerate(layers):
        cfg = plan.get(layer.name)
        row = {"layer": layer.name, "op": layer.op, "weight_shape": list(layer.weight.shape), "macs": layer.macs}
        fp32_bias = 0 if layer.epilogue.bias is None else layer.epilogue.bias.nbytes
        if cfg is None:
            rows.append(dict(row, bits=None, terms=None, shift_adds=0, weight_rel_l2=0.0, output_rel_l2=0.0, kernel="fp32 (skipped)"))
            continue
        codes, alpha = encoded[layer.name]
        int8 = isinstance(cfg, S.Int8Config)
        wd = S.decoded_weight(layer, codes, alpha)
        w_err = float(np.linalg.norm(wd - layer.weight) / (np.linalg.norm(layer.weight) + 1e-30))
        out_err = M.layer_output_error(layer, [s[i] for s in inputs], [wd])[0]
        kernel_bias = S.kernel_bias(layer, bias.get(layer.name))
        stored = {"code_bytes": S.pack(codes, cfg).nbytes, "alpha_bytes": alpha.astype(np.float32).nbytes,
                  "bias_bytes": 0 if kernel_bias is None else kernel_bias.nbytes}
        rows.append(dict(
            row, bits=cfg.bits, terms=cfg.terms, zero=None if int8 else "free" if cfg.zero_free else "with-zero",
            grid="int8" if int8 else "uniform" if cfg.uniform else "power-of-two",
            shift_adds=layer.macs * cfg.terms, weight_rel_l2=_digits(w_err), output_rel_l2=_digits(out_err),
            bias_corrected=layer.name in bias, **stored, packed_bytes=sum(stored.values()),
            fp32_bytes=layer.weight.nbytes + fp32_bias, kernel=INT8_FORM if int8 else S.KERNEL_FORM,
        ))
    return rows


def _digits(v: float, n: int = 7) -> float:
    """``v`` to ``n`` significant digits: the report's errors then do not change with the last bits
    a BLAS thread count leaves in a sum (meta.json is reproducible)."""
    return float(f"{v:.{n}g}")


def _summary(layers, rows) -> dict:
    """Sizes of the rewritten layers: everything the kernels store (codes, alpha, bias) against
    the FP32 weights and biases they replace."""
    coded = [(layer, row) for layer, row in zip(layers, rows) if row["bits"] is not None]
    fp32_bytes = sum(row["fp32_bytes"] for _, row in coded)
    packed_bytes = sum(row["packed_bytes"] for _, row in coded)
    code_bytes = sum(row["code_bytes"] for _, row in coded)
    weights = sum(layer.weight.size for layer, _ in coded)
    return {
        "macs_total": sum(layer.macs for layer in layers),
        "macs_to_shift_add": sum(row["macs"] for _, row in coded),
        "bits_per_weight": round(8 * packed_bytes / weights, 3) if weights else None,
        "code_bits_per_weight": round(8 * code_bytes / weights, 3) if weights else None,
        "packed_weight_bytes": packed_bytes,
        "fp32_weight_bytes": fp32_bytes,
        "weight_compression": round(fp32_bytes / packed_bytes, 2) if packed_bytes else None,
    }


def _layers_and_active(mod, o):
    layers = S.find_layers(mod)
    try:
        skip = S.skipped(layers, o.shift_skip)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return layers, skip, [layer.name for layer in layers if layer.name not in skip]


def _correct_and_check(o, mod, layers, plan, encoded, names, samples, fit, held, fit_error, summary, notes, fitted=None) -> dict:
    """Bias correction on the ``fit`` samples (if on; ``fitted``: already fitted by the
    reconstruction), then the budget check on the ``held`` ones (if any); returns the bias
    correction per layer name."""
    if not o.shift_bias_correction and not held:
        notes.append("bias correction off (--no-shift-bias-correction)")
        return {}
    if fitted is not None and not held:
        return fitted
    model = SB.ShiftedModel(mod, layers, names, samples)
    decoded = {n: S.decoded_weight(next(l for l in layers if l.name == n), *encoded[n]) for n in plan}
    bias = fitted or {}
    if o.shift_bias_correction and fitted is None:
        bias, info = SB.corrections(model, decoded, fit)
        summary["bias_correction"] = info
        notes.append(
            f"bias correction: every shifted layer's bias minus its mean output error per channel, measured on {len(fit)} "
            f"calibration sample(s) ({info['model_runs']} model runs, one layer after the other); mean |channel mean error| / channel RMS "
            f"{info['mean_shift_before']:.4g} -> {info['mean_shift_after']:.4g}"
        )
    if held:
        check_budget(o, model, decoded, bias, held, fit_error, summary, notes)
    return bias


def _finetuned(ctx, layers, notes) -> tuple[dict, set]:
    """The layers with codes recorded by ``shiftc finetune`` and those it kept as multiplications
    (``shift_recorded``)."""
    props = {p.key: p.value for p in ctx.loaded.proto.metadata_props}
    try:
        tuned, keep, found_notes = SR.recorded(layers, props)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    notes.extend(found_notes)
    return tuned, keep


def apply(mod, ctx):
    """Pipeline stage (lossy): choose the codes of every layer, correct their biases, check the
    accuracy budget on held-back samples, report what it all cost and stores, rewrite."""
    o = ctx.options
    zero_free = _validate(o)
    report = ctx.report
    mod = relax.transform.FoldConstant()(mod)
    layers, skip, active = _layers_and_active(mod, o)
    if not layers:
        report.notes.append("no conv2d/matmul with constant float32 weights: nothing rewritten")
        return mod
    names = [s.name for s in ctx.loaded.inputs]
    samples = list(ctx.samples)
    fit, held = split_samples(samples, o.accuracy_budget is not None)
    measured = [samples[i] for i in fit[:MEASURE_SAMPLES]]
    t0 = time.perf_counter()
    inputs = M.capture_inputs(mod, names, measured)
    tuned, keep = _finetuned(ctx, layers, report.notes)
    active = [n for n in active if n not in keep]
    skip |= keep
    todo = [n for n in active if n not in tuned]
    encode = _encoder(o, mod, layers, todo, names, [s for i, s in enumerate(samples) if i not in set(held)], report.notes)
    if o.max_bits_per_weight is not None:
        fit_error = None
        plan, encoded = _bits_plan(o, mod, layers, todo, zero_free, inputs, names, measured, report.summary, report.notes, encode)
    else:
        plan, fit_error = _plan(o, mod, layers, todo, zero_free, inputs, names, measured, report.notes, encode)
        encoded = {n: encode(next(l for l in layers if l.name == n), cfg) for n, cfg in plan.items()}
    # --integer-only: int8 layers stay float ops here; the integer pass gives them int8 codes
    left = {n for n, c in plan.items() if isinstance(c, S.Int8Config)} if o.integer_only else set()
    plan.update({n: tuned[n][0] for n in active if n in tuned})
    encoded.update({n: tuned[n][1:] for n in active if n in tuned})
    summary = report.summary
    rewritten = {n: c for n, c in plan.items() if n not in left}
    fresh = {n: c for n, c in rewritten.items() if n not in tuned}  # fine-tuned codes are kept as trained
    recon = SRC.stage_step(o, mod, layers, fresh, names, [samples[i] for i in fit], summary, report.notes, _int8_weights(layers, fresh, encoded))
    if recon is not None:
        encoded.update(recon.encoded)
    bias = {}
    if fresh or held:  # fine-tuned layers get no bias correction: training accounted for their error
        bias = _correct_and_check(o, mod, layers, rewritten, encoded, names, samples, fit, held, fit_error, summary, report.notes,
                                  recon.bias if recon is not None else None)
        bias = {n: b for n, b in bias.items() if n not in tuned}
    rows = _rows(layers, plan, encoded, inputs, bias)
    for row in rows:
        if row["layer"] in left:
            row["kernel"] = "int8 (left to the integer pass)"
    report.rows.extend(rows)
    summary.update({"layers": len(layers), "rewritten": len(plan), "skipped": sorted(skip), **_summary(layers, rows),
                    "measured_on_samples": len(measured), "mode": _mode(o)})
    # a wall-clock time is no part of the report (meta.json must not change between identical compiles);
    # the whole stage's time is in CompiledModel.timings_s
    log.info("shift: measured %d layer(s) on %d sample(s) in %.2fs", len(active), len(samples), time.perf_counter() - t0)
    report.notes.append(
        "output_rel_l2: each layer's op output with encoded vs FP32 weights (no bias) on the real activations "
        f"reaching it for {len(measured)} calibration samples (FP32 host run of the model)"
    )
    return S.RewriteShiftLayers(rewritten, encoded, bias)(mod)


def _encoder(o, mod, layers, todo, names, fit_samples, notes) -> SG.Encoder:
    """``shift.encode`` (nearest) or GPTQ rounding from the layer inputs on ``fit_samples`` (every
    calibration sample not held back: one host run each, so not capped like the bias correction)."""
    if o.shift_rounding == "nearest":
        return S.encode
    hessians = SG.second_moments(layers, set(todo), M.each_sample_inputs(mod, names, fit_samples))
    notes.append(f"gptq rounding: {len(hessians)} layer(s), H from their inputs on {len(fit_samples)} calibration sample(s)")
    return SG.encoder(hessians)


def _mode(o) -> str:
    return "max-bits" if o.max_bits_per_weight is not None else "auto" if o.accuracy_budget is not None else "fixed"


def _int8_weights(layers, plan, encoded) -> dict:
    """The decoded weights of the plan's int8 layers (reconstruction keeps them fixed)."""
    return {layer.name: S.decoded_weight(layer, *encoded[layer.name]) for layer in layers
            if isinstance(plan.get(layer.name), S.Int8Config)}


# with --integer-only (and no --shift-bits) the budget chooses int16 layers instead (integerize_stage)
STAGE = Stage("shift", lambda o: o.shift_bits is not None or o.max_bits_per_weight is not None
              or (o.accuracy_budget is not None and not o.integer_only), apply, lossy=True)
