"""Latent parameterisations: z, w, w+ and the Gaussianised w+ of PULSE/ILO/SGILO, plus spherical projection.

Gaussianised w+ (Menon et al. 2020, PULSE; used by ILO and SGILO): each w+ row is w = LeakyReLU_0.2(σ ⊙ z + μ) with a
per-coordinate affine fit (μ, σ) of the mapping outputs passed through LeakyReLU(5), which inverts the network's final
LeakyReLU(0.2) (0.2 · 5 = 1). A standard-normal z then lands near the distribution of mapped latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgilo.generator.stylegan2 import MappingNetwork
from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# w = LeakyReLU_0.2(σ ⊙ z + μ), row-wise (MappingProxy of ``sgilo:utils.py`` and ``ilo:ilo_stylegan.py``).


class GaussianizedW(nn.Module):
    """Map Gaussianised codes z [B, L, D] to w+ [B, L, D] with the fitted (μ, σ) buffers (frozen)."""

    def __init__(self, mu: Tensor, sigma: Tensor) -> None:
        super().__init__()
        if mu.shape != sigma.shape or mu.ndim != 1:
            raise ValueError(f"mu and sigma must both be [w_dim] vectors, got {tuple(mu.shape)} and {tuple(sigma.shape)}")
        self.register_buffer("mu", mu.float().clone())
        self.register_buffer("sigma", sigma.float().clone())

    def forward(self, z: Tensor) -> Tensor:
        assert_shape(z, [None, None, self.mu.shape[0]], "z")
        return F.leaky_relu(z * self.sigma + self.mu, 0.2)

    def inverse(self, w: Tensor) -> Tensor:
        """z = (LeakyReLU_5(w) − μ) / σ, the exact inverse of `forward`."""
        return (F.leaky_relu(w, 5.0) - self.mu) / self.sigma


# ----------------------------------------------------------------------------
# Fit (μ, σ) on mapping outputs passed through LeakyReLU(5) (``sgilo:utils.py``; PULSE.py uses 10^6 samples).


@torch.no_grad()
def fit_gaussianized_w(mapping: MappingNetwork, num_samples: int = 100_000, batch: int = 10_000,
                       generator: torch.Generator | None = None) -> GaussianizedW:
    """Moments of LeakyReLU_5(f(z)), z ~ N(0, I), over ``num_samples`` draws (float64 accumulation)."""
    device = mapping.w_avg.device
    s1 = torch.zeros(mapping.w_dim, dtype=torch.float64, device=device)
    s2 = torch.zeros_like(s1)
    done = 0
    while done < num_samples:
        n = min(batch, num_samples - done)
        z = torch.randn([n, mapping.z_dim], generator=generator, device=device)
        v = F.leaky_relu(mapping(z, broadcast=False), 5.0).double()       # [n, w_dim]
        s1 += v.sum(0)
        s2 += v.square().sum(0)
        done += n
    mean = s1 / num_samples
    std = (s2 / num_samples - mean.square()).clamp_min(0).sqrt()
    return GaussianizedW(mean.float(), std.float())


# ----------------------------------------------------------------------------
# Spherical projection Π: rescale each vector over dims >= 2 back to a stored radius (PULSE SphericalOptimizer).


def sphere_radius(x: Tensor, eps: float = 1e-9) -> Tensor:
    """r = sqrt(Σ_{dims ≥ 2} x² + eps), keepdim. For z [B, L, D] one radius per row; for noise [B, 1, r, r] per map."""
    if x.ndim < 3:
        raise ValueError(f"sphere_radius expects at least 3 dims ([B, L, D] or [B, 1, r, r]), got {tuple(x.shape)}")
    dims = list(range(2, x.ndim))
    return (x.square().sum(dims, keepdim=True) + eps).sqrt()


def project_to_sphere(x: Tensor, radius: Tensor, eps: float = 1e-9) -> Tensor:
    """Π(x) = x / ‖x‖ · radius, norms over dims >= 2.

    For noise maps stored as [B, 1, r, r] the norm is per map, as in ILO/PULSE; the sgilo reference stored noises as
    [B, r, r] and so normalised every row separately (docs/original-code.md#spherical-projection; not reproduced
    here).
    """
    return x / sphere_radius(x, eps) * radius
