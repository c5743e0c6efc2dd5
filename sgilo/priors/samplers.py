"""Samplers for VP-SDE score priors (Song et al., ICLR 2021, "Score-Based Generative Modeling through SDEs"):
the reverse-SDE predictor–corrector sampler (Euler–Maruyama predictor + Langevin corrector, Alg. 1/5), the
probability-flow ODE (Eq. 13; Euler or Heun) and SGILO's hot start (Daras et al. 2022; ``sgilo:score/samplers.py``).

Every sampler takes ``score_fn(x, t) -> ∇_x log p_t(x)`` (x [B, ...], t [B]) in the space the SDE diffuses
(normalised latents for a `LatentPrior`), works on latents of any rank, and draws all noise from ``generator``.
Fixes of the original (docs/original-code.md#bug-7 and #bug-11): samplers start from the state they are given;
``eps`` and ``n_steps`` are honoured; predictor steps use the actual spacing of the time grid; Langevin step sizes use
per-sample norms so a sample does not depend on the rest of its batch.

Step-size rule. Unadjusted Langevin has no Metropolis test, so every corrector step inflates the variance of a
coordinate with variance v by about ε/(2v); with Song's CIFAR value snr = 0.16 a 64-d Gaussian comes out 5–15 % too
wide, with snr = 0.05 (our default) 2–4 %. The ‖ξ‖/‖s‖ ratio concentrates only in high dimension (our latents have
thousands of coordinates); for toy 2-D data use ``n_corrector=0`` (reverse Euler–Maruyama alone).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sgilo.priors.sde import VPSDE, as_time
from sgilo.utils.shapes import append_dims

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# ----------------------------------------------------------------------------
# Langevin corrector, step size ε = 2 α_i (snr ‖ξ‖ / ‖s‖)² (Song et al. 2021, Alg. 5).


def langevin_corrector(score_fn: ScoreFn, sde: VPSDE, x: Tensor, t: Tensor, snr: float,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """One corrector step at time t [B]. Returns (x, x_mean) of shape [B, ...]."""
    s = score_fn(x, t)
    noise = _randn(x, generator)
    s_norm = s.flatten(1).norm(dim=1).clamp_min(1e-12)
    n_norm = noise.flatten(1).norm(dim=1)
    alpha = sde.discrete_alpha(t, x.shape[0], x.device).to(x.dtype)
    step = append_dims(2 * alpha * (snr * n_norm / s_norm).square(), x.ndim)     # [B, 1, ...]
    x_mean = x + step * s
    return x_mean + (2 * step).sqrt() * noise, x_mean


# ----------------------------------------------------------------------------
# Euler–Maruyama predictor for the reverse SDE dx = [f − g² s] dt + g dw̄ (Song Eq. 6), dt < 0.


def euler_maruyama_predictor(score_fn: ScoreFn, sde: VPSDE, x: Tensor, t: Tensor, dt: float,
                             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """One step from t to t + dt (dt < 0). Returns (x, x_mean)."""
    drift = sde.reverse_drift(x, t, score_fn(x, t))
    _, g = sde.sde(x, t)
    x_mean = x + drift * dt
    return x_mean + append_dims(g, x.ndim) * abs(dt) ** 0.5 * _randn(x, generator), x_mean


# ----------------------------------------------------------------------------
# Reverse predictor–corrector integration of a given state along a decreasing time grid.


def reverse_pc(score_fn: ScoreFn, sde: VPSDE, x: Tensor, times: Tensor, snr: float = 0.05, n_corrector: int = 1,
               denoise: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Run [corrector × n_corrector, predictor t_i → t_{i+1}] for i = 0..len(times)−2, starting at ``x`` (time
    times[0]). ``denoise`` returns the last predictor mean (no noise added at the final step, Song et al. App. G).
    Shapes: x [B, ...], times [n+1] float64 decreasing → [B, ...]."""
    if times.ndim != 1 or len(times) < 2 or not bool((times[1:] < times[:-1]).all()):
        raise ValueError(f"times must be a strictly decreasing 1-D grid of >= 2 points, got {times}")
    x_mean = x
    for i in range(len(times) - 1):
        t = as_time(float(times[i]), x.shape[0], x.device)
        for _ in range(n_corrector):
            x, x_mean = langevin_corrector(score_fn, sde, x, t, snr, generator)
        x, x_mean = euler_maruyama_predictor(score_fn, sde, x, t, float(times[i + 1] - times[i]), generator)
    return x_mean if denoise else x


