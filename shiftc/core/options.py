"""The options of the Relax pass pipeline (``shiftc compile``'s pass flags are built from them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import InputError


def option(default, help: str, cli: str | None = None, choices: list[str] | None = None, type=None):
    """A PassOptions field; the CLI exposes it as ``--<name>`` (or ``cli``) with these choices/type."""
    return field(default=default, metadata={"help": help, "cli": cli, "choices": choices, "type": type})


@dataclass
class PassOptions:
    """Options of the Relax passes. Every field becomes a ``shiftc compile`` flag."""

    canonicalize: bool = option(True, "Rewrite written-out LayerNorm/GELU/L2-norm into one op each (exact).", cli="--canonicalize/--no-canonicalize")
    fold_norm: bool = option(True, "Fold BatchNorm into convs and per-channel affines into their consumers (exact).", cli="--fold-norm/--no-fold-norm")
    norm: str = option("ln", "LayerNorm kernel: 'ln' keeps it; 'l1' uses mean|x-mu| (lossy, error reported).", choices=["ln", "l1"])

    # shift pass (passes/shift_stage.py)
    shift_bits: int | None = option(None, "Encode conv/matmul weights as b-bit power-of-two codes (3, 4 or 5); off if unset.", type=int)
    shift_zero: str = option("free", "Zero handling of shift codes: 'free' (DenseShift, no zero code) or 'with-zero' (DeepShift).")
    shift_terms: int = option(1, "Power-of-two terms per weight (1 = PoT, 2-3 = multi-term APoT/BCQ).", type=int)
    shift_grid: str = option("pot", "Grid of the --shift-bits codes: 'pot' (power-of-two terms) or 'uniform' (one b-bit uniform level per weight, the int-b grid, run as its 2-3 canonical signed-digit shifts; --shift-bits 3-6, --shift-terms and --shift-zero do not apply).", choices=["pot", "uniform"])
    shift_skip: str = option("", "Layers to keep FP32: comma list of 'first', 'last', layer names or regexes (e.g. 'first,last,matmul_.*').")
    accuracy_budget: float | None = option(None, "Choose bits/terms per layer so the model output's relative L2 error stays within this budget, checked on held-back calibration samples; fails (exit 5) when not met. With --integer-only: chooses which layers read int16 operands.", type=float)
    max_bits_per_weight: float | None = option(None, "Choose per layer between power-of-two codes (3-5 bits, 1-2 terms), uniform codes (3-5 bits) and int8 weights kept as a multiply, to minimise the measured output error with at most this many stored bits per weight on average (codes, alpha, biases: everything stored), e.g. 5.", type=float)
    budget_best_effort: bool = option(False, "With --accuracy-budget: when the budget is not met on the held-back samples, keep the build and say so in the report instead of failing.")
    shift_reconstruct: bool = option(False, "Choose each shifted layer's codes (between the two that bracket each weight), alpha and bias correction to minimise its output error on the calibration data (AdaRound in the log domain, torch).", cli="--shift-reconstruct/--no-shift-reconstruct")
    shift_rounding: str = option("nearest", "How shift codes round the weights: 'nearest' (each weight its closest code) or 'gptq' (Hessian-guided: each input column's rounding error is compensated on the columns after it, from the layer's calibration inputs; matmul and ungrouped conv; the --max-bits-per-weight and --accuracy-budget allocations measure the rounded codes).", choices=["nearest", "gptq"])
    shift_bias_correction: bool = option(True, "Correct each shifted layer's bias by its mean output error on the calibration data.", cli="--shift-bias-correction/--no-shift-bias-correction")

    # integerize (passes/integerize_stage.py)
    integer_only: bool = option(False, "Integer-only graph: int8 calibrated arithmetic between an input quantiser and an output dequantiser (lossy, error reported).", cli="--integer-only/--no-integer-only")
    calibration_method: str = option("auto", "Activation range observer for --integer-only; 'auto': percentile for convolutional nets, minmax for models with attention or normalisation (transformers).", choices=["auto", "minmax", "percentile", "mse"])
    int_bias_correction: str = option("off", "With --integer-only: correct each conv/matmul bias by the mean output error of its integer codes on the calibration data: 'weights' (the int8 weight rounding, measured on FP32 inputs: MobileNetV2 mean KL 0.046 -> 0.038), 'full' (weights and 8-bit input codes: noisy with few samples), 'off'.", choices=["off", "weights", "full"])
    calibration_samples: int | None = option(None, "Use only the first N calibration samples (1 = one-sample PTQ); default all.", type=int)
    gelu: str = option("shift", "Integer GELU: 'shift' (I-ViT ShiftGELU, row max), 'lambda' (shiftc's elementwise lambda-ShiftGELU) or 'ibert' (I-BERT's i-GELU: erf by a clipped second-order polynomial, elementwise).", choices=["shift", "lambda", "ibert"])
    unsigned_activations: bool = option(True, "With --integer-only: values calibration proved non-negative take unsigned codes (u8 into matmul/conv; Shiftmax into P.V writes u8 at 2^-8); off: every activation signed (Shiftmax int8 at 2^-7).", cli="--unsigned-activations/--no-unsigned-activations")
    int16_layers: str = option("", "With --integer-only: matmul/conv layers (comma list of regexes of their names) that read int16 operands instead of int8 (mixed precision; --accuracy-budget adds the most sensitive ones it needs).")
    smooth_quant: float | None = option(None, "With --integer-only: SmoothQuant scale migration of strength alpha in (0, 1) (e.g. 0.5) from LayerNorm outputs into the matmuls that read them (exact in float).", type=float)
    upsample: str = option("keep", "With --integer-only: keep bilinear resize (integer bilinear, Q0.15 weights, nearly exact), or replace it by integer 'nearest' upsampling where the factors are integers (changes the model, reported).", choices=["keep", "nearest"])
    l2norm: str = option("keep", "With --integer-only: keep L2 normalisation (stays float), or 'remove' it (changes the model, reported).", choices=["keep", "remove"])
    requant: str = option("dyadic", "Requantiser scales: 'dyadic' (m * 2^-e) or 'pow2' (every scale a power of two: shift-only, for VTA).", choices=["dyadic", "pow2"])
    float_fallback: bool = option(False, "With --integer-only, keep ops that have no integer form in float (each one reported) instead of failing.", cli="--float-fallback/--no-float-fallback")

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "PassOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InputError(f"unknown compile option(s) {unknown}; known: {sorted(names)}")
        return cls(**kwargs)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
