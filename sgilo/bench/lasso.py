"""Classical sparsity baselines of the CSGM paper (Bora et al., ICML 2017, Sec. 6): Lasso in the 2-D DCT basis and in
a 2-D orthonormal Daubechies wavelet basis, solved by FISTA (Beck & Teboulle, SIAM J. Imaging Sci. 2009).

    ĉ = argmin_c ½‖A Ψᵀ c − y‖² + λ‖c‖₁,   x̂ = clip(Ψᵀ ĉ, −1, 1)

Ψ is orthonormal and separable (Ψ x = M_H x M_Wᵀ per channel), A is any `LinearOperator` (only A and A_adjoint are
used). The final clip to the image range [−1, 1] is ours (it can only move a pixel closer to a truth inside the range).
λ is chosen on `train/` images by a small grid (`tune_lambda`), never on test images. The transforms are written here
(no pywt): the DCT-II as an orthonormal matrix, the periodic multi-level DWT as an orthonormal matrix built from the
Daubechies filter obtained by spectral factorisation (Daubechies, Ten Lectures on Wavelets, 1992, Sec. 6.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sgilo.operators.base import LinearOperator, spectral_norm_sq
from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# Lasso hyper-parameters.


@dataclass(frozen=True)
class LassoConfig:
    basis: str = "dct"                          # 'dct' or 'wavelet'
    wavelet_order: int = 4                      # Daubechies order p (filter length 2p; 1 = Haar)
    levels: int | None = None                   # DWT levels (None: as many as the filter length allows)
    iters: int = 300                            # FISTA iterations
    lam: float | None = None                    # λ; None: chosen by `tune_lambda` on train/ images
    lambdas: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # tuning grid
    tune_images: int = 8                        # train/ images used for tuning
    clip: bool = True                           # clip x̂ to [−1, 1]

    def __post_init__(self) -> None:
        if self.basis not in ("dct", "wavelet"):
            raise ValueError(f"Lasso basis must be 'dct' or 'wavelet', got {self.basis!r}")
        if not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"FISTA iters must be an integer >= 1, got {self.iters!r}")
        if self.lam is not None and not self.lam >= 0:
            raise ValueError(f"Lasso lam must be >= 0, got {self.lam!r}")


# ----------------------------------------------------------------------------
# Orthonormal DCT-II matrix: M[k, i] = α_k cos(π (2i + 1) k / (2n)), α_0 = √(1/n), α_k = √(2/n).


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Shapes: returns [n, n]; rows are the basis vectors, M Mᵀ = I."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    M = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    M[0] = M[0] / math.sqrt(2)
    return M.to(dtype)


# ----------------------------------------------------------------------------
# Daubechies low-pass filter of order p: H(z) ∝ (1 + z)^p · Q(z), |Q|² = P(sin²(ω/2)), P(y) = Σ_{k<p} C(p−1+k, k) y^k.


def daubechies_filter(p: int) -> np.ndarray:
    """Minimum-phase orthonormal Daubechies filter h of length 2p with Σh = √2 (p = 1: Haar)."""
    if not isinstance(p, int) or p < 1 or p > 10:
        raise ValueError(f"Daubechies order must be an integer in 1..10, got {p!r}")
    coeffs = [math.comb(p - 1 + k, k) for k in range(p)]                  # P(y), increasing powers
    roots_y = np.roots(coeffs[::-1]) if p > 1 else np.array([])
    h = np.poly1d([1.0])
    for _ in range(p):
        h = h * np.poly1d([1.0, 1.0])                                     # (1 + z)^p
    for y in roots_y:                                     # y = (2 − z − 1/z)/4 ⇒ z² − (2 − 4y) z + 1 = 0
        z = np.roots([1.0, -(2 - 4 * y), 1.0])
        h = h * np.poly1d([1.0, -z[np.argmin(np.abs(z))]])               # keep the root inside the unit circle
    h = np.real(h.coeffs)
    return h * (math.sqrt(2) / h.sum())


# ----------------------------------------------------------------------------
# One periodic analysis level: rows a_i = Σ_k h_k x_{2i+k}, d_i = Σ_k g_k x_{2i+k}, g_k = (−1)^k h_{L−1−k}.


def dwt_level_matrix(n: int, h: np.ndarray) -> np.ndarray:
    """Shapes: returns [n, n] (first n/2 rows low-pass, last n/2 high-pass); orthonormal when n ≥ len(h)."""
    L = len(h)
    g = np.array([(-1) ** k * h[L - 1 - k] for k in range(L)])
    M = np.zeros((n, n))
    for i in range(n // 2):
        for k in range(L):
            M[i, (2 * i + k) % n] += h[k]
            M[n // 2 + i, (2 * i + k) % n] += g[k]
    return M


# ----------------------------------------------------------------------------
# Multi-level periodic DWT matrix: the low-pass half is transformed again while it is at least the filter length.


def wavelet_matrix(n: int, order: int = 4, levels: int | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Shapes: returns [n, n] orthonormal (W Wᵀ = I). n must be even; levels stop when the low band < filter length."""
    h = daubechies_filter(order)
    W, size, level = np.eye(n), n, 0
    while size % 2 == 0 and size >= len(h) and (levels is None or level < levels):
        step = np.eye(n)
        step[:size, :size] = dwt_level_matrix(size, h)
        W = step @ W
        size, level = size // 2, level + 1
    if level == 0:
        raise ValueError(f"a {n}-point signal is too short for the db{order} filter of length {len(h)}")
    return torch.from_numpy(W).to(dtype)


