"""Metrics of a set of posterior samples for SGILO (Daras et al., ICML 2022): std map, diversity, interval coverage.

Samples come as [K, B, C, H, W] (K posterior samples of each of B images). Coverage is the calibration number the
reference tools never reported: the fraction of true pixels inside the central q credible interval of the samples.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# Check a [K, B, C, H, W] sample set with K ≥ 2.


def _check_samples(samples: Tensor) -> None:
    assert_shape(samples, [None, None, None, None, None], "samples")
    if samples.shape[0] < 2:
        raise ValueError(f"samples: expected K >= 2 posterior samples on dim 0, got K = {samples.shape[0]}")


# ----------------------------------------------------------------------------
# Per-pixel standard deviation over the samples (unbiased, K − 1).


def std_map(samples: Tensor) -> Tensor:
    """Shapes: samples [K, B, C, H, W] → [B, C, H, W]."""
    _check_samples(samples)
    return samples.std(dim=0, correction=1)


# ----------------------------------------------------------------------------
# diversity = mean over pairs i < j of RMS(x_i − x_j) = sqrt(mean_{c,h,w} (x_i − x_j)²).


def diversity(samples: Tensor) -> Tensor:
    """Mean pairwise root-mean-square distance between samples, in image units. Shapes: [K, B, C, H, W] → [B].

    For i.i.d. samples with per-pixel variance v this is ≈ sqrt(2 · mean v).
    """
    _check_samples(samples)
    K = samples.shape[0]
    flat = samples.flatten(2).transpose(0, 1).double()  # [B, K, D]
    d2 = torch.cdist(flat, flat).square() / flat.shape[-1]  # [B, K, K] mean squared differences
    i, j = torch.triu_indices(K, K, offset=1)
    return d2[:, i, j].clamp_min(0).sqrt().mean(1).to(samples.dtype)


# ----------------------------------------------------------------------------
# Empirical quantile along dim 0 with linear interpolation (numpy's default "linear" method).


def _quantile0(sorted_samples: Tensor, level: float) -> Tensor:
    K = sorted_samples.shape[0]
    pos = level * (K - 1)
    lo, frac = int(pos // 1), pos - pos // 1
    hi = min(lo + 1, K - 1)
    return sorted_samples[lo] * (1 - frac) + sorted_samples[hi] * frac


# ----------------------------------------------------------------------------
# Student-t quantile t_ν(p) by bisection on its CDF (Simpson integration of the density); p in (0.5, 1).
# Cached on (p, ν): one evaluation integrates numerically (≈ 0.3 s) and every coverage call asks for the same few.


@functools.lru_cache(maxsize=256)
def student_t_quantile(p: float, nu: int) -> float:
    """t_ν(p) for ν ≥ 1, 0.5 < p < 1, to ~1e-7 (no scipy dependency). E.g. t_3(0.95) = 2.3534."""
    if not (0.5 < p < 1) or nu < 1:
        raise ValueError(f"student_t_quantile: expected 0.5 < p < 1 and nu >= 1, got p={p!r}, nu={nu!r}")
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)

    def cdf(x: float) -> float:  # 0.5 + ∫_0^x pdf, composite Simpson with 2000 panels
        n = 2000
        h = x / n
        f = [math.exp(log_c - (nu + 1) / 2 * math.log1p((i * h) ** 2 / nu)) for i in range(n + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


# ----------------------------------------------------------------------------
# coverage_q = mean over pixels of 1[lo_q ≤ x_true ≤ hi_q] for a per-pixel interval built from the K samples.


def coverage(samples: Tensor, truth: Tensor, q: float, method: str = "predictive") -> Tensor:
    """Fraction of true pixels inside a central q interval built per pixel from the K samples.

    ``method='predictive'`` (default): the Student-t prediction interval for one more exchangeable draw,
    x̄ ± t_{K−1}((1+q)/2) · s · sqrt(1 + 1/K) (s: per-pixel sample std, K − 1). If the truth is distributed like a
    posterior sample (a calibrated sampler) and pixels are Gaussian, a pixel lies inside with probability exactly q,
    for any K ≥ 2.
    ``method='quantile'``: the samples' empirical quantiles Q_{(1−q)/2}, Q_{(1+q)/2} (numpy's linear interpolation).
    Only for large K: with K samples a new exchangeable draw falls between the min and the max with probability
    (K − 1)/(K + 1) (0.6 for K = 4), so this interval under-covers even a perfect sampler unless K ≳ 2/(1 − q).

    Shapes: samples [K, B, C, H, W], truth [B, C, H, W] → [B].
    """
    _check_samples(samples)
    assert_shape(truth, list(samples.shape[1:]), "truth")
    if not (0 < q < 1):
        raise ValueError(f"coverage level q: expected 0 < q < 1, got {q!r}")
    if method == "predictive":
        K = samples.shape[0]
        half = student_t_quantile((1 + q) / 2, K - 1) * samples.std(dim=0) * math.sqrt(1 + 1 / K)
        mean = samples.mean(dim=0)
        lo, hi = mean - half, mean + half
    elif method == "quantile":
        s = samples.sort(dim=0).values
        lo, hi = _quantile0(s, (1 - q) / 2), _quantile0(s, (1 + q) / 2)  # [B, C, H, W]
    else:
        raise ValueError(f"coverage method: expected 'predictive' or 'quantile', got {method!r}")
    inside = (truth >= lo) & (truth <= hi)
    return inside.flatten(1).float().mean(1)
