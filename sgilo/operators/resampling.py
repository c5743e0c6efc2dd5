"""Super-resolution for SGILO (Daras et al., ICML 2022): anti-aliased bicubic downsampling with an exact adjoint.

The reference's `BicubicDownSample(factor)` (reference §2.2) is matched: a 1-D Keys cubic kernel (a = −0.5) of
S = 4·factor taps, k_i = cubic((i − ⌊S/2⌋ + 0.5) / factor), normalised to sum 1, reflect padding of S − factor
(top ⌊·/2⌋, bottom the rest) and stride `factor`, applied separably to rows and columns. Here that map is written as
two small matrices D_H [H/f, H] and D_W [W/f, W] (padding folded in), so A(x) = D_H x D_Wᵀ, the adjoint
Aᵀ(y) = D_Hᵀ y D_W is exact (the reference had none), and the pseudo-inverse is A†(y) = D_H⁺ y (D_W⁺)ᵀ
(the pseudo-inverse of a Kronecker product is the Kronecker product of the pseudo-inverses). Fixed: the reference
resized measurements back to 1024 px with a bilinear `Resize` before the loss; here y is the low-res image itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgilo.operators.base import LinearOperator, NoiseModel, as_image_shape, check_image


# ----------------------------------------------------------------------------
# Keys' cubic convolution kernel with a = −0.5 (Keys 1981, Eq. 15).


def keys_cubic(s: Tensor, a: float = -0.5) -> Tensor:
    s = s.abs()
    inner = (a + 2) * s**3 - (a + 3) * s**2 + 1
    outer = a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
    return torch.where(s <= 1, inner, torch.where(s < 2, outer, torch.zeros_like(s)))


# ----------------------------------------------------------------------------
# Reflect an index into [0, n) (mirror without repeating the edge, as `F.pad(mode="reflect")`), any distance.


def reflect_index(i: Tensor, n: int) -> Tensor:
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i < n, i, period - i)


# ----------------------------------------------------------------------------
# The 1-D downsampling matrix D [n/f, n] of the reference's padded, strided bicubic filter.


def bicubic_matrix(n: int, factor: int) -> Tensor:
    """Row o holds the kernel taps at padded positions o·f + t, folded back into [0, n) by reflection (float64)."""
    S = 4 * factor
    taps = keys_cubic((torch.arange(S, dtype=torch.float64) - S // 2 + 0.5) / factor)
    taps = taps / taps.sum()
    top = (S - factor) // 2
    rows = torch.arange(n // factor)[:, None]                          # [n/f, 1]
    cols = reflect_index(rows * factor + torch.arange(S)[None] - top, n)  # [n/f, S]
    D = torch.zeros(n // factor, n, dtype=torch.float64)
    D.scatter_add_(1, cols, taps.expand(n // factor, S).clone())
    return D


# ----------------------------------------------------------------------------
# A(x) = D_H x D_Wᵀ per channel.


class SuperResolution(LinearOperator):
    """Bicubic anti-aliased ×`factor` downsampling (reference BicubicDownSample, exact adjoint and pseudo-inverse).

    Shapes: x [B, C, H, W]; y [B, C, H/f, W/f]. `factor` must divide H and W.
    """

    def __init__(self, factor: int, image_shape: tuple[int, int, int], noise: NoiseModel | None = None) -> None:
        super().__init__(noise)
        self.image_shape = as_image_shape(image_shape)
        _, H, W = self.image_shape
        if not (isinstance(factor, int) and factor >= 1):
            raise ValueError(f"superres factor: expected an integer >= 1, got {factor!r}")
        if H % factor or W % factor:
            raise ValueError(f"superres factor {factor} does not divide the image size {H}x{W}")
        self.factor = factor
        D_H, D_W = bicubic_matrix(H, factor), bicubic_matrix(W, factor)
        self.register_buffer("D_H", D_H.float())                              # [H/f, H]
        self.register_buffer("D_W", D_W.float())                              # [W/f, W]
        self.register_buffer("D_H_pinv", torch.linalg.pinv(D_H).float())      # [H, H/f]
        self.register_buffer("D_W_pinv", torch.linalg.pinv(D_W).float())      # [W, W/f]

    @property
    def measurement_shape(self) -> tuple[int, int, int]:
        C, H, W = self.image_shape
        return C, H // self.factor, W // self.factor

    def _check_y(self, y: Tensor) -> Tensor:
        return check_image(y, self.measurement_shape, "y")

    def A(self, x: Tensor) -> Tensor:
        check_image(x, self.image_shape)
        return self.D_H.to(x.dtype) @ x @ self.D_W.to(x.dtype).T                  # [B, C, H/f, W/f]

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return self.D_H.to(y.dtype).T @ y @ self.D_W.to(y.dtype)                  # [B, C, H, W]

    def A_dagger(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return self.D_H_pinv.to(y.dtype) @ y @ self.D_W_pinv.to(y.dtype).T       # [B, C, H, W]

    def get_config(self) -> dict:
        return {"factor": self.factor, "image_shape": list(self.image_shape)}
