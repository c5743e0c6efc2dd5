"""Continuous-time denoising score matching for VP-SDE priors (Song et al., ICLR 2021, Eq. 7; Vincent 2011).

    L(θ) = E_{t ~ U(eps, T)} E_{x_0} E_{ε ~ N(0, I)} [ λ(t) ‖s_θ(x_t, t) − ∇ log p_0t(x_t | x_0)‖² ],
    x_t = α(t) x_0 + σ(t) ε,   ∇ log p_0t(x_t | x_0) = −ε / σ(t).

With the ε-parameterisation s_θ = −ε_θ / σ and λ(t) = σ(t)² this is ‖ε_θ(x_t, t) − ε‖² (Ho et al. 2020, the default
here); the likelihood weighting λ(t) = g(t)² = β(t) of Song et al. (2021b) gives β(t)/σ(t)² ‖ε_θ − ε‖². The loss is the
per-sample mean over latent coordinates, averaged over the batch (the original's reduction is unknown:
docs/original-code.md#score-training-objective).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sgilo.priors.sde import VPSDE
from sgilo.utils.shapes import append_dims


# ----------------------------------------------------------------------------
# DSM loss of an ε-prediction model on clean latents x_0 (Song Eq. 7 in ε-form).


def dsm_loss(eps_fn: Callable[[Tensor, Tensor], Tensor], sde: VPSDE, x0: Tensor, eps: float = 1e-3,
             likelihood_weighting: bool = False, generator: torch.Generator | None = None,
             t_sampling: str = "uniform") -> Tensor:
    """Scalar loss. ``eps_fn(x_t, t)`` with x_t [B, ...] and t [B] (float32) predicts ε [B, ...].

    ``t_sampling``: 'uniform' t ~ U(eps, T) (Song et al.); 'mixed' draws each t from U(eps, T) or, with probability ½,
    log-uniformly on [eps, T], so small t (where SGILO evaluates the score, t_h = 0.01) gets ≈ 10× more samples. Any
    positive density over t leaves the minimiser (the true ε-predictor at every t) unchanged.

    Shapes: x0 [B, ...] (normalised latents).
    """
    B = x0.shape[0]
    r = torch.rand(B, generator=generator, device=x0.device, dtype=torch.float64)
    t = r * (sde.T - eps) + eps                                                                       # [B]
    if t_sampling == "mixed":
        r2 = torch.rand(B, generator=generator, device=x0.device, dtype=torch.float64)
        t = torch.where(r2 < 0.5, eps * (sde.T / eps) ** r, t)
    elif t_sampling != "uniform":
        raise ValueError(f"t_sampling must be 'uniform' or 'mixed', got {t_sampling!r}")
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    mean, std = sde.marginal_prob(x0, t)
    x_t = mean + append_dims(std, x0.ndim) * noise
    per_sample = (eps_fn(x_t, t.to(x0.dtype)) - noise).square().flatten(1).mean(1)      # [B]
    if likelihood_weighting:
        per_sample = per_sample * (sde.beta(t) / sde.marginal_std(t).square()).to(x0.dtype)
    return per_sample.mean()
