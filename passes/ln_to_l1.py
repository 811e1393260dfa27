"""LayerNorm -> L1 normalisation (lossy, opt-in with ``norm='l1'``).

    nn.layer_norm(x, gamma, beta, axes=[-1], eps)
      ->  call_tir(l1_norm, x, gamma / sqrt(pi/2), beta, eps / sqrt(pi/2))

``l1_norm`` (``shiftc.kernels.norm``) computes ``gamma'(x - mu)/(mean|x - mu| + eps') + beta``:
no squares, no square root. For Gaussian rows ``sigma2 = sqrt(pi/2) sigma1``, so folding that
constant into gamma (and eps) keeps an LN-trained model's scale; the result is the formula of
``shiftc.reference.nonlinear.l1_norm_float(..., correction=True)``. It changes the model: the pipeline
measures the whole-model error after this stage. LayerNorms over more than the last axis, or
with non-constant gamma/beta, are left as they are and noted.
"""

from __future__ import annotations

import numpy as np
import tvm

from shiftc.core.errors import InputError
from shiftc.core.stage import Stage
from shiftc.kernels.norm import l1_norm
from shiftc.reference.norm import ln_to_l1_params

from .graph import const_like, count_diff, op_counts, rewrite_main, shape_of


@tvm.transform.module_pass(opt_level=0, name="shiftc.LnToL1")
class LnToL1:
    """Every last-axis LayerNorm with constant gamma/beta -> the L1-norm kernel (lossy; see the
    module docstring). Each LayerNorm kept is noted in ``notes``; after a run ``converted``
    counts the rewritten ones."""

    def __init__(self, notes: list[str] | None = None):
        self.notes = [] if notes is None else notes
        self.converted = 0

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.converted = 0
        return rewrite_main(mod, self._rule)

    def _rule(self, g, var, value, bb):
        ln = g.call(value, "relax.nn.layer_norm")
        if ln is None:
            return None
        x, gamma, beta = ln.args
        shape = shape_of(x)
        axes = [int(a) % len(shape) for a in ln.attrs.axes] if shape else []
        gamma_v, beta_v = g.const(gamma), g.const(beta)
        if axes != [len(shape) - 1] or gamma_v is None or beta_v is None:
            self.notes.append(f"layer_norm {var.name} kept: L1 conversion needs one trailing axis and constant gamma/beta")
            return None
        n = shape[-1]
        if not bool(ln.attrs.scale):
            gamma_v = np.ones(n)
        if not bool(ln.attrs.center):
            beta_v = np.zeros(n)
        gamma_l1, eps_l1 = ln_to_l1_params(np.broadcast_to(gamma_v, (n,)), float(ln.attrs.epsilon))
        dtype = str(x.ty.dtype)
        self.converted += 1
        return bb.call_te(l1_norm, x, const_like(gamma_l1, dtype), const_like(np.broadcast_to(beta_v, (n,)), dtype), eps=eps_l1)


def ln_to_l1(mod, notes: list[str] | None = None):
    """``LnToL1`` applied to ``mod`` (for scripts and tests): ``(module, LayerNorms converted)``."""
    convert = LnToL1(notes)
    return convert(mod), convert.converted


def apply(mod, ctx):
    """Pipeline stage (lossy): convert, record counts; the pipeline adds the measured error."""
    before = op_counts(mod)
    convert = LnToL1(ctx.report.notes)
    mod = convert(mod)
    ctx.report.summary.update({"layer_norm_to_l1": convert.converted, "ops_changed": count_diff(before, op_counts(mod))})
    return mod


def _norm_is_l1(options) -> bool:
    if options.norm not in ("ln", "l1"):
        raise InputError(f"norm must be 'ln' or 'l1', got {options.norm!r}")
    return options.norm == "l1"


STAGE = Stage("ln_to_l1", _norm_is_l1, apply, lossy=True)
