"""Shift re-parameterisation of conv / linear weights for fine-tuning (straight-through gradients).

Every weight is ``w = alpha_c * sum_i sign_i * 2**-p_i`` on exactly shiftc's code grid
(``shiftc.reference.shift``: same bits, terms, zero handling, one float32 alpha per output
channel on axis 0, nearest-code rule with ties to the larger magnitude), so that the baked weights
compile losslessly (``shiftc compile`` reads the recorded codes, see ``record``).

Two forms, each a ``torch.nn.utils.parametrize`` parametrisation of ``module.weight``:

* ``"dense"`` -- DenseShift (X. Li et al., "DenseShift: Towards Accurate and Efficient Low-Bit
  Power-of-Two Quantization", ICCV 2023): zero-free codes (every weight is ``+-2**-p``), the weight
  kept as a latent real tensor in sign-scale form ``sign(w) * |w|``; the codes are the nearest grid
  point of the latent ``w / alpha`` and the gradient passes straight through to it (STE); alpha is
  learnable (gradient ``sum dL/dw * unit``). ``low_variance_init`` is the paper's initialisation
  for layers trained from scratch; fine-tuning starts from the pretrained weights.
* ``"ps"`` -- DeepShift-PS (M. Elhoushi et al., "DeepShift: Towards Multiplication-Less Neural
  Networks", CVPR Workshops 2021): the shift ``p`` and the sign ``s`` are the trained latents;
  ``w = alpha * sign(round(s)) * 2**-clip(round(p))``, rounded with STE. Single-term only.

Public API (stable): ``ShiftSpec``, ``shiftify(model, spec)``, ``shift_modules(model)``,
``codes_of(module)``, ``bake(model)``, ``low_variance_init(module)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from shiftc.reference import shift as ref

FORMS = ("dense", "ps")


@dataclass(frozen=True)
class ShiftSpec:
    """How weights are coded: ``bits``-bit codes, ``terms`` codes per weight, zero-free or not."""

    bits: int = 4
    terms: int = 1
    zero_free: bool = True
    form: str = "dense"

    def __post_init__(self):
        ref.p_limit(self.bits, self.zero_free)  # raises on an impossible bit width
        if self.form not in FORMS:
            raise ValueError(f"shift form must be one of {FORMS}, got {self.form!r}")
        if not 1 <= self.terms <= 3:
            raise ValueError(f"terms must be 1, 2 or 3, got {self.terms}")
        if self.form == "ps" and self.terms != 1:
            raise ValueError("the DeepShift-PS form has one term per weight")

    @property
    def pmax(self) -> int:
        return ref.p_limit(self.bits, self.zero_free)


# --------------------------------------------------------------------------- the code grid in torch
def nearest_codes(a: torch.Tensor, pmax: int, zero_free: bool) -> torch.Tensor:
    """Torch twin of ``shiftc.reference.shift.nearest_codes`` for ``alpha = 1``: int codes of ``a``."""
    mag = a.abs()
    m, k = torch.frexp(mag)
    p = torch.where(m >= 0.75, -k, 1 - k).to(torch.int64)
    p = torch.where(mag == 0, torch.full_like(p, pmax), p.clamp(0, pmax))
    codes = torch.where(a < 0, -(p + 1), p + 1)
    if not zero_free:
        codes = torch.where(mag < 0.5 * 2.0 ** -pmax, torch.zeros_like(codes), codes)
    return codes


def unit_of(codes: torch.Tensor) -> torch.Tensor:
    """``sign * 2**-p`` (0 for code 0), exact in float32."""
    p = (codes.abs() - 1).clamp(min=0).to(torch.float32)
    return torch.where(codes == 0, 0.0, torch.sign(codes).to(torch.float32) * torch.exp2(-p))


def _per_channel(alpha: torch.Tensor, ndim: int) -> torch.Tensor:
    return alpha.reshape((-1,) + (1,) * (ndim - 1))


def greedy_codes(w: torch.Tensor, alpha: torch.Tensor, spec: ShiftSpec) -> torch.Tensor:
    """Codes ``(terms, *w.shape)``: each term the nearest code of the residual (as the reference)."""
    a = _per_channel(alpha, w.ndim)
    res = torch.where(a > 0, w / torch.where(a > 0, a, torch.ones_like(a)), torch.zeros_like(w))
    out = []
    for _ in range(spec.terms):
        c = nearest_codes(res, spec.pmax, spec.zero_free)
        out.append(c)
        res = res - unit_of(c)
    return torch.stack(out)


def _initial_alpha(w: torch.Tensor, spec: ShiftSpec) -> torch.Tensor:
    """The post-training alpha of ``shiftc.reference.shift`` (least squared weight error)."""
    wn = w.detach().cpu().numpy()
    if spec.terms == 1:
        _, alpha = ref.encode_pot(wn, spec.bits, spec.zero_free)
    else:
        _, alpha = ref.encode_multi(wn, spec.terms, spec.bits, spec.zero_free)
    return torch.from_numpy(alpha.copy())


# --------------------------------------------------------------------------- parametrisations
class DenseShift(nn.Module):
    """Parametrisation: latent ``w`` -> ``alpha * unit(codes(w / alpha))`` with STE; learnable alpha."""

    def __init__(self, weight: torch.Tensor, spec: ShiftSpec):
        super().__init__()
        self.spec = spec
        self.alpha = nn.Parameter(_initial_alpha(weight, spec).to(weight.device))

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        return greedy_codes(w.detach(), self.alpha.detach().clamp(min=0), self.spec)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        unit = unit_of(self.codes(w)).sum(0)
        return _per_channel(self.alpha, w.ndim) * unit + (w - w.detach())


class DeepShiftPS(nn.Module):
    """Parametrisation with latents ``(p, s)``: ``alpha * sign(round(s)) * 2**-clip(round(p))``, STE."""

    def __init__(self, weight: torch.Tensor, spec: ShiftSpec):
        super().__init__()
        self.spec = spec
        self.alpha = nn.Parameter(_initial_alpha(weight, spec).to(weight.device))

    def right_inverse(self, w: torch.Tensor):
        c = greedy_codes(w.detach(), self.alpha.detach(), self.spec)[0]
        p = (c.abs() - 1).clamp(min=0).to(torch.float32)
        return p, torch.sign(c).to(torch.float32)

    def codes(self, p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        pr = p.detach().round().clamp(0, self.spec.pmax).to(torch.int64)
        sr = s.detach().round().clamp(-1, 1).to(torch.int64)
        if self.spec.zero_free:
            sr = torch.where(sr == 0, torch.where(s.detach() < 0, -1, 1), sr)
        return (sr * (pr + 1))[None]

    def forward(self, p: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        unit = unit_of(self.codes(p, s))[0]
        # STE: d unit / d p = -ln2 * unit, d unit / d s = 2**-p
        ste = (p - p.detach()) * (-np.log(2.0)) * unit.detach() + (s - s.detach()) * unit.detach().abs()
        return _per_channel(self.alpha, p.ndim) * (unit + ste)


SHIFTABLE = (nn.Conv2d, nn.Linear)


def shiftify(model: nn.Module, spec: ShiftSpec, skip: set[str] | frozenset = frozenset()) -> list[str]:
    """Re-parameterise the weight of every ``Conv2d`` / ``Linear`` not named in ``skip``; returns
    the module names re-parameterised, in ``named_modules`` order."""
    done = []
    cls = DenseShift if spec.form == "dense" else DeepShiftPS
    for name, mod in model.named_modules():
        if isinstance(mod, SHIFTABLE) and name not in skip and not parametrize.is_parametrized(mod, "weight"):
            parametrize.register_parametrization(mod, "weight", cls(mod.weight, spec), unsafe=True)
            done.append(name)
    return done


def shift_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The re-parameterised modules by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SHIFTABLE) and parametrize.is_parametrized(m, "weight")}


def _param(module: nn.Module):
    return module.parametrizations.weight[0]


def codes_of(module: nn.Module) -> tuple[np.ndarray, np.ndarray, ShiftSpec]:
    """``(codes int8 (terms, O, ...), alpha float32 (O,), spec)`` of a re-parameterised module."""
    par = _param(module)
    holder = module.parametrizations.weight
    originals = [holder.original0, holder.original1] if isinstance(par, DeepShiftPS) else [holder.original]
    codes = par.codes(*originals).cpu().numpy().astype(np.int8)
    alpha = par.alpha.detach().clamp(min=0).cpu().numpy().astype(np.float32)
    return codes, alpha, par.spec


def decoded(codes: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The grid weight of ``codes`` / ``alpha`` by the reference decoder (float32)."""
    return ref.decode_multi(codes, alpha) if codes.shape[0] > 1 else ref.decode_pot(codes[0], alpha)


def bake(model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray, ShiftSpec]]:
    """Replace every re-parameterised weight by its grid weight (plain parameter again) and return
    ``name -> (codes, alpha, spec)``. Raises if the torch forward weight is not the reference's."""
    out = {}
    for name, mod in shift_modules(model).items():
        codes, alpha, spec = codes_of(mod)
        with torch.no_grad():
            w_torch = mod.weight.detach().cpu().numpy()
        w = decoded(codes, alpha)
        if not np.array_equal(w_torch, w):
            raise RuntimeError(f"{name}: torch shift weight differs from the reference decode")
        parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(w))
        out[name] = (codes, alpha, spec)
    return out


def low_variance_init(module: nn.Module, scale: float = 0.5) -> None:
    """DenseShift's low-variance initialisation (for layers trained from scratch): Kaiming-normal
    scaled by ``scale`` < 1, so that the initial weights' spread stays inside the PoT grid's
    dense region around alpha and fewer weights land on the coarse large-magnitude codes."""
    with torch.no_grad():
        nn.init.kaiming_normal_(module.weight)
        module.weight.mul_(scale)
