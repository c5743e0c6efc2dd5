"""Metrics of a set of posterior samples for SGILO (Daras et al., ICML 2022): std map, diversity, interval coverage.

Samples come as [K, B, C, H, W] (K posterior samples of each of B images). Coverage is the calibration number the
reference tools never reported: the fraction of true pixels inside the central q credible interval of the samples.
"""

from __future__ import annotations

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
# coverage_q = mean over pixels of 1[Q_{(1−q)/2} ≤ x_true ≤ Q_{(1+q)/2}].


def coverage(samples: Tensor, truth: Tensor, q: float) -> Tensor:
    """Fraction of true pixels inside the central q interval of the samples' empirical per-pixel quantiles.

    Well-calibrated samples give ≈ q. Shapes: samples [K, B, C, H, W], truth [B, C, H, W] → [B].
    """
    _check_samples(samples)
    assert_shape(truth, list(samples.shape[1:]), "truth")
    if not (0 < q < 1):
        raise ValueError(f"coverage level q: expected 0 < q < 1, got {q!r}")
    s = samples.sort(dim=0).values
    lo, hi = _quantile0(s, (1 - q) / 2), _quantile0(s, (1 + q) / 2)  # [B, C, H, W]
    inside = (truth >= lo) & (truth <= hi)
    return inside.flatten(1).float().mean(1)
