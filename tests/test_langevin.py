"""Langevin on a linear-Gaussian problem (SGILO Eq. 5) against its closed-form posterior and ULA stationary law."""

from __future__ import annotations

import math

import pytest
import torch

from sgilo.priors.sde import VPSDE
from sgilo.solvers.langevin import hot_displacement, langevin_step, reference_step
from sgilo.solvers.rng import StackedGenerator

torch.set_default_dtype(torch.float32)


# ----------------------------------------------------------------------------
# A 3-d problem: "generator" g(θ) = M θ + c (linear, 5-d output), A 3×5, noise σ, prior θ ~ N(m0, S0).


def problem():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(5, 3, generator=g, dtype=torch.float64) * 0.6
    c = torch.randn(5, generator=g, dtype=torch.float64)
    A = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.6
    sigma = 0.7
    m0 = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    S0 = torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 1.5]], dtype=torch.float64)
    theta_true = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    y = A @ (M @ theta_true + c) + sigma * torch.randn(3, generator=g, dtype=torch.float64)
    J = A @ M
    P = J.T @ J / sigma**2 + torch.linalg.inv(S0)                          # posterior precision
    mean = torch.linalg.solve(P, J.T @ (y - A @ c) / sigma**2 + torch.linalg.solve(S0, m0))
    return dict(M=M, c=c, A=A, sigma=sigma, m0=m0, S0=S0, y=y, P=P, mean=mean)


def grad_f(theta: torch.Tensor, p) -> torch.Tensor:
    """∇_θ ‖A(Mθ + c) − y‖² / (2σ²) via autograd through the linear 'generator' (rows of theta are chains)."""
    th = theta.detach().requires_grad_(True)
    x = th @ p["M"].T.to(th.dtype) + p["c"].to(th.dtype)                      # [N, 5]
    r = x @ p["A"].T.to(th.dtype) - p["y"].to(th.dtype)                       # [N, 3]
    f = r.square().sum(1) / (2 * p["sigma"] ** 2)
    return torch.autograd.grad(f.sum(), th)[0]


def prior_score(theta: torch.Tensor, p) -> torch.Tensor:
    S0inv = torch.linalg.inv(p["S0"]).to(theta.dtype)
    return -(theta - p["m0"].to(theta.dtype)) @ S0inv                      # S0⁻¹ symmetric


def grad_f_closed(theta: torch.Tensor, p) -> torch.Tensor:
    """The same gradient in closed form, Jᵀ(Jθ − (y − A c))/σ² with J = A M (cheap for many chains)."""
    J = p["A"] @ p["M"]
    return (theta @ J.T - (p["y"] - p["A"] @ p["c"])) @ J / p["sigma"] ** 2


