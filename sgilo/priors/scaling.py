"""Normalisation of latents before the score network (SGILO, Daras et al. 2022; original: ``sgilo:dataloaders.py``).

The prior works on u = (x − shift) / scale. Two modes, both stored as buffers in the prior's checkpoint:

* ``"standard"`` (default): per-feature mean and standard deviation of the training latents (one value per element of
  the latent shape: [L, D] for z, [C, r, r] for h). The VP-SDE ends in N(0, I), so data with zero mean and unit
  variance per coordinate make the forward process reach the prior at the same rate in every coordinate, and the
  statistics are stable under more data (moments converge at 1/√n).
* ``"minmax"``: the original's (x − min) / (max − min) with one global min and max, mapping the data into [0, 1]
  (docs/original-code.md#score-training-data-and-normalisation). Kept for parity only: the range depends on the most
  extreme sample seen (it grows with the data set), the data end up off-centre with a small, uneven per-coordinate
  variance, and the original even reused the same constants for all layers (docs/original-code.md#bug-13).

A score transforms as ∇_x log p(x) = ∇_u log p(u) / scale (chain rule through u = (x − shift)/scale).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MODES = ("standard", "minmax")


# ----------------------------------------------------------------------------
# The affine map x ↔ u with stored statistics.


class LatentScaler(nn.Module):
    """u = (x − shift) / scale with buffers ``shift``/``scale`` of shape ``latent_shape`` (broadcast over the batch)."""

    def __init__(self, latent_shape: tuple[int, ...], mode: str = "standard") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"scaler mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.latent_shape = tuple(latent_shape)
        self.register_buffer("shift", torch.zeros(self.latent_shape))
        self.register_buffer("scale", torch.ones(self.latent_shape))

    @torch.no_grad()
    def fit(self, data: Tensor, min_std: float = 1e-4) -> LatentScaler:
        """Set the statistics from training latents ``data`` [N, *latent_shape] (float64 accumulation)."""
        if tuple(data.shape[1:]) != self.latent_shape or data.shape[0] < 2:
            raise ValueError(f"scaler.fit expects [N >= 2, {list(self.latent_shape)}], got {tuple(data.shape)}")
        d = data.double()
        if self.mode == "standard":
            self.shift.copy_(d.mean(0))
            self.scale.copy_(d.std(0).clamp_min(min_std))
        else:
            lo, hi = d.min(), d.max()
            self.shift.fill_(float(lo))
            self.scale.fill_(float(hi - lo) + 1e-8)
        return self

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale

    def denormalize(self, u: Tensor) -> Tensor:
        return u * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"mode={self.mode}, latent_shape={self.latent_shape}"
