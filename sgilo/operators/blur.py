"""Deblurring operator for SGILO posterior sampling (Daras et al., ICML 2022): Gaussian blur, circular boundary.

A(x) = k ⊛ x (circular convolution, per channel) computed with the 2-D real FFT: A(x) = F⁻¹(K̂ ⊙ F x). The kernel
k(i, j) ∝ exp(−(d_i² + d_j²) / (2 s²)), with d the wrap-around distance to pixel (0, 0), is normalised to sum 1.
Aᵀ uses conj(K̂) (exact); A† is the spectral pseudo-inverse with frequencies |K̂| < rcond·max|K̂| set to zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgilo.operators.base import LinearOperator, NoiseModel, as_image_shape, check_image


# ----------------------------------------------------------------------------
# The periodic Gaussian kernel on the full H×W grid, centred at pixel (0, 0).


def periodic_gaussian_kernel(H: int, W: int, s: float) -> Tensor:
    """Shapes: returns [H, W] summing to 1 (float64)."""
    i, j = torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64)
    di, dj = torch.minimum(i, H - i), torch.minimum(j, W - j)
    k = torch.exp(-(di[:, None] ** 2 + dj[None, :] ** 2) / (2 * s**2))  # [H, W]
    return k / k.sum()


# ----------------------------------------------------------------------------
# y = k ⊛ x with circular boundary.


class Deblur(LinearOperator):
    """Gaussian blur of std `kernel_sigma` pixels (circular boundary, FFT).

    Shapes: x, y [B, C, H, W].
    """

    def __init__(self, kernel_sigma: float, image_shape: tuple[int, int, int], noise: NoiseModel | None = None,
                 rcond: float = 1e-3) -> None:
        super().__init__(noise)
        if not (kernel_sigma > 0 and kernel_sigma < float("inf")):
            raise ValueError(f"deblur kernel_sigma: expected a finite number > 0, got {kernel_sigma!r}")
        self.image_shape = as_image_shape(image_shape)
        self.kernel_sigma, self.rcond = float(kernel_sigma), float(rcond)
        _, H, W = self.image_shape
        self.register_buffer("kernel", periodic_gaussian_kernel(H, W, self.kernel_sigma).float())  # [H, W]

    def _spectrum(self, dtype: torch.dtype) -> Tensor:
        return torch.fft.rfft2(self.kernel.to(dtype))  # [H, W//2+1] complex

    def _filter(self, x: Tensor, spectrum: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        return torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=(H, W))

    def A(self, x: Tensor) -> Tensor:
        check_image(x, self.image_shape)
        return self._filter(x, self._spectrum(x.dtype))

    def A_adjoint(self, y: Tensor) -> Tensor:
        check_image(y, self.image_shape, "y")
        return self._filter(y, self._spectrum(y.dtype).conj())

    def A_dagger(self, y: Tensor) -> Tensor:
        check_image(y, self.image_shape, "y")
        K = self._spectrum(y.dtype)
        keep = K.abs() >= self.rcond * K.abs().max()
        inv = torch.where(keep, 1 / torch.where(keep, K, torch.ones_like(K)), torch.zeros_like(K))
        return self._filter(y, inv)

    def get_config(self) -> dict:
        return {"kernel_sigma": self.kernel_sigma, "image_shape": list(self.image_shape), "rcond": self.rcond}
