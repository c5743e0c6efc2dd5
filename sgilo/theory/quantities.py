"""Hand–Voroninski quantities for random ReLU generators, and distances between empirical laws.

From Hand & Voroninski, "Global guarantees for enforcing deep generative priors by empirical risk" (COLT 2018),
used by the theory of Daras et al., "Score-Guided Intermediate Layer Optimization" (ICML 2022):

    g(θ) = arccos( ((π − θ) cos θ + sin θ) / π ),   θ̄_0 = ∠(z, z*),   θ̄_i = g(θ̄_{i−1}),
    h_{z*}(z) = 2^{−d} z − 2^{−d} [ Π_{i=0}^{d−1} (π − θ̄_i)/π · z*
                                   + Σ_{i=0}^{d−1} (sin θ̄_i / π) Π_{j=i+1}^{d−1} (π − θ̄_j)/π · ‖z*‖ z/‖z‖ ],
    ρ_d = Σ_{i=0}^{d−1} (sin θ̌_i / π) Π_{j=i+1}^{d−1} (π − θ̌_j)/π,   θ̌_0 = π,  θ̌_i = g(θ̌_{i−1}),

so that h_{z*} vanishes exactly at z* and at −ρ_d z* (and E ∇f ≈ h_{z*} for W_i ~ N(0, 1/n_i), A ~ N(0, 1/m)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# The HV angle map g(θ) = arccos(((π − θ)cos θ + sin θ)/π).


def angle_map(theta: Tensor) -> Tensor:
    """g(θ) of HV (Eq. for θ̄_i); elementwise, θ ∈ [0, π]."""
    c = ((math.pi - theta) * torch.cos(theta) + torch.sin(theta)) / math.pi
    return torch.arccos(c.clamp(-1.0, 1.0))


# ----------------------------------------------------------------------------
# The sequence θ̄_0, …, θ̄_{d−1} stacked on a new last axis.


def theta_bars(theta0: Tensor, depth: int) -> Tensor:
    """[..., ] → [..., d] with θ̄_0 = theta0, θ̄_i = g(θ̄_{i−1})."""
    out = [theta0]
    for _ in range(depth - 1):
        out.append(angle_map(out[-1]))
    return torch.stack(out, dim=-1)


# ----------------------------------------------------------------------------
# The two coefficients of ĥ: a = Π_i (π − θ̄_i)/π and b = Σ_i (sin θ̄_i/π) Π_{j>i} (π − θ̄_j)/π.


def hv_coefficients(theta0: Tensor, depth: int) -> tuple[Tensor, Tensor]:
    """Coefficients (a, b) of z* and ‖z*‖ z/‖z‖ in ĥ_{z,z*}, each of the shape of ``theta0``."""
    th = theta_bars(theta0, depth)  # [..., d]
    frac = (math.pi - th) / math.pi  # [..., d]
    a = frac.prod(-1)
    b = torch.zeros_like(theta0)
    for i in range(depth):
        b = b + torch.sin(th[..., i]) / math.pi * frac[..., i + 1:].prod(-1)
    return a, b


# ----------------------------------------------------------------------------
# ρ_d: the spurious critical point of the expected loss is −ρ_d z*.


def rho_d(depth: int) -> float:
    """ρ_d = b(θ̌_0 = π) (HV Thm. 2); ρ_1 = 0, ρ_2 = 1/π, ρ_d → 1 slowly as d grows."""
    _, b = hv_coefficients(torch.tensor(math.pi, dtype=torch.float64), depth)
    return float(b)


# ----------------------------------------------------------------------------
# The closed-form expected gradient h_{z*}(z).


def expected_gradient(z: Tensor, z_star: Tensor, depth: int) -> Tensor:
    """h_{z*}(z) of HV for ``z`` [..., k] and ``z_star`` broadcastable to it → [..., k].

    At z = 0 the direction z/‖z‖ is undefined; there the ‖z*‖ term is taken as 0 (a subgradient choice).
    """
    assert_shape(z, [*([None] * (z.ndim - 1)), z_star.shape[-1]], "z")
    z_star = z_star.expand_as(z)
    nz = z.norm(dim=-1, keepdim=True)
    ns = z_star.norm(dim=-1, keepdim=True)
    safe = nz.clamp_min(torch.finfo(z.dtype).tiny)
    cos = ((z * z_star).sum(-1, keepdim=True) / (safe * ns)).clamp(-1.0, 1.0)
    a, b = hv_coefficients(torch.arccos(cos)[..., 0], depth)
    unit = torch.where(nz > 0, z / safe, torch.zeros_like(z))
    h_hat = a[..., None] * z_star + b[..., None] * ns * unit
    return (z - h_hat) / 2 ** depth


# ----------------------------------------------------------------------------
# 1-D Wasserstein-1 distance between empirical laws, batched: ∫ |F_a − F_b| via equal quantiles.


def w1_empirical(a: Tensor, b: Tensor) -> Tensor:
    """W1 between the empirical laws of ``a`` [..., N] and ``b`` [..., M] (last axis = samples) → [...].

    Uses W1 = ∫_0^1 |F_a^{−1}(u) − F_b^{−1}(u)| du, evaluated exactly on the merged grid of quantile levels.
    """
    sa, sb = a.sort(-1).values, b.sort(-1).values
    n, m = sa.shape[-1], sb.shape[-1]
    levels = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                        torch.arange(1, m + 1, dtype=torch.float64) / m]).unique()  # sorted, ends at 1
    widths = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), levels])).to(a.dtype)
    mid = (levels - widths.to(torch.float64) / 2)
    ia = (mid * n).floor().long().clamp_max(n - 1)
    ib = (mid * m).floor().long().clamp_max(m - 1)
    return ((sa[..., ia] - sb[..., ib]).abs() * widths).sum(-1)


# ----------------------------------------------------------------------------
# Local quadratic model of the stationary law of discretised Langevin: E‖z − z*‖² = tr[H^{−1}(I − ηH/2)^{−1}]/β.


def quadratic_msd(H: Tensor, beta: float, eta: float) -> Tensor:
    """Stationary E‖z − z*‖² of z ← z − ηH(z − z*) + sqrt(2η/β)ξ, for Hessians ``H`` [..., k, k] → [...].

    The continuous-time (η → 0) value is tr(H^{−1})/β; the factor (I − ηH/2)^{−1} is the exact ULA correction for a
    Gaussian target (stationary covariance Σ solves Σ = (I − ηH)Σ(I − ηH) + (2η/β) I).
    """
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    M = H @ (eye - eta * H / 2)
    return torch.linalg.inv(M).diagonal(dim1=-2, dim2=-1).sum(-1) / beta
