"""Latent priors with a score ∇_x log p_t(x): the learned `LatentPrior` of SGILO (Daras et al., ICML 2022) and the
analytic `GaussianScore` used in tests.

`LatentPrior.eps` is the ONE place the network output becomes ε̂: ε̂(u, t) = σ(t)·u + F_θ(u, t) with the Gaussian skip
(ours), F_θ(u, t) without. σ(t)·u is E[ε | u_t] for standard-normal data (the VP marginal of unit-variance data has
unit variance at every t), so F_θ only learns the non-Gaussian part; without the skip a LayerNorm'd output cannot grow
with |u|, ε̂ saturates off the training distribution and the reverse SDE/ODE drifts away (measured: sample std 16×
the data's on the h₁ prior of the bundled model). The skip lives in the prior wrapper, not in the network, as EDM
keeps c_skip in its preconditioner (Karras et al. 2022, Eq. 7 and Table 1).

`eps_to_score` is the ONE adapter from an ε-prediction network to a score (Song et al. 2021, App. C; Ho et al. 2020):
for x_t = α(t) x_0 + σ(t) ε, ∇ log p_t(x_t) = −E[ε | x_t] / σ(t), so s_θ = −ε_θ / σ(t).

Units. A `LatentPrior` diffuses *normalised* latents u = (x − shift)/scale (`sgilo.priors.scaling`); its p_t on raw
latents is the law of x_t = shift + scale·u_t, so ∇_x log p_t(x) = ∇_u log p_t(u) / scale. Callers always pass and get
raw latents; samplers run in u-space inside `sample`/`hot_start`/`denoise`. A `GaussianScore` diffuses raw units
directly: p_t = N(α mean, α² var + σ²).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sgilo.priors import samplers
from sgilo.priors.lowrank import LowRankGaussian
from sgilo.priors.scaling import LatentScaler
from sgilo.priors.score_net import LatentScoreNet, ScoreNetConfig
from sgilo.priors.sde import VPSDE, as_time
from sgilo.utils.shapes import append_dims, assert_shape


# ----------------------------------------------------------------------------
# s_θ(x, t) = −ε_θ(x, t) / σ(t): the single network→score adapter.


def eps_to_score(eps_hat: Tensor, sigma: Tensor) -> Tensor:
    """Shapes: eps_hat [B, ...], sigma [B] → score [B, ...]."""
    return -eps_hat / append_dims(sigma.to(eps_hat.dtype), eps_hat.ndim)


# ----------------------------------------------------------------------------
# The Gaussian skip σ(t)·u: the exact ε-prediction E[ε | u_t] for N(0, I) data.


def gaussian_skip_eps(sde: VPSDE, u: Tensor, t: Tensor) -> Tensor:
    """Shapes: u [B, ...], t [B] → [B, ...]."""
    return append_dims(sde.marginal_std(t).to(u.dtype), u.ndim) * u


# ----------------------------------------------------------------------------
# The skip of a prior's ε̂: the low-rank Gaussian's exact ε (``structured``), else σ(t)·u (``gaussian_skip``), else None.


def skip_eps(sde: VPSDE, u: Tensor, t: Tensor, gaussian_skip: bool,
             structured: LowRankGaussian | None = None) -> Tensor | None:
    """Shapes: u [B, ...], t [B] → [B, ...] or None (no skip)."""
    if structured is not None:
        return structured.eps(sde, u, t)
    return gaussian_skip_eps(sde, u, t) if gaussian_skip else None


# ----------------------------------------------------------------------------
# Network config and skip flag of a prior checkpoint (older files kept the flag and β range in the network config).


def read_prior_config(config: dict) -> tuple[ScoreNetConfig, bool]:
    """``config`` of a prior file → (network config, gaussian_skip)."""
    net = dict(config["net"])
    legacy_skip = bool(net.pop("gaussian_skip", False))
    legacy_beta = {k: net.pop(k) for k in ("beta_min", "beta_max") if k in net}
    if legacy_skip and any(float(v) != float(config["sde"][k]) for k, v in legacy_beta.items()):
        raise ValueError(f"prior config: the Gaussian skip's β range {legacy_beta} differs from the prior's SDE "
                         f"{config['sde']}; expected them equal")
    return ScoreNetConfig(**net), bool(config.get("gaussian_skip", legacy_skip))


# ----------------------------------------------------------------------------
# The learned prior: network + VP-SDE + normalisation statistics (+ the Gaussian skip).


class LatentPrior(nn.Module):
    """Score-based prior over z ([B, L, D], kind 'z', layer 0) or h_k ([B, C, r, r], kind 'h', layer k).

    Args:
        net: ε-prediction network on normalised latents.
        sde: the VP-SDE it was trained with.
        scaler: normalisation statistics of the training latents.
        layer: split layer k of the generator the h-prior belongs to (0 for z).
        gaussian_skip: ε̂ = σ(t)·u + F_θ(u, t) (see the module docstring) instead of ε̂ = F_θ(u, t).
        structured: a `LowRankGaussian` of the normalised latents; when given, the skip is its exact ε-prediction
            σ C_t⁻¹ u instead of σ·u (`sgilo.priors.lowrank`), and it preconditions Langevin steps (`precond_sqrt`).
        net None: no network, ε̂ = the skip alone (the Gaussian part of a prior, ablation 'sgilo-pca'); then ``kind``
            ('z' or 'h') must be given.
    """

    def __init__(self, net: LatentScoreNet | None, sde: VPSDE, scaler: LatentScaler, layer: int = 0,
                 gaussian_skip: bool = False, structured: LowRankGaussian | None = None,
                 kind: str | None = None) -> None:
        super().__init__()
        kind = net.cfg.kind if net is not None else kind
        if kind not in ("z", "h"):
            raise ValueError(f"prior kind must be 'z' or 'h', got {kind!r}")
        if net is not None and tuple(scaler.latent_shape) != net.cfg.latent_shape:
            raise ValueError(f"scaler shape {scaler.latent_shape} does not match network shape {net.cfg.latent_shape}")
        if structured is not None and tuple(structured.latent_shape) != tuple(scaler.latent_shape):
            raise ValueError(f"structured skip shape {structured.latent_shape} does not match the scaler's "
                             f"{scaler.latent_shape}")
        if net is None and not (gaussian_skip or structured is not None):
            raise ValueError("a prior without a network needs a skip (gaussian_skip or structured)")
        if (kind == "z") != (layer == 0):
            need = "0" if kind == "z" else ">= 1"
            raise ValueError(f"a '{kind}' prior needs layer {need}, got {layer}")
        self.net, self.sde, self.scaler, self.structured = net, sde, scaler, structured
        self.kind: str = kind
        self.layer: int = int(layer)
        self.latent_shape: tuple = tuple(scaler.latent_shape)
        self.gaussian_skip: bool = bool(gaussian_skip or structured is not None)

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, layer={self.layer}, latent_shape={self.latent_shape}, sde={self.sde}, "
                f"gaussian_skip={self.gaussian_skip}, network={self.net is not None}")

    def gaussian_part(self) -> LatentPrior:
        """The same prior without its network: ε̂ = the skip alone (per-feature or low-rank Gaussian)."""
        return LatentPrior(None, self.sde, self.scaler, self.layer, True, self.structured, self.kind)

    def _check(self, x: Tensor) -> None:
        assert_shape(x, [None, *self.latent_shape], f"{self.kind}-prior input")

    # ε̂(u, t) = [σ(t)·u +] F_θ(u, t) on normalised latents.
    def eps(self, u: Tensor, t: float | Tensor) -> Tensor:
        tt = as_time(t, u.shape[0], u.device).to(u.dtype)
        skip = skip_eps(self.sde, u, tt, self.gaussian_skip, self.structured)
        if self.net is None:
            return skip
        out = self.net(u, tt)
        return out if skip is None else out + skip

    # Langevin preconditioner R with R Rᵀ = S C S, the raw-unit covariance of the training latents (S = diag(scale);
    # C = I for the per-feature skip, the low-rank Gaussian's C otherwise): R v = S C^½ v and Rᵀ g = C^½ S g.
    def precond_sqrt(self, v: Tensor) -> Tensor:
        w = v if self.structured is None else self.structured.sqrt_cov(v)
        return w * self.scaler.scale

    def precond_sqrt_t(self, g: Tensor) -> Tensor:
        w = g * self.scaler.scale
        return w if self.structured is None else self.structured.sqrt_cov(w)

    # ∇_u log p_t(u) on normalised latents (diffusion space of the samplers).
    def score_normalized(self, u: Tensor, t: float | Tensor) -> Tensor:
        sigma = self.sde.marginal_std(as_time(t, u.shape[0], u.device))
        return eps_to_score(self.eps(u, t), sigma)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """∇_x log p_t(x) in raw latent units = ∇_u log p_t(u) / scale. Shapes: x [B, *latent_shape] → same."""
        self._check(x)
        return self.score_normalized(self.scaler.normalize(x), t) / self.scaler.scale

    @torch.no_grad()
    def denoise(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Tweedie's estimate E[x_0 | x_t] = (u + σ² s)/α mapped back to raw units. Shapes: x [B, ...] → same."""
        self._check(x)
        u = self.scaler.normalize(x)
        tt = as_time(t, u.shape[0], u.device)
        sigma, alpha = self.sde.marginal_std(tt).to(u.dtype), self.sde.log_alpha(tt).exp().to(u.dtype)
        u0 = (u + append_dims(sigma.square(), u.ndim) * self.score_normalized(u, tt)) / append_dims(alpha, u.ndim)
        return self.scaler.denormalize(u0)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None, device: torch.device | str,
               method: str = "pc", **kwargs) -> Tensor:
        """Draw n latents [n, *latent_shape] (raw units): PC sampler ('pc') or probability-flow ODE ('ode')."""
        shape = (n, *self.latent_shape)
        if method == "pc":
            u = samplers.pc_sample(self.score_normalized, self.sde, shape, generator=generator, device=device, **kwargs)
        elif method == "ode":
            u = samplers.ode_sample(self.score_normalized, self.sde, shape, generator=generator, device=device,
                                    **kwargs)
        else:
            raise ValueError(f"sampling method must be 'pc' or 'ode', got {method!r}")
        return self.scaler.denormalize(u)

    @torch.no_grad()
    def hot_start(self, x: Tensor, generator: torch.Generator | None = None, **kwargs) -> Tensor:
        """Naturalise a given latent with a few reverse steps at small t (`samplers.hot_start`); raw units."""
        self._check(x)
        u = samplers.hot_start(self.score_normalized, self.sde, self.scaler.normalize(x), generator=generator, **kwargs)
        return self.scaler.denormalize(u)


