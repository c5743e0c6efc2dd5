"""Per-image reconstruction metrics for SGILO (Daras et al., ICML 2022): PSNR, SSIM and the measurement residual.

SSIM follows Wang et al. (IEEE TIP 2004): 11-tap Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, population
(co)variances, mean of the SSIM map over the valid region (a 5-pixel border is dropped, as scikit-image does) and over
channels. It matches `skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=2)` (tested to 1e-4). Images are in [-1, 1], so the data range is 2.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# Check that x and ref are matching [B, C, H, W] batches.


def _check_pair(x: Tensor, ref: Tensor) -> None:
    assert_shape(x, [None, None, None, None], "x")
    assert_shape(ref, list(x.shape), "ref")


# ----------------------------------------------------------------------------
# PSNR = 10 log10(R² / MSE), MSE over C, H, W.


def psnr(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image. Shapes: x, ref [B, C, H, W] → [B] (inf where x == ref)."""
    _check_pair(x, ref)
    mse = (x.double() - ref.double()).square().flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).to(x.dtype)


# ----------------------------------------------------------------------------
# The normalised 1-D Gaussian window, 11 taps, σ = 1.5 (Wang et al. 2004).


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-t.square() / (2 * sigma**2))
    return w / w.sum()


# ----------------------------------------------------------------------------
# Separable 'valid' Gaussian filtering per channel.


def _filter(x: Tensor, w: Tensor) -> Tensor:
    C = x.shape[1]
    x = F.conv2d(x, w.reshape(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)  # [B, C, H-10, W]
    return F.conv2d(x, w.reshape(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)  # [B, C, H-10, W-10]


# ----------------------------------------------------------------------------
# SSIM = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2)) (Wang et al. 2004, Eq. 13), averaged.


def ssim(x: Tensor, ref: Tensor, data_range: float = 2.0, win_size: int = 11, sigma: float = 1.5,
         K1: float = 0.01, K2: float = 0.03) -> Tensor:
    """Mean structural similarity per image. Shapes: x, ref [B, C, H, W] with H, W ≥ `win_size` → [B]."""
    _check_pair(x, ref)
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim: expected images of at least {win_size}x{win_size} pixels, got {tuple(x.shape[-2:])}")
    a, b = x.double(), ref.double()
    w = gaussian_window(win_size, sigma).to(a.device)
    mu_a, mu_b = _filter(a, w), _filter(b, w)
    var_a = _filter(a * a, w) - mu_a.square()
    var_b = _filter(b * b, w) - mu_b.square()
    cov = _filter(a * b, w) - mu_a * mu_b
    C1, C2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = (2 * mu_a * mu_b + C1) * (2 * cov + C2) / ((mu_a.square() + mu_b.square() + C1) * (var_a + var_b + C2))
    return s.flatten(2).mean(2).mean(1).to(x.dtype)  # [B]


# ----------------------------------------------------------------------------
# Relative measurement residual ‖A x − y‖ / ‖y‖.


def measurement_residual(operator, x: Tensor, y: Tensor) -> Tensor:
    """Shapes: x [B, C, H, W], y [B, ...] → [B]. ‖y‖ is floored at 1e-12."""
    assert_shape(x, [None, None, None, None], "x")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"measurement_residual: x has batch {x.shape[0]} but y has batch {y.shape[0]}")
    r = (operator.A(x) - y).flatten(1).norm(dim=1)
    return r / y.flatten(1).norm(dim=1).clamp_min(1e-12)


# ----------------------------------------------------------------------------
# Mean squared error per image (the CSGM paper's per-pixel MSE).


def mse(x: Tensor, ref: Tensor) -> Tensor:
    """Shapes: x, ref [B, C, H, W] → [B]."""
    _check_pair(x, ref)
    return (x - ref).square().flatten(1).mean(1)


# ----------------------------------------------------------------------------
# Every number a command reports for a batch of reconstructions (solve, demo, restore, calibrate, bench, bench-tune).


@torch.no_grad()
def image_metrics(x_hat: Tensor, truth: Tensor | None, y: Tensor, operator, samples: Tensor | None = None,
                  lpips=None) -> list[dict]:
    """One dict of floats per image.

    * ``residual``: ‖A x̂ − y‖ / ‖y‖ of the unclamped estimate (what the solver fitted).
    * With ``truth``: ``psnr``, ``ssim``, ``mse`` (and ``lpips`` when an `sgilo.metrics.lpips.LPIPS` is given) of x̂
      clamped to the image range [-1, 1] — the image that is written and shown.
    * With ``samples`` (K ≥ 1): ``psnr_sample``, the mean over the K single samples of their PSNR (clamped).
      With K ≥ 2 also ``std_mean`` (mean per-pixel sample std, image units), ``diversity`` and, with ``truth``,
      ``coverage50`` / ``coverage90`` (`sgilo.metrics.posterior.coverage`, Student-t predictive intervals of the
      unclamped samples).

    Shapes: x_hat [B, C, H, W]; truth [B, C, H, W] or None; y [B, ...]; samples [K, B, C, H, W] or None.
    """
    from sgilo.metrics.posterior import coverage, diversity

    assert_shape(x_hat, [None, None, None, None], "x_hat")
    B = x_hat.shape[0]
    if samples is not None:
        assert_shape(samples, [None, *x_hat.shape], "samples")
    x = x_hat.clamp(-1, 1)
    m = {"residual": measurement_residual(operator, x_hat, y)}
    if truth is not None:
        m.update(psnr=psnr(x, truth), ssim=ssim(x, truth), mse=mse(x, truth))
        if lpips is not None:
            m["lpips"] = lpips(x, truth.to(x.dtype))
        if samples is not None:
            m["psnr_sample"] = torch.stack([psnr(s.clamp(-1, 1), truth) for s in samples]).mean(0)
    if samples is not None and samples.shape[0] >= 2:
        m["std_mean"] = samples.std(0, correction=1).flatten(1).mean(1)
        m["diversity"] = diversity(samples)
        if truth is not None:
            m["coverage50"] = coverage(samples, truth, 0.5)
            m["coverage90"] = coverage(samples, truth, 0.9)
    return [{k: float(v.reshape(-1)[b]) for k, v in m.items()} for b in range(B)]