def run_chains(p, eta: float, steps: int, chains: int, beta: float = 1.0, seed: int = 0,
               autograd: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    theta = torch.zeros(chains, 3, dtype=torch.float64) + 3.0             # start far from the posterior
    grad = grad_f if autograd else grad_f_closed
    for _ in range(steps):
        theta = langevin_step(theta, grad(theta, p), prior_score(theta, p), eta, 1.0, beta, gen)
    return theta


# ----------------------------------------------------------------------------
# Sample mean and covariance match the exact ULA stationary law N(μ, (P(I − ηP/2))⁻¹) to Monte-Carlo precision, and the
# analytic posterior N(μ, P⁻¹) within the O(η) bias.


@pytest.mark.slow  # > 3 s on 2 cores: make test-slow
def test_langevin_matches_analytic_posterior():
    p = problem()
    lam = torch.linalg.eigvalsh(p["P"])
    eta = 0.05 / float(lam.max())                                          # η λ_max = 0.05
    steps = int(math.ceil(10 / (eta * float(lam.min()))))                  # e^{-10} of the initial offset remains
    N = 16_000
    theta = run_chains(p, eta, steps, N)
    emp_mean, emp_cov = theta.mean(0), torch.cov(theta.T)
    post_cov = torch.linalg.inv(p["P"])
    ula_cov = torch.linalg.inv(p["P"] @ (torch.eye(3, dtype=torch.float64) - eta * p["P"] / 2))
    sd = post_cov.diagonal().sqrt()
    # Mean: exact for ULA on a Gaussian; Monte-Carlo std error ≈ sd/√N = 0.008 sd → tolerance 0.035 sd (≈ 4 s.e.).
    assert ((emp_mean - p["mean"]).abs() / sd).max() < 0.035
    # Covariance vs the ULA law: relative s.e. ≤ √(2/N) = 1.1 % → tolerance 4.5 % of sd_i·sd_j.
    scale = torch.outer(sd, sd)
    assert ((emp_cov - ula_cov).abs() / scale).max() < 0.045
    # Covariance vs the exact posterior: ULA bias ≤ η λ_max / 2 ≈ 2.6 % plus MC error → tolerance 7 %.
    assert ((emp_cov - post_cov).abs() / scale).max() < 0.07


# ----------------------------------------------------------------------------
# β = ∞ (no noise) converges to the MAP = the analytic posterior mean of the Gaussian posterior.


def test_map_beta_inf_equals_posterior_mean():
    p = problem()
    lam = torch.linalg.eigvalsh(p["P"])
    eta = 1.0 / float(lam.max())
    theta = run_chains(p, eta, 600, 2, beta=math.inf, autograd=True)   # through autograd, as the solvers do
    assert torch.allclose(theta, p["mean"].expand(2, 3), atol=1e-8)


# ----------------------------------------------------------------------------
# β scales the stationary covariance by 1/β (tempering).


@pytest.mark.slow  # 3 s on 2 cores (long chains): make test-slow
def test_temperature_scales_covariance():
    p = problem()
    eta = 0.1 / float(torch.linalg.eigvalsh(p["P"]).max())
    cov1 = torch.cov(run_chains(p, eta, 800, 10_000, beta=1.0, seed=1).T)
    cov4 = torch.cov(run_chains(p, eta, 800, 10_000, beta=4.0, seed=2).T)
    ratio = cov1.diagonal() / cov4.diagonal()
    assert torch.allclose(ratio, torch.full_like(ratio, 4.0), rtol=0.08)   # s.e. of a variance ratio ≈ 2 %


# ----------------------------------------------------------------------------
# Masked rows do not move; the projection is applied; per-row streams do not depend on the batch layout.


def test_mask_project_and_stacked_streams():
    x = torch.randn(4, 3, 2)
    mask = torch.tensor([0.0, 1.0, 1.0]).reshape(1, 3, 1)
    gens = StackedGenerator(seed=5, chains=2, batch=2)
    out = langevin_step(x, torch.zeros_like(x), None, 0.1, generator=gens, mask=mask,
                        project=lambda v: v / v.norm(dim=2, keepdim=True))
    assert torch.allclose(out[:, 0], x[:, 0] / x[:, 0].norm(dim=1, keepdim=True))
    assert torch.allclose(out[:, 1:].norm(dim=2), torch.ones(4, 2), atol=1e-6)
    # Row (chain 1, image 0) draws the same noise whether 1 or 3 images are in the batch.
    a = StackedGenerator(seed=5, chains=2, batch=1).randn([3])
    b = StackedGenerator(seed=5, chains=2, batch=3).randn([3])
    assert torch.equal(a[1], b[3]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[0], a[1])


def test_bad_step_sizes_raise_one_line():
    x = torch.zeros(2, 3)
    for eta in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="eta"):
            langevin_step(x, x, None, eta)
    with pytest.raises(ValueError, match="beta"):
        langevin_step(x, x, None, 0.1, beta=0.0)


# ----------------------------------------------------------------------------
# Reference hybrid: Δ = r² β(t_h)/N · s, the numbers of docs/original-code.md#how-the-update-relates-to-langevin.


def test_reference_displacement_numbers():
    assert float(VPSDE().beta(0.01)) == pytest.approx(0.2990)
    s = torch.ones(1, 2)
    d = hot_displacement(s, 0.01, 6.0882)
    assert float(d[0, 0]) * 0.1 == pytest.approx(1.108e-3, rel=2e-3)      # τ r_z² β/N (same note)
    out = reference_step(torch.zeros(1, 2), s, 0.1, 0.01, 6.0882, 0.0)
    assert torch.allclose(out, 0.1 * d)
