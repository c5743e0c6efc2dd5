"""Langevin updates of SGILO (Daras et al., ICML 2022, Sec. 3, Eq. 5) in two forms.

``langevin`` — projected unadjusted Langevin algorithm (ULA) on the potential U(x) = f(x) − λ log p_{t_h}(x):

    x ← Π( x − η ∇f(x) + η λ s_θ(x, t_h) + sqrt(2η/β) · u ),   u ~ N(0, I)                          (Eq. 5)

β is an inverse temperature (β = 1: the posterior ∝ exp(−f) p^λ; β = ∞: no noise, i.e. projected gradient ascent to
the MAP). Without projection its stationary law for a Gaussian target N(μ, P⁻¹) is N(μ, (P (I − ηP/2))⁻¹ / β): the mean
is exact, the covariance carries the usual O(η) ULA bias (checked in tests/test_langevin.py).

``reference`` — the hybrid of the original code (docs/original-code.md#the-sgilo-update): an Adam step on the data
term, then

    x ← Π( x + τ · Δ(x) + ν · u ),   Δ(x) ≈ r² · (β_VP(t_h)/N) · s_θ(x, t_h)

where Δ is the first-order displacement of one hot-sampler step (Euler–Maruyama reverse VP-SDE at t_h in min–max
normalised units of range r; the tiny VP drift ½β x is dropped). Its stationary law is not the posterior
(docs/original-code.md#how-the-update-relates-to-langevin); it is kept for parity with published numbers. Fixed here:
the displacement is evaluated at the post-Adam iterate (the original used the pre-step value,
docs/original-code.md#bug-7).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sgilo.priors.sde import VPSDE
from sgilo.solvers.rng import StackedGenerator, randn_like
from sgilo.utils.shapes import append_dims

REFERENCE_SDE = VPSDE(beta_min=0.1, beta_max=20.0, N=1000)   # the reference's VP-SDE (its β_min, β_max, N scales)


# ----------------------------------------------------------------------------
# Check a step-size-like hyper-parameter is a finite positive number (one clear line otherwise).


def check_positive(value: float, name: str, allow_inf: bool = False) -> float:
    v = float(value)
    if math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
        kind = "a number > 0 (inf allowed)" if allow_inf else "a finite number > 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return v


# ----------------------------------------------------------------------------
# One projected ULA step (Eq. 5).


def langevin_step(x: Tensor, grad_f: Tensor, score: Tensor | None, eta: float | Tensor, lam: float = 1.0,
                  beta: float = 1.0, generator: StackedGenerator | torch.Generator | None = None,
                  project: Callable[[Tensor], Tensor] | None = None, mask: Tensor | None = None,
                  precond=None) -> Tensor:
    """x' = Π(x − η∇f(x) + ηλ s(x) + sqrt(2η/β) u), or with a preconditioner R (``precond``):
    x' = Π(x + η R Rᵀ (λ s(x) − ∇f(x)) + sqrt(2η/β) R u) — the same stationary law for any constant invertible R
    (preconditioned Langevin; Roberts & Stramer, Methodol. Comput. Appl. Probab. 2002).

    Args:
        x: current iterate [N, ...]; grad_f: ∇f(x), same shape; score: s(x) = ∇ log p(x) or None (no prior).
        eta: step size η > 0, one number or one per row [N] (each row is its own chain, so a per-row step is still a
            ULA step for that chain); lam: prior weight λ ≥ 0; beta: inverse temperature β > 0 (inf = MAP, no noise).
        generator: per-row generators (or one generator) for u; project: Π (identity if None);
        mask: optional {0,1} tensor broadcastable to x; rows with 0 are left unchanged (conditional update).
        precond: None or an object with ``precond_sqrt`` (v ↦ R v) and ``precond_sqrt_t`` (g ↦ Rᵀ g), e.g. the
            variable's prior (`sgilo.priors.score.LatentPrior`), R Rᵀ its training latents' covariance.
    Shapes: all tensors [N, ...]; returns [N, ...].
    """
    if isinstance(eta, Tensor):
        if eta.shape != (x.shape[0],) or not bool((torch.isfinite(eta) & (eta > 0)).all()):
            raise ValueError(f"per-row step size eta must be a finite positive tensor of shape [{x.shape[0]}], got "
                             f"shape {tuple(eta.shape)}")
        eta = append_dims(eta.to(x.dtype), x.ndim)
    else:
        check_positive(eta, "step size eta")
    check_positive(beta, "inverse temperature beta", allow_inf=True)
    drift = -grad_f if score is None or lam == 0 else lam * score - grad_f
    if precond is not None:
        drift = precond.precond_sqrt(precond.precond_sqrt_t(drift))            # R Rᵀ (λ s − ∇f)
    dx = eta * drift
    if not math.isinf(beta):
        u = randn_like(x, generator)
        dx = dx + (2 * eta / beta) ** 0.5 * (u if precond is None else precond.precond_sqrt(u))
    if mask is not None:
        dx = dx * mask
    x_new = x + dx
    return project(x_new) if project is not None else x_new


# ----------------------------------------------------------------------------
# Δ(x) = r² · (β(t_h)/N) · s(x, t_h): first-order hot-sampler displacement in raw units, β and N of the VP-SDE.


def hot_displacement(score: Tensor, t_h: float, value_range: float, sde: VPSDE = REFERENCE_SDE) -> Tensor:
    return value_range**2 * (float(sde.beta(t_h)) / sde.N) * score


# ----------------------------------------------------------------------------
# The reference hybrid's post-Adam move: x ← Π(x + τ Δ(x) + ν u) (sgilo:solve_inverse.py).


def reference_step(x: Tensor, score: Tensor | None, tau: float, t_h: float, value_range: float, noise_std: float,
                   generator: StackedGenerator | torch.Generator | None = None,
                   project: Callable[[Tensor], Tensor] | None = None, mask: Tensor | None = None) -> Tensor:
    """Shapes: x, score [N, ...] → [N, ...]. ``score`` None skips the displacement (no prior for this variable)."""
    dx = torch.zeros_like(x)
    if score is not None and tau != 0:
        dx = dx + tau * hot_displacement(score, t_h, value_range)
    if noise_std > 0:
        dx = dx + noise_std * randn_like(x, generator)
    if mask is not None:
        dx = dx * mask
    x_new = x + dx
    return project(x_new) if project is not None else x_new