# ----------------------------------------------------------------------------
# Analytic VP-diffused Gaussian prior N(mean, diag(var)): p_t = N(α mean, α² var + σ²).


class GaussianScore(nn.Module):
    """Exact score of a diagonal Gaussian data distribution diffused by the VP-SDE (tests and baselines).

    Shapes: mean, var broadcastable to the latent shape (scalars allowed); x [B, ...].
    """

    def __init__(self, mean: Tensor | float, var: Tensor | float, sde: VPSDE | None = None, kind: str = "z",
                 layer: int = 0) -> None:
        super().__init__()
        mean, var = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(var, dtype=torch.float32)
        if (var <= 0).any():
            raise ValueError("GaussianScore variance must be positive everywhere")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("var", var.clone())
        self.sde = sde or VPSDE()
        self.kind, self.layer = kind, layer
        self.latent_shape = tuple(torch.broadcast_shapes(mean.shape, var.shape))

    def mean_var(self, t: float | Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of p_t broadcast against x."""
        tt = as_time(t, x.shape[0], x.device)
        alpha = append_dims(self.sde.log_alpha(tt).exp().to(x.dtype), x.ndim)
        sigma = append_dims(self.sde.marginal_std(tt).to(x.dtype), x.ndim)
        return alpha * self.mean, alpha.square() * self.var + sigma.square()

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """∇_x log p_t(x) = −(x − α mean) / (α² var + σ²)."""
        m, v = self.mean_var(t, x)
        return -(x - m) / v

    score_normalized = score  # diffusion space = raw units

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None, device: torch.device | str,
               method: str = "pc", **kwargs) -> Tensor:
        fn = {"pc": samplers.pc_sample, "ode": samplers.ode_sample}[method]
        return fn(self.score, self.sde, (n, *self.latent_shape), generator=generator, device=device, **kwargs)

    @torch.no_grad()
    def hot_start(self, x: Tensor, generator: torch.Generator | None = None, **kwargs) -> Tensor:
        return samplers.hot_start(self.score, self.sde, x, generator=generator, **kwargs)
