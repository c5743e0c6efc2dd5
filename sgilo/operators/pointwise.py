"""Per-pixel operators for SGILO (Daras et al., ICML 2022): identity (denoising) and luma (colorization).

The original code had the identity as the only route to denoising and no noise model existed; here noise is the
operator's separate `NoiseModel`. The original colorizer (``sgilo:utils.py``) replicated the luma to 3 channels; here y
is the single luma channel [B, 1, H, W] (the replicated version has the same information and a 3× larger, rank-deficient
residual).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgilo.operators.base import LinearOperator, NoiseModel, check_image

LUMA = (0.2989, 0.5870, 0.1140)  # ITU-R BT.601 weights, as in the reference colorizer


# ----------------------------------------------------------------------------
# A = I; the measurement noise comes from the noise model.


class Denoising(LinearOperator):
    """A(x) = x, Aᵀ = A† = I. Shapes: x, y [B, C, H, W]."""

    def __init__(self, noise: NoiseModel | None = None) -> None:
        super().__init__(noise)

    def A(self, x: Tensor) -> Tensor:
        return check_image(x, None)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return check_image(y, None, "y")


# ----------------------------------------------------------------------------
# y = 0.2989 R + 0.5870 G + 0.1140 B (the original's weights, ``sgilo:utils.py``).


class Colorization(LinearOperator):
    """A(x) = Σ_c w_c x_c with BT.601 luma weights w; Aᵀ(y) = w y; A†(y) = w y / ‖w‖².

    Shapes: x [B, 3, H, W]; y [B, 1, H, W].
    """

    def __init__(self, noise: NoiseModel | None = None) -> None:
        super().__init__(noise)
        self.register_buffer("weights", torch.tensor(LUMA)[None, :, None, None])  # [1, 3, 1, 1]

    def A(self, x: Tensor) -> Tensor:
        check_image(x, None)
        if x.shape[1] != 3:
            raise ValueError(f"colorize: expected x with 3 channels [B, 3, H, W], got {tuple(x.shape)}")
        return (x * self.weights.to(x.dtype)).sum(1, keepdim=True)  # [B, 1, H, W]

    def A_adjoint(self, y: Tensor) -> Tensor:
        check_image(y, None, "y")
        if y.shape[1] != 1:
            raise ValueError(f"colorize: expected y with 1 channel [B, 1, H, W], got {tuple(y.shape)}")
        return y * self.weights.to(y.dtype)  # [B, 3, H, W]

    def A_dagger(self, y: Tensor) -> Tensor:
        w = self.weights.to(y.dtype)
        return self.A_adjoint(y) / w.square().sum()
