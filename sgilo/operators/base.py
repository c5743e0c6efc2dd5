"""Forward-operator contract (deepinv's `Physics`): y = N(A(x)) with a linear A, its adjoint, and a separate noise model.

Every operator is an `nn.Module` holding its random state (masks, matrices, signs) as buffers created from an explicit
seed, so it moves with `.to()` and saves/loads with the result.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


# ----------------------------------------------------------------------------
# Noise models: applied after A, never inside it.


class NoiseModel(nn.Module):
    """Identity noise (σ = 0)."""

    sigma: float = 0.0

    def forward(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return y


class GaussianNoise(NoiseModel):
    """y + σ·ε, ε ~ N(0, I)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not (sigma >= 0 and sigma < float("inf")):
            raise ValueError(f"noise sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def forward(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return y + self.sigma * noise


# ----------------------------------------------------------------------------
# Linear operator base class.


class LinearOperator(nn.Module):
    """A linear forward operator A with adjoint Aᵀ and a noise model.

    Subclasses implement `A` and `A_adjoint` (and `A_dagger` where cheap). Shapes: x [B, C, H, W] image in [-1, 1];
    y: operator-specific measurement shape, batched on dim 0.
    """

    def __init__(self, noise: NoiseModel | None = None) -> None:
        super().__init__()
        self.noise = noise if noise is not None else NoiseModel()

    @property
    def sigma(self) -> float:
        """Measurement noise standard deviation (0 for noiseless)."""
        return float(getattr(self.noise, "sigma", 0.0))

    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def A_dagger(self, y: Tensor) -> Tensor:
        """Pseudo-inverse; the default is the adjoint (exact for operators with orthonormal rows)."""
        return self.A_adjoint(y)

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y = noise(A(x))."""
        return self.noise(self.A(x), generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)
