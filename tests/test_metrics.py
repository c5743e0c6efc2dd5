"""Metrics: PSNR/SSIM against scikit-image, residual, posterior-set metrics (coverage ≈ q), LPIPS from local weights."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from conftest import write_lpips_weights

from sgilo.metrics import coverage, diversity, measurement_residual, psnr, ssim, std_map
from sgilo.metrics.lpips import LPIPS
from sgilo.operators import Inpainting

skm = pytest.importorskip("skimage.metrics")


def _pair(B=2, C=3, H=23, W=19, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(B, C, H, W, generator=g, dtype=torch.float64) * 2 - 1
    x = (ref + 0.3 * torch.randn(B, C, H, W, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return x, ref


# ----------------------------------------------------------------------------
# PSNR and SSIM agree with scikit-image to 1e-4 (per image, odd non-square sizes, 1 and 3 channels).


@pytest.mark.parametrize("C", [1, 3])
def test_psnr_ssim_match_skimage(C):
    x, ref = _pair(C=C)
    p, s = psnr(x, ref), ssim(x, ref)
    assert p.shape == s.shape == (2,)
    for b in range(2):
        a, r = x[b].permute(1, 2, 0).numpy(), ref[b].permute(1, 2, 0).numpy()
        p_ref = skm.peak_signal_noise_ratio(r, a, data_range=2.0)
        s_ref = skm.structural_similarity(a, r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                          data_range=2.0, channel_axis=2)
        assert abs(p[b].item() - p_ref) < 1e-4
        assert abs(s[b].item() - s_ref) < 1e-4


def test_ssim_identity_and_float32():
    x, _ = _pair()
    torch.testing.assert_close(ssim(x.float(), x.float()), torch.ones(2))
    assert math.isinf(psnr(x, x)[0].item())
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="ref"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


def test_measurement_residual():
    op = Inpainting.box((8, 8), (0, 0, 4, 8))
    x, _ = _pair(H=8, W=8)
    y = op.A(x)
    torch.testing.assert_close(measurement_residual(op, x, y), torch.zeros(2, dtype=torch.float64))
    r = measurement_residual(op, torch.zeros_like(x), y)
    torch.testing.assert_close(r, torch.ones(2, dtype=torch.float64))


# ----------------------------------------------------------------------------
# Posterior metrics on samples from a known Gaussian.


def gaussian_draws(seed: int, K: int, B: int, shape: tuple[int, ...]):
    """K posterior samples and one truth per image, all i.i.d. N(mu, s²) per pixel; returns the generator too."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(B, *shape, generator=g)
    s = 0.1 + torch.rand(B, *shape, generator=g)
    samples = mu + s * torch.randn(K, B, *shape, generator=g)
    truth = mu + s * torch.randn(B, *shape, generator=g)
    return samples, truth, mu, s, g


def test_coverage_matches_q_for_gaussian_samples():
    K, B, shape = 200, 2, (3, 32, 32)
    samples, truth, mu, s, g = gaussian_draws(0, K, B, shape)
    for q in (0.5, 0.9):
        for method in ("predictive", "quantile"):
            cov = coverage(samples, truth, q, method=method)
            assert cov.shape == (B,)
            assert torch.all((cov - q).abs() < 0.025), (q, method, cov)
    # over-confident samples (std / 3) under-cover
    narrow = mu + s / 3 * torch.randn(K, B, *shape, generator=g)
    assert torch.all(coverage(narrow, truth, 0.9) < 0.6)


def test_coverage_with_few_samples_predictive_is_calibrated_quantile_is_not():
    # K = 4 exchangeable Gaussian draws per pixel and the truth a 5th draw: the t prediction interval covers with
    # probability exactly q; the empirical-quantile interval lies inside [min, max], which holds the truth with
    # probability (K - 1)/(K + 1) = 0.6 only.
    samples, truth, _, _, _ = gaussian_draws(2, 4, 2, (3, 64, 64))
    for q in (0.5, 0.9):
        cov = coverage(samples, truth, q)
        assert torch.all((cov - q).abs() < 0.02), (q, cov)
    assert torch.all(coverage(samples, truth, 0.9, method="quantile") < 0.6)
    with pytest.raises(ValueError, match="coverage method"):
        coverage(samples, truth, 0.9, method="hpd")


def test_student_t_quantile_known_values():
    from sgilo.metrics.posterior import student_t_quantile
    for p, nu, ref in ((0.95, 1, 6.313752), (0.95, 3, 2.353363), (0.75, 7, 0.711142), (0.975, 30, 2.042272)):
        assert abs(student_t_quantile(p, nu) - ref) < 1e-5


def test_student_t_quantile_is_cached():
    """Each coverage call used to integrate the t density again (≈ 0.3 s); the second call is a cache hit."""
    import time

    from sgilo.metrics.posterior import coverage, student_t_quantile
    student_t_quantile.cache_clear()
    first = student_t_quantile(0.95, 2)
    t0 = time.perf_counter()
    assert student_t_quantile(0.95, 2) == first and time.perf_counter() - t0 < 1e-3
    info = student_t_quantile.cache_info()
    assert info.hits == 1 and info.misses == 1
    s, x = torch.randn(3, 1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    coverage(s, x, 0.9)
    coverage(s, x, 0.9)
    assert student_t_quantile.cache_info().hits >= 2


def test_std_map_and_diversity():
    g = torch.Generator().manual_seed(1)
    samples = 0.5 * torch.randn(400, 2, 3, 16, 16, generator=g, dtype=torch.float64)
    sm = std_map(samples)
    assert sm.shape == (2, 3, 16, 16) and abs(sm.mean().item() - 0.5) < 0.01
    d = diversity(samples)
    assert d.shape == (2,) and torch.allclose(d, torch.full((2,), 0.5 * math.sqrt(2), dtype=torch.float64), rtol=0.01)
    # definition on a hand case: two samples differing by 1 everywhere → RMS distance 1
    two = torch.stack([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)])
    torch.testing.assert_close(diversity(two), torch.ones(1))
    with pytest.raises(ValueError, match="K >= 2"):
        std_map(torch.zeros(1, 1, 1, 4, 4))


# ----------------------------------------------------------------------------
# LPIPS: loads a (narrow) VGG-16-layout file, zero on identical images, symmetric, no weights → clear error.


def _lpips_file(path, widths=(4, 8, 8, 8, 8)):
    write_lpips_weights(path, widths)


def test_lpips_local_weights(tmp_path):
    _lpips_file(tmp_path / "lpips.safetensors")
    lp = LPIPS(tmp_path / "lpips.safetensors")
    x, ref = _pair(H=32, W=32)
    x, ref = x.float(), ref.float()
    d = lp(x, ref)
    assert d.shape == (2,) and torch.all(d > 0)
    torch.testing.assert_close(lp(x, x), torch.zeros(2))
    torch.testing.assert_close(lp(ref, x), d)
    with pytest.raises(ValueError, match="--lpips-weights"):
        LPIPS(None)
    save_file({"features.0.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(KeyError, match="missing key"):
        LPIPS(tmp_path / "bad.safetensors")
