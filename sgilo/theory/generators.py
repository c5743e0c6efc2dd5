"""Random expansive ReLU generators and Gaussian measurements, batched over problem seeds.

Setting of Hand & Voroninski, "Global guarantees for enforcing deep generative priors by empirical risk" (COLT 2018)
and of the theory section of Daras, Dagan, Dimakis, Daskalakis, "Score-Guided Intermediate Layer Optimization: Fast
Langevin Mixing for Inverse Problems" (ICML 2022):

    G(z) = ReLU(W_d … ReLU(W_1 z)),   W_i ∈ R^{n_i × n_{i−1}}, (W_i)_{ab} ~ N(0, 1/n_i),   n_0 = k,
    A ∈ R^{m × n_d}, A_{ab} ~ N(0, 1/m),   y = A G(z*),
    f(z) = ½ ‖A G(z) − A G(z*)‖².

A `RandomReLUProblem` holds S independent problems (one per seed) as stacked tensors, and every method takes chains
``z`` of shape ``[S, C, k]`` (C chains per problem), so whole experiments run as a few batched matmuls per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# Configuration of one random problem family (depth, latent size, widths, number of measurements).


@dataclass(frozen=True)
class ReLUGeneratorConfig:
    k: int = 2                          # latent dimension n_0
    depth: int = 2                      # number of ReLU layers d
    expansion: float = 1.0              # c in n_i ≥ c · n_{i−1} · log n_{i−1}
    min_width: int = 32                 # floor on every hidden width (log 2 < 1 would otherwise shrink k = 2)
    widths: tuple[int, ...] | None = None  # explicit (n_1, …, n_d); overrides expansion/min_width
    m_factor: float = 5.0               # number of measurements m = ceil(m_factor · k · d)
    m: int | None = None                # explicit m; overrides m_factor
    z_norm: float = 1.0                 # ‖z*‖; z* is uniform on the sphere of this radius
    dtype: str = "float64"              # "float64" or "float32"


# ----------------------------------------------------------------------------
# Expansive widths n_i = max(min_width, ceil(c · n_{i−1} · ln n_{i−1})) (HV expansivity condition).


def expansive_widths(cfg: ReLUGeneratorConfig) -> tuple[int, ...]:
    """Return (n_1, …, n_d) from ``cfg`` (explicit ``widths`` if given, else the expansivity rule)."""
    if cfg.widths is not None:
        if len(cfg.widths) != cfg.depth:
            raise ValueError(f"widths: expected {cfg.depth} entries (one per layer), got {len(cfg.widths)}")
        return tuple(int(n) for n in cfg.widths)
    widths, prev = [], cfg.k
    for _ in range(cfg.depth):
        prev = max(cfg.min_width, math.ceil(cfg.expansion * prev * math.log(max(prev, 2))))
        widths.append(prev)
    return tuple(widths)


# ----------------------------------------------------------------------------
# Number of measurements m.


def num_measurements(cfg: ReLUGeneratorConfig) -> int:
    """m = cfg.m if given, else ceil(m_factor · k · d)."""
    return int(cfg.m) if cfg.m is not None else math.ceil(cfg.m_factor * cfg.k * cfg.depth)


# ----------------------------------------------------------------------------
# S stacked random problems: weights, measurement matrix, ground truth and measurements.


@dataclass
class RandomReLUProblem:
    """S independent problems. Shapes: ``weights[i]`` [S, n_{i+1}, n_i], ``A`` [S, m, n_d], ``z_star`` [S, k],
    ``y`` [S, m]."""

    weights: list[Tensor]
    A: Tensor
    z_star: Tensor
    y: Tensor

    @property
    def k(self) -> int:
        return self.z_star.shape[-1]

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def n_seeds(self) -> int:
        return self.z_star.shape[0]

    # Forward pass G(z) with the ReLU activation masks of every layer.
    def forward(self, z: Tensor) -> tuple[Tensor, list[Tensor]]:
        """G(z) for chains ``z`` [S, C, k] → ([S, C, n_d], masks [S, C, n_i] per layer)."""
        x, masks = z, []
        for W in self.weights:
            pre = x @ W.transpose(-1, -2)  # [S, C, n_i]
            mask = pre > 0
            masks.append(mask)
            x = pre * mask
        return x, masks

    # f(z) = ½‖A G(z) − y‖² for chains z.
    def loss(self, z: Tensor) -> Tensor:
        """f(z) for ``z`` [S, C, k] → [S, C]."""
        x, _ = self.forward(z)
        r = x @ self.A.transpose(-1, -2) - self.y[:, None, :]  # [S, C, m]
        return 0.5 * r.square().sum(-1)

    # f and its (sub)gradient ∇f(z) = Λ_zᵀ Aᵀ (A G(z) − y), Λ_z = Π_i diag(1[W_i x_{i−1} > 0]) W_i.
    def loss_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """f(z) [S, C] and ∇f(z) [S, C, k] for ``z`` [S, C, k]; ReLU'(0) := 0 at the non-smooth points."""
        assert_shape(z, [self.n_seeds, None, self.k], "z")
        x, masks = self.forward(z)
        r = x @ self.A.transpose(-1, -2) - self.y[:, None, :]  # [S, C, m]
        g = r @ self.A  # [S, C, n_d]
        for W, mask in zip(reversed(self.weights), reversed(masks), strict=True):
            g = (g * mask) @ W  # [S, C, n_{i−1}]
        return 0.5 * r.square().sum(-1), g

    # Hessian of f on the linear region containing z*: H = (A Λ_{z*})ᵀ (A Λ_{z*}).
    def hessian_at_star(self) -> Tensor:
        """Exact Hessian of the quadratic piece of f around z* → [S, k, k] (G is piecewise linear)."""
        J = torch.eye(self.k, dtype=self.A.dtype, device=self.A.device).expand(self.n_seeds, -1, -1)
        x = self.z_star[:, :, None]  # [S, k, 1]
        for W in self.weights:
            pre = W @ x  # [S, n_i, 1]
            mask = (pre > 0).to(W.dtype)
            x, J = pre * mask, mask * (W @ J)  # [S, n_i, 1], [S, n_i, k]
        AJ = self.A @ J  # [S, m, k]
        return AJ.transpose(-1, -2) @ AJ