# ----------------------------------------------------------------------------
# A separable orthonormal 2-D basis Ψ: analysis c = M_H x M_Wᵀ, synthesis x = M_Hᵀ c M_W (per channel).


class Basis2D:
    """Shapes: `analysis`/`synthesis` map [B, C, H, W] → [B, C, H, W]."""

    def __init__(self, kind: str, H: int, W: int, order: int = 4, levels: int | None = None) -> None:
        make = (lambda n: dct_matrix(n)) if kind == "dct" else (lambda n: wavelet_matrix(n, order, levels))
        self.kind, self.MH, self.MW = kind, make(H), make(W)

    def analysis(self, x: Tensor) -> Tensor:
        MH, MW = self.MH.to(x), self.MW.to(x)
        return MH @ x @ MW.T

    def synthesis(self, c: Tensor) -> Tensor:
        MH, MW = self.MH.to(c), self.MW.to(c)
        return MH.T @ c @ MW


# ----------------------------------------------------------------------------
# Soft thresholding, the proximal map of τ‖·‖₁: S_τ(v) = sign(v) max(|v| − τ, 0).


def soft_threshold(v: Tensor, tau: float) -> Tensor:
    return torch.sign(v) * (v.abs() - tau).clamp_min(0)


# ----------------------------------------------------------------------------
# Lipschitz constant of ∇½‖A x − y‖²: L = ‖AᵀA‖₂, by power iteration (×1.01 safety margin).


def lipschitz(operator: LinearOperator, image_shape: tuple[int, ...], iters: int = 50,
              generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
              device: torch.device | None = None) -> float:
    return 1.01 * spectral_norm_sq(operator, tuple(image_shape), 1, iters, generator, dtype, device)


# ----------------------------------------------------------------------------
# FISTA on ½‖A Ψᵀ c − y‖² + λ‖c‖₁ (Beck & Teboulle 2009, FISTA with constant step 1/L).


def fista(y: Tensor, operator: LinearOperator, basis: Basis2D, lam: float, iters: int, L: float) -> Tensor:
    """Shapes: y [B, ...] → coefficients ĉ [B, C, H, W]."""
    c_prev = torch.zeros_like(operator.A_adjoint(y))                      # [B, C, H, W]
    v, t = c_prev, 1.0
    for _ in range(iters):
        residual = operator.A(basis.synthesis(v)) - y
        grad = basis.analysis(operator.A_adjoint(residual))
        c = soft_threshold(v - grad / L, lam / L)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        v = c + ((t - 1) / t_next) * (c - c_prev)
        c_prev, t = c, t_next
    return c_prev


# ----------------------------------------------------------------------------
# Lasso reconstruction x̂ = clip(Ψᵀ ĉ) for a given λ.


@torch.no_grad()
def lasso_solve(y: Tensor, operator: LinearOperator, lam: float, config: LassoConfig = LassoConfig(),  # noqa: B008
                generator: torch.Generator | None = None, L: float | None = None) -> Tensor:
    """Shapes: y [B, ...] measurement → x̂ [B, C, H, W]. `generator` seeds the power iteration for L."""
    shape = tuple(operator.A_adjoint(y[:1]).shape[1:])
    C, H, W = shape
    basis = Basis2D(config.basis, H, W, config.wavelet_order, config.levels)
    L = lipschitz(operator, shape, generator=generator, dtype=y.dtype, device=y.device) if L is None else L
    x = basis.synthesis(fista(y, operator, basis, lam, config.iters, L))
    assert_shape(x, [y.shape[0], C, H, W], "lasso x_hat")
    return x.clamp(-1, 1) if config.clip else x


# ----------------------------------------------------------------------------
# Choose λ from the grid by the mean PSNR on train/ images measured through the same operator.


@torch.no_grad()
def tune_lambda(operator: LinearOperator, train_images: Tensor, config: LassoConfig = LassoConfig(),  # noqa: B008
                generator: torch.Generator | None = None) -> tuple[float, dict[float, float]]:
    """Returns (best λ, {λ: mean PSNR in dB}). Shapes: train_images [N, C, H, W] in [−1, 1] (from the train split)."""
    from sgilo.metrics.quality import psnr

    assert_shape(train_images, [None, None, None, None], "train_images")
    x = train_images[: config.tune_images]
    y = operator.measure(x, generator=generator)
    L = lipschitz(operator, tuple(x.shape[1:]), generator=generator, dtype=x.dtype, device=x.device)
    table = {float(lam): float(psnr(lasso_solve(y, operator, lam, config, L=L), x).mean()) for lam in config.lambdas}
    best = max(table, key=table.get)
    return best, table
