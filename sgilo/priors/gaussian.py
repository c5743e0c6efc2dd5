"""The per-feature Gaussian baseline of a learned latent prior (the ablation ``sgilo-gauss`` of issue 16).

A learned `sgilo.priors.score.LatentPrior` diffuses normalised latents u = (x − μ)/s with the VP-SDE (Song et al.,
ICLR 2021, Eq. 11): u_t = α(t) u_0 + σ(t) ε. `GaussianPrior` is the same construction with the data law replaced by
the per-feature Gaussian of the prior's own normalisation statistics (μ = scaler.shift, s = scaler.scale, 'standard'
mode): u_0 ~ N(0, I), so in the prior's units

    p_t(u) = N(α·0, α²·1 + σ(t)²),      ∇_x log p_t(x) = ∇_u log p_t(u) / s = −(x − μ) / (s² (α² + σ²)),

i.e. exactly what the learned prior's network would output if the latents were that Gaussian (its "Gaussian skip").
For the VP-SDE α² + σ² = 1, so this score is −(x − μ)/s² at every t. For z the Gaussianised w+ code is N(0, I) by
construction: `GaussianPrior.standard` (μ = 0, s = 1) gives the exact score −z.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sgilo.priors.sde import VPSDE, as_time
from sgilo.utils.shapes import append_dims, assert_shape


# ----------------------------------------------------------------------------
# N(mean, diag(std²)) diffused in its own normalised units, with the `.score(x, t)` interface of a LatentPrior.


class GaussianPrior(nn.Module):
    """Shapes: mean, std [*latent_shape] (std > 0); x [B, *latent_shape] → score [B, *latent_shape]."""

    def __init__(self, mean: Tensor, std: Tensor, sde: VPSDE | None = None, kind: str = "z", layer: int = 0) -> None:
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != std.shape:
            raise ValueError(f"GaussianPrior: mean and std must have the same shape, got {tuple(mean.shape)} and "
                             f"{tuple(std.shape)}")
        if not bool((std > 0).all()):
            raise ValueError("GaussianPrior: std must be > 0 everywhere")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.sde = sde or VPSDE()
        self.kind, self.layer = kind, int(layer)
        self.latent_shape = tuple(mean.shape)

    @staticmethod
    def like(prior) -> GaussianPrior:
        """The Gaussian of a learned prior's normalisation statistics, same SDE, shape, kind and layer."""
        scaler = prior.scaler
        if scaler.mode != "standard":
            raise ValueError(f"GaussianPrior.like needs a prior with 'standard' (mean, std) normalisation, got "
                             f"{scaler.mode!r}")
        return GaussianPrior(scaler.shift.detach(), scaler.scale.detach(), prior.sde, prior.kind,
                             prior.layer).to(scaler.shift.device)

    @staticmethod
    def standard(latent_shape: tuple[int, ...], sde: VPSDE | None = None, device: torch.device | str = "cpu",
                 kind: str = "z", layer: int = 0) -> GaussianPrior:
        """N(0, I): the exact prior of the Gaussianised code z."""
        return GaussianPrior(torch.zeros(latent_shape), torch.ones(latent_shape), sde, kind, layer).to(device)

    def variance(self, t: float | Tensor, x: Tensor) -> Tensor:
        """Var of p_t in raw units, s² (α² + σ²), broadcast against x [B, ...]."""
        tt = as_time(t, x.shape[0], x.device)
        alpha2 = append_dims(torch.exp(2 * self.sde.log_alpha(tt)).to(x.dtype), x.ndim)
        sigma2 = append_dims(self.sde.marginal_std(tt).square().to(x.dtype), x.ndim)
        return self.std.square() * (alpha2 + sigma2)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """∇_x log p_t(x) = −(x − μ) / (s² (α(t)² + σ(t)²)). Shapes: x [B, *latent_shape] → same."""
        assert_shape(x, [None, *self.latent_shape], "GaussianPrior input")
        return -(x - self.mean) / self.variance(t, x)

    # Langevin preconditioner R = diag(s) (R Rᵀ = the data covariance), as `LatentPrior.precond_sqrt`.
    def precond_sqrt(self, v: Tensor) -> Tensor:
        return v * self.std

    precond_sqrt_t = precond_sqrt


# ----------------------------------------------------------------------------
# The Gaussian counterparts of a set of priors: exact N(0, I) for 'z', GaussianPrior.like for every 'h{k}'.


def gaussian_priors(priors: Mapping, z_shape: tuple[int, ...] | None = None) -> dict:
    """{'z': N(0, I) (shape of priors['z'] or ``z_shape``), 'h{k}': GaussianPrior.like(priors['h{k}'])}."""
    out = {name: GaussianPrior.like(p) for name, p in priors.items() if name != "z"}
    shape = tuple(priors["z"].latent_shape) if "z" in priors else z_shape
    if shape is not None:
        device = priors["z"].scaler.shift.device if "z" in priors and hasattr(priors["z"], "scaler") else "cpu"
        out["z"] = GaussianPrior.standard(shape, priors["z"].sde if "z" in priors else None, device)
    return out