# ----------------------------------------------------------------------------
# Draw one problem per seed with its own torch.Generator, so a problem depends on its seed only.


def sample_problems(cfg: ReLUGeneratorConfig, seeds: list[int], device: torch.device | None = None
                    ) -> RandomReLUProblem:
    """Draw W_i ~ N(0, 1/n_i), A ~ N(0, 1/m), z* uniform on the sphere of radius ``z_norm``, for each seed.

    Shapes: returns a problem with S = len(seeds).
    """
    if cfg.dtype not in ("float64", "float32"):
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {cfg.dtype!r}")
    dtype = getattr(torch, cfg.dtype)
    dims = (cfg.k, *expansive_widths(cfg))
    m = num_measurements(cfg)
    Ws: list[list[Tensor]] = [[] for _ in range(cfg.depth)]
    As, zs = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        for i in range(cfg.depth):
            Ws[i].append(torch.randn(dims[i + 1], dims[i], generator=gen, dtype=torch.float64) / math.sqrt(dims[i + 1]))
        As.append(torch.randn(m, dims[-1], generator=gen, dtype=torch.float64) / math.sqrt(m))
        z = torch.randn(cfg.k, generator=gen, dtype=torch.float64)
        zs.append(cfg.z_norm * z / z.norm())
    weights = [torch.stack(w).to(device=device, dtype=dtype) for w in Ws]
    A = torch.stack(As).to(device=device, dtype=dtype)
    z_star = torch.stack(zs).to(device=device, dtype=dtype)
    placeholder = RandomReLUProblem(weights=weights, A=A, z_star=z_star, y=A[:, :, 0])
    return with_z_star(placeholder, z_star)


# ----------------------------------------------------------------------------
# Replace the ground truth z* (and hence y = A G(z*)) of every problem.


def with_z_star(problem: RandomReLUProblem, z_star: Tensor) -> RandomReLUProblem:
    """Return a copy of ``problem`` with ground truth ``z_star`` [S, k] and measurements recomputed."""
    assert_shape(z_star, [problem.n_seeds, problem.k], "z_star")
    z_star = z_star.to(problem.A)
    x, _ = problem.forward(z_star[:, None, :])  # [S, 1, n_d]
    y = (x @ problem.A.transpose(-1, -2))[:, 0, :]  # [S, m]
    return RandomReLUProblem(weights=problem.weights, A=problem.A, z_star=z_star, y=y)


# ----------------------------------------------------------------------------
# Random unit directions [S, C, k] from one generator.


def random_directions(S: int, C: int, k: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Uniform directions on the unit sphere of R^k, shape [S, C, k]."""
    u = torch.randn(S, C, k, generator=generator, dtype=torch.float64)
    return (u / u.norm(dim=-1, keepdim=True)).to(dtype)
