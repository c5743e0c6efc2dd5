"""A low-rank-plus-isotropic Gaussian on normalised latents: the structured skip of SGILO's latent priors (ours, issue 16).

The per-feature Gaussian skip ε̂ = σ(t)·u of `sgilo.priors.score` ignores that the features of h_k are strongly
correlated: h_k = head_k(w) is a smooth image of a much smaller code, so the covariance C of the normalised latents
u = (x − μ)/s has a few large eigenvalues and many tiny ones. For the bundled h₁ (2 048 features) the exact ε-error
of the full-covariance Gaussian at t = 0.01 is 39 % below the per-feature Gaussian's (docs/models.md). A probabilistic
PCA model (Tipping & Bishop, J. R. Stat. Soc. B 1999, Eq. 7 and the ML noise variance of their Eq. 8)

    C = V diag(λ) Vᵀ + ρ (I − V Vᵀ),      V ∈ R^{D×r} orthonormal, λ ∈ R^r, ρ = mean of the discarded eigenvalues,

keeps that structure in D·r numbers. Diffused by the VP-SDE (Song et al., ICLR 2021, Eq. 11; u_t = α u + σ ε) the
marginal stays Gaussian with covariance C_t = α² C + σ² I, whose eigenvalues are α²λ_i + σ² on span V and α²ρ + σ² on
its complement, so every quantity is a function of C_t applied to a vector (`apply`):

    score  ∇_u log p_t(u) = −C_t⁻¹ u,      ε-prediction  E[ε | u_t] = σ C_t⁻¹ u_t   (Tweedie; Efron 2011).

The same C preconditions Langevin steps on h_k (`sgilo.solvers.langevin`): with R = S C^½ (S = diag(s)), the step
x ← x + η R Rᵀ ∇ log π + sqrt(2η) R u keeps π invariant (a constant preconditioner; Roberts & Stramer 2002) and makes
the prior's curvature ≈ 1 in every direction, so one step size serves all of h_k's directions.

Shapes: latents [B, *latent_shape] flattened to [B, D] inside; basis [D, r]; eigvals [r]; resid [] (all fp32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sgilo.priors.sde import VPSDE, as_time
from sgilo.utils.shapes import append_dims


class LowRankGaussian(nn.Module):
    """N(0, C) on normalised latents, C = V diag(λ) Vᵀ + ρ (I − V Vᵀ) (probabilistic PCA)."""

    def __init__(self, latent_shape: tuple[int, ...], rank: int) -> None:
        super().__init__()
        self.latent_shape = tuple(int(s) for s in latent_shape)
        dim = 1
        for s in self.latent_shape:
            dim *= s
        if not (isinstance(rank, int) and 1 <= rank <= dim):
            raise ValueError(f"low-rank Gaussian: rank must be an integer in [1, {dim}], got {rank!r}")
        self.dim, self.rank = dim, rank
        self.register_buffer("basis", torch.zeros(dim, rank))
        self.register_buffer("eigvals", torch.ones(rank))
        self.register_buffer("resid", torch.ones(()))

    def extra_repr(self) -> str:
        return f"latent_shape={self.latent_shape}, rank={self.rank}"

    @torch.no_grad()
    def fit(self, u: Tensor, weights: Tensor | None = None) -> LowRankGaussian:
        """Top-r eigenpairs of the (weighted) second moment of normalised latents u [N, *latent_shape]; ρ = the mean of
        the remaining eigenvalues (Tipping & Bishop 1999, Eq. 8). float64 accumulation."""
        if tuple(u.shape[1:]) != self.latent_shape or u.shape[0] < 2:
            raise ValueError(f"low-rank Gaussian fit expects [N >= 2, {list(self.latent_shape)}], got "
                             f"{tuple(u.shape)}")
        x = u.flatten(1).double()
        w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else weights.double().flatten()
        if w.shape[0] != x.shape[0] or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"low-rank Gaussian fit: weights must be {x.shape[0]} non-negative numbers with a "
                             f"positive sum, got shape {tuple(w.shape)}")
        w = w / w.sum()
        cov = (x * w[:, None]).T @ x                                           # E[u uᵀ] (u is centred by the scaler)
        evals, evecs = torch.linalg.eigh(cov)                                  # ascending
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        r = self.rank
        self.basis.copy_(evecs[:, :r].float())
        self.eigvals.copy_(evals[:r].float())
        rest = evals[r:]
        self.resid.fill_(float(rest.mean()) if rest.numel() else float(evals[-1]))
        self.resid.clamp_(min=1e-6)
        return self

    # f(C_t) v: V diag(f(α²λ + σ²)) Vᵀ v + f(α²ρ + σ²)(v − V Vᵀ v), one function of the eigenvalues per call.
    def apply(self, v: Tensor, fn: Callable[[Tensor], Tensor], alpha2: Tensor | float = 1.0,
              sigma2: Tensor | float = 0.0) -> Tensor:
        """Shapes: v [B, *latent_shape]; alpha2, sigma2 numbers or [B] → [B, *latent_shape]."""
        flat = v.flatten(1)
        a2 = torch.as_tensor(alpha2, dtype=flat.dtype, device=flat.device).reshape(-1, 1)
        s2 = torch.as_tensor(sigma2, dtype=flat.dtype, device=flat.device).reshape(-1, 1)
        basis = self.basis.to(flat.dtype)
        coef = flat @ basis                                                    # [B, r]
        on = fn(a2 * self.eigvals.to(flat.dtype) + s2)                         # [B or 1, r]
        off = fn(a2 * self.resid.to(flat.dtype) + s2)                          # [B or 1, 1]
        out = (coef * on) @ basis.T + off * (flat - coef @ basis.T)
        return out.reshape(v.shape)

    def _alpha_sigma2(self, sde: VPSDE, t: float | Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        tt = as_time(t, u.shape[0], u.device)
        return torch.exp(2 * sde.log_alpha(tt)), sde.marginal_std(tt).square()

    def eps(self, sde: VPSDE, u: Tensor, t: float | Tensor) -> Tensor:
        """E[ε | u_t] = σ(t) C_t⁻¹ u for u_t = α u_0 + σ ε, u_0 ~ N(0, C). Shapes: u [B, ...], t [B] → [B, ...]."""
        a2, s2 = self._alpha_sigma2(sde, t, u)
        sigma = append_dims(s2.sqrt().to(u.dtype), u.ndim)
        return sigma * self.apply(u, torch.reciprocal, a2, s2)

    def sqrt_cov(self, v: Tensor) -> Tensor:
        """C^½ v (symmetric square root of the undiffused C). Shapes: [B, ...] → [B, ...]."""
        return self.apply(v, torch.sqrt)
