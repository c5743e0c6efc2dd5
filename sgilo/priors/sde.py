"""The variance-preserving SDE of Song et al. (ICLR 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations"), used by SGILO's latent priors (Daras et al., ICML 2022; original: ``sgilo:score/sde.py``).

    dx = −½ β(t) x dt + √β(t) dW,     β(t) = β_min + t (β_max − β_min),   t ∈ [0, T]      (Song Eq. 11, App. B)

Times ``t`` are a Python float, a 0-d tensor or a per-sample vector [B]. Latents may have any rank ([B, L, D] rows or
[B, C, r, r] maps): time-dependent coefficients are broadcast with `append_dims`. The schedule (log α, σ) is computed in
float64 and cast to the dtype of ``x``: σ(t) = sqrt(1 − α²) loses all precision near t = 0 in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sgilo.utils.shapes import append_dims


# ----------------------------------------------------------------------------
# Turn a float / 0-d / [B] time into a float64 vector [B] on x's device.


def as_time(t: float | Tensor, batch: int, device: torch.device) -> Tensor:
    """Returns t as a float64 tensor of shape [batch]."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"time must be a scalar or a [B] = [{batch}] vector, got shape {tuple(t.shape)}")
    return t


# ----------------------------------------------------------------------------
# The VP-SDE with linear β schedule (Song et al. 2021, Eq. 11; β_min = 0.1, β_max = 20, T = 1, N = 1000).


class VPSDE:
    """Variance-preserving SDE.

    Args:
        beta_min: β(0) (paper: 0.1).
        beta_max: β(1) (paper: 20).
        T: end time (1).
        N: number of discretisation steps of the DDPM chain (`discretize`, Langevin step sizes): 1000.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, N: int = 1000) -> None:
        if not (0 <= beta_min < beta_max) or T <= 0 or N < 1:
            raise ValueError(f"need 0 <= beta_min < beta_max, T > 0, N >= 1; got {beta_min}, {beta_max}, {T}, {N}")
        self.beta_min, self.beta_max, self.T, self.N = float(beta_min), float(beta_max), float(T), int(N)
        # DDPM betas β_i = β(t_i)/N (Song et al. App. B: β_i = β̄_i / N), i = 0..N−1.
        self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N, dtype=torch.float64)

    def to_dict(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "T": self.T, "N": self.N}

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T}, N={self.N})"

    # β(t) = β_min + t (β_max − β_min).
    def beta(self, t: float | Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    # log α(t) = −¼ t² (β_max − β_min) − ½ t β_min, the log mean coefficient of p_0t (Song Eq. 29/33).
    def log_alpha(self, t: float | Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return -0.25 * t.square() * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    # σ(t) = sqrt(1 − α(t)²), computed as sqrt(−expm1(2 log α)) for accuracy at small t.
    def marginal_std(self, t: float | Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def marginal_prob(self, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """p_0t(x_t | x_0) = N(α(t) x_0, σ(t)² I) (Song Eq. 29). Returns (mean [B, ...], std [B])."""
        tt = as_time(t, x0.shape[0], x0.device)
        alpha = append_dims(self.log_alpha(tt).exp().to(x0.dtype), x0.ndim)
        return alpha * x0, self.marginal_std(tt).to(x0.dtype)

    def prior_sampling(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None,
                       device: torch.device | str) -> Tensor:
        """x_T ~ N(0, I) (the VP prior; exact up to α(T) ≈ 6e-3)."""
        return torch.randn(tuple(shape), generator=generator, device=device)

    def sde(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """Forward SDE coefficients f(x, t) = −½ β(t) x, g(t) = √β(t) (Song Eq. 11). Returns (drift like x, g [B])."""
        beta = self.beta(as_time(t, x.shape[0], x.device)).to(x.dtype)
        return -0.5 * append_dims(beta, x.ndim) * x, beta.sqrt()

    def discretize(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """DDPM step x_{i+1} = √(1 − β_i) x_i + √β_i z written as (f_i, G_i) with x_{i+1} = x_i + f_i + G_i z
        (Song Eq. 8 and App. B), i = round(t (N − 1) / T). Returns (f like x, G [B])."""
        tt = as_time(t, x.shape[0], x.device)
        i = torch.round(tt * (self.N - 1) / self.T).long().clamp(0, self.N - 1)
        beta = self.discrete_betas.to(x.device)[i]
        f = append_dims(torch.sqrt(1.0 - beta).to(x.dtype), x.ndim) * x - x
        return f, beta.sqrt().to(x.dtype)

    def reverse_drift(self, x: Tensor, t: float | Tensor, score: Tensor, probability_flow: bool = False) -> Tensor:
        """Drift of the reverse-time SDE f − g² ∇log p_t (Song Eq. 6), or of the probability-flow ODE
        f − ½ g² ∇log p_t (Song Eq. 13) when ``probability_flow``. Shapes: x, score [B, ...] → [B, ...]."""
        if score.shape != x.shape:
            raise ValueError(f"score must have the shape of x {tuple(x.shape)}, got {tuple(score.shape)}")
        f, g = self.sde(x, t)
        coef = 0.5 if probability_flow else 1.0
        return f - coef * append_dims(g.square(), x.ndim) * score

    # Langevin step-size factor α_i = 1 − β_i of the corrector (Song Alg. 5) at time t.
    def discrete_alpha(self, t: float | Tensor, batch: int, device: torch.device) -> Tensor:
        tt = as_time(t, batch, device)
        i = torch.round(tt * (self.N - 1) / self.T).long().clamp(0, self.N - 1)
        return 1.0 - self.discrete_betas.to(device)[i]


# ----------------------------------------------------------------------------
# σ(t) → t inverse of the VP schedule (used to pick the diffusion time that matches a noise level).


def vp_time_for_std(sde: VPSDE, sigma: float) -> float:
    """Solve σ(t) = sigma for t: log α = ½ log(1 − σ²), a quadratic in t."""
    if not 0 < sigma < 1:
        raise ValueError(f"VP marginal std must lie in (0, 1), got {sigma}")
    la = 0.5 * math.log1p(-sigma * sigma)                     # log α(t) target (< 0)
    a, b = 0.25 * (sde.beta_max - sde.beta_min), 0.5 * sde.beta_min
    return (-b + math.sqrt(b * b - 4 * a * la)) / (2 * a)
