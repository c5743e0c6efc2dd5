"""Super-resolution for SGILO (Daras et al., ICML 2022): anti-aliased bicubic downsampling with an exact adjoint.

The original `BicubicDownSample(factor)` (ilo:utils.py) is matched: a 1-D Keys cubic kernel (a = −0.5) of
S = 4·factor taps, k_i = cubic((i − ⌊S/2⌋ + 0.5) / factor), normalised to sum 1, reflect padding of S − factor
(top ⌊·/2⌋, bottom the rest) and stride `factor`, applied separably to rows and columns. Here that map is written as
two small matrices D_H [H/f, H] and D_W [W/f, W] (padding folded in), so A(x) = D_H x D_Wᵀ, the adjoint
Aᵀ(y) = D_Hᵀ y D_W is exact (the reference had none), and the pseudo-inverse is A†(y) = D_H⁺ y (D_W⁺)ᵀ
(the pseudo-inverse of a Kronecker product is the Kronecker product of the pseudo-inverses). Fixed: the reference
resized measurements back to 1024 px with a bilinear `Resize` before the loss; here y is the low-res image itself.
"""

from __future__ import annotations

import math

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


# ----------------------------------------------------------------------------
# The 1-D resampling matrix R [n_out, n_in] for ANY ratio s = n_in / n_out (Keys cubic, anti-aliased when s > 1).


def resample_matrix(n_in: int, n_out: int) -> Tensor:
    """Row o is the cubic kernel centred at input coordinate c_o = (o + ½)·s − ½, s = n_in / n_out, widened by
    max(s, 1) (anti-aliasing when downsampling, as PIL's and torch's `antialias=True` bicubic resize), its taps folded
    into [0, n_in) by reflection and normalised to sum 1 (float64). For an even integer s this is
    `bicubic_matrix(n_in, s)` (same centres, taps and padding); for odd s the reference's padding ⌊(S − s)/2⌋ puts
    its kernel half a pixel off the centre used here."""
    if not (isinstance(n_in, int) and isinstance(n_out, int) and n_in >= 1 and n_out >= 1):
        raise ValueError(f"resample sizes: expected positive integers, got {n_in!r} -> {n_out!r}")
    s = n_in / n_out
    width = max(s, 1.0)                                                    # kernel scale in input pixels
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * s - 0.5   # [n_out]
    first = torch.floor(centre - 2 * width).long() + 1                     # leftmost tap with |t| < 2·width
    span = int(math.ceil(4 * width)) + 1
    idx = first[:, None] + torch.arange(span)[None]                         # [n_out, span]
    taps = keys_cubic((idx.double() - centre[:, None]) / width)
    taps = taps / taps.sum(1, keepdim=True)
    R = torch.zeros(n_out, n_in, dtype=torch.float64)
    R.scatter_add_(1, reflect_index(idx, n_in), taps)
    return R


# ----------------------------------------------------------------------------
# A(x) = R_H x R_Wᵀ from (H, W) to any (h, w): down-sampling by non-integer ratios (a face of any size vs the model).


class Resample(LinearOperator):
    """Separable anti-aliased bicubic resampling of [B, C, H, W] images to [B, C, h, w] (any ratios, exact adjoint
    Aᵀ(y) = R_Hᵀ y R_W and pseudo-inverse A†(y) = R_H⁺ y (R_W⁺)ᵀ). Used by `sgilo restore` for super-resolution
    when the face in the low-resolution photo is not an integer fraction of the model's resolution."""

    def __init__(self, image_shape: tuple[int, int, int], out_hw: tuple[int, int],
                 noise: NoiseModel | None = None) -> None:
        super().__init__(noise)
        self.image_shape = as_image_shape(image_shape)
        C, H, W = self.image_shape
        h, w = (int(v) for v in out_hw)
        if h < 1 or w < 1:
            raise ValueError(f"resample out_hw: expected positive sizes, got {tuple(out_hw)!r}")
        self.out_hw = (h, w)
        R_H, R_W = resample_matrix(H, h), resample_matrix(W, w)
        self.register_buffer("R_H", R_H.float())                              # [h, H]
        self.register_buffer("R_W", R_W.float())                              # [w, W]
        self.register_buffer("R_H_pinv", torch.linalg.pinv(R_H).float())      # [H, h]
        self.register_buffer("R_W_pinv", torch.linalg.pinv(R_W).float())      # [W, w]

    @property
    def measurement_shape(self) -> tuple[int, int, int]:
        return (self.image_shape[0], *self.out_hw)

    @property
    def factor(self) -> float:
        """The ratio H / h (input pixels per output pixel; > 1 when down-sampling)."""
        return self.image_shape[1] / self.out_hw[0]

    def A(self, x: Tensor) -> Tensor:
        check_image(x, self.image_shape)
        return self.R_H.to(x.dtype) @ x @ self.R_W.to(x.dtype).T                  # [B, C, h, w]

    def A_adjoint(self, y: Tensor) -> Tensor:
        check_image(y, self.measurement_shape, "y")
        return self.R_H.to(y.dtype).T @ y @ self.R_W.to(y.dtype)                  # [B, C, H, W]

    def A_dagger(self, y: Tensor) -> Tensor:
        check_image(y, self.measurement_shape, "y")
        return self.R_H_pinv.to(y.dtype) @ y @ self.R_W_pinv.to(y.dtype).T       # [B, C, H, W]

    def get_config(self) -> dict:
        return {"image_shape": list(self.image_shape), "out_hw": list(self.out_hw)}