# ----------------------------------------------------------------------------
# PC sampling from the prior N(0, I) at T down to eps (Song et al. 2021, Alg. 1 with Alg. 5).


@torch.no_grad()
def pc_sample(score_fn: ScoreFn, sde: VPSDE, shape: tuple[int, ...], *, generator: torch.Generator | None,
              device: torch.device | str, n_steps: int = 1000, snr: float = 0.05, n_corrector: int = 1,
              eps: float = 1e-3, denoise: bool = True, x_init: Tensor | None = None) -> Tensor:
    """Draw [B, ...] = ``shape`` samples; ``x_init`` replaces the draw from the prior (then shape is ignored)."""
    x = sde.prior_sampling(shape, generator, device) if x_init is None else x_init
    times = torch.linspace(sde.T, eps, n_steps + 1, dtype=torch.float64)
    return reverse_pc(score_fn, sde, x, times, snr, n_corrector, denoise, generator)


# ----------------------------------------------------------------------------
# Probability-flow ODE dx/dt = f − ½ g² s (Song Eq. 13) from T to eps, Euler or Heun (2nd order, Karras et al. 2022).


@torch.no_grad()
def ode_sample(score_fn: ScoreFn, sde: VPSDE, shape: tuple[int, ...], *, generator: torch.Generator | None,
               device: torch.device | str, n_steps: int = 100, method: str = "heun", eps: float = 1e-3,
               x_init: Tensor | None = None) -> Tensor:
    """Deterministic given x_T (drawn with ``generator`` unless ``x_init``). Returns [B, ...]."""
    if method not in ("euler", "heun"):
        raise ValueError(f"ODE method must be 'euler' or 'heun', got {method!r}")
    x = sde.prior_sampling(shape, generator, device) if x_init is None else x_init
    times = torch.linspace(sde.T, eps, n_steps + 1, dtype=torch.float64)

    def d(x_: Tensor, t_: float) -> Tensor:
        t_b = as_time(t_, x_.shape[0], x_.device)
        return sde.reverse_drift(x_, t_b, score_fn(x_, t_b), probability_flow=True)

    for i in range(n_steps):
        t0, t1 = float(times[i]), float(times[i + 1])
        d0 = d(x, t0)
        x_next = x + d0 * (t1 - t0)
        if method == "heun":
            x_next = x + 0.5 * (d0 + d(x_next, t1)) * (t1 - t0)
        x = x_next
    return x


# ----------------------------------------------------------------------------
# Hot start: a few reverse PC steps at small t from a given latent (SGILO's "hot sampler", fixed;
# docs/original-code.md#sampling-the-hot-sampler).


@torch.no_grad()
def hot_start(score_fn: ScoreFn, sde: VPSDE, x: Tensor, *, t: float = 0.01, n_steps: int = 1, eps: float = 1e-3,
              snr: float = 0.05, n_corrector: int = 1, perturb: bool = False, schedule: str = "anneal",
              denoise: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Move a given latent x towards high prior density.

    ``perturb`` first diffuses x to time t, x ← α(t) x + σ(t) ξ (SDEdit, Meng et al. 2022), which lets a large t
    (≈ 0.3–0.5) pull a far off-manifold latent onto the data. ``schedule='anneal'`` then integrates the reverse SDE
    from t down to ``eps`` in ``n_steps`` PC steps; ``schedule='fixed'`` reproduces the reference: ``n_steps``
    [corrector, predictor] iterations all at time t with dt = −T/N. Shapes: x [B, ...] → [B, ...].
    """
    if schedule == "anneal":
        if not 0 < eps < t <= sde.T:
            raise ValueError(f"hot start needs 0 < eps < t <= T, got eps={eps}, t={t}")
        times = torch.linspace(t, eps, n_steps + 1, dtype=torch.float64)
    elif schedule != "fixed":
        raise ValueError(f"hot-start schedule must be 'anneal' or 'fixed', got {schedule!r}")
    if perturb:
        mean, std = sde.marginal_prob(x, t)
        x = mean + append_dims(std, x.ndim) * _randn(x, generator)
    if schedule == "anneal":
        return reverse_pc(score_fn, sde, x, times, snr, n_corrector, denoise, generator)
    tt = as_time(t, x.shape[0], x.device)
    x_mean = x
    for _ in range(n_steps):
        for _ in range(n_corrector):
            x, x_mean = langevin_corrector(score_fn, sde, x, tt, snr, generator)
        x, x_mean = euler_maruyama_predictor(score_fn, sde, x, tt, -sde.T / sde.N, generator)
    return x_mean if denoise else x
