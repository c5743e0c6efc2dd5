"""Conformal risk control of the interval scale (Angelopoulos et al. 2022/2024) on a synthetic under-dispersed sampler.

Truth pixel ~ N(μ, 1); the "sampler" draws K = 4 samples from N(μ, 0.5²) (std halved: raw intervals under-cover).
The fitted scale must bring the expected fraction of covered pixels of held-out images to the target level
(≥ q, and ≤ q + 2/(n+1) + Monte-Carlo slack), averaged over many calibration/test splits.
"""

from __future__ import annotations

import json

import pytest
import torch

from sgilo.metrics.conformal import (FORMAT, VERSION, apply_calibration, calibrated_coverage, coverage_records,
                                     fit_scale, interval_coverage, interval_scores, load_calibration)

K, PIX = 4, 64


def synthetic(n: int, g: torch.Generator, spread: float = 0.5):
    mu = torch.randn(n, 1, 8, 8, generator=g) * 2                         # per image and pixel: [n, 1, 8, 8]
    truth = mu + torch.randn(mu.shape, generator=g)
    samples = mu + spread * torch.randn(K, *mu.shape, generator=g)
    return samples, truth


@pytest.mark.parametrize("q", [0.5, 0.9])
def test_fitted_scale_reaches_target_on_held_out(q):
    g = torch.Generator().manual_seed(0)
    n_cal, reps, covs, raws = 20, 200, [], []
    for _ in range(reps):
        s_cal, t_cal = synthetic(n_cal, g)
        lam = fit_scale(interval_scores(s_cal, t_cal, q), q)
        s_te, t_te = synthetic(50, g)
        covs.append(float(interval_coverage(s_te, t_te, q, lam)[0].mean()))
        raws.append(float(interval_coverage(s_te, t_te, q)[0].mean()))
    mean_cov, mean_raw = sum(covs) / reps, sum(raws) / reps
    assert mean_raw < q - 0.1                                              # the raw intervals under-cover
    assert q - 0.005 <= mean_cov <= q + 2 / (n_cal + 1) + 0.01, mean_cov    # E[coverage] ≥ q, nearly tight
    # Per-image losses concentrate (many pixels), so λ̂ sits where the coverage is exactly 1 − ((n+1)α − 1)/n.
    assert mean_cov == pytest.approx(1 - ((n_cal + 1) * (1 - q) - 1) / n_cal, abs=0.01)


def test_fit_scale_order_statistic_and_errors():
    scores = torch.arange(1, 10, dtype=torch.float64)[:, None].repeat(1, 4)  # 9 images, 4 pixels each
    assert fit_scale(scores, 0.9) == 9.0                                   # w* = 1: the largest score
    assert fit_scale(scores, 0.5) == 5.0                                   # w* = 1 − (5 − 1)/9 = 5/9 → 5th value
    with pytest.raises(ValueError, match="needs n >= 9"):
        fit_scale(scores[:5], 0.9)


def test_apply_and_load_calibration(tmp_path):
    g = torch.Generator().manual_seed(1)
    samples, truth = synthetic(3, g)
    cal = {"format": FORMAT, "version": VERSION, "tasks": {"t": {"levels": {"0.5": {"scale": 2.0},
                                                                             "0.9": {"scale": 1.5}}}}}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    loaded = load_calibration(path)
    iv = apply_calibration(samples, "t", loaded)
    mean = samples.mean(0)
    torch.testing.assert_close(iv[0.5]["hi"] - mean, 2.0 * (mean - iv[0.5]["lo"]) / 2.0)
    cov = calibrated_coverage(samples, truth, "t", loaded)
    assert cov["scale90"] == 1.5 and cov["width90_cal"][0] == pytest.approx(1.5 * cov["width90"][0], rel=1e-5)
    assert calibrated_coverage(samples, truth, "other", loaded)["coverage90_cal"] is None
    rec = coverage_records(samples, truth, "t", loaded)
    assert len(rec) == 3 and rec[1]["coverage50_cal"] == cov["coverage50_cal"][1] and rec[0]["scale50"] == 2.0
    assert "coverage50_cal" not in coverage_records(samples, truth, "other", loaded)[0]
    with pytest.raises(KeyError, match="no task 'other'"):
        apply_calibration(samples, "other", loaded)
    path.write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="interval calibration file"):
        load_calibration(path)
    assert load_calibration("no-such-model") is None


def test_task_preset_name_and_calibration_note():
    from sgilo.app.calibrate import calibration_note, task_preset_name
    from sgilo.app.presets import preset_config
    from sgilo.bench.tasks import task_params
    s = (3, 64, 64)
    ir3 = task_params("inpaint-random", s, 0, observed=0.03)
    assert task_preset_name("inpaint-random", ir3, s) == "inpaint-random-3"
    assert task_preset_name("cs-gaussian", task_params("cs-gaussian", s, 0, ratio=0.01), s) == "cs-gaussian-1"
    assert task_preset_name("inpaint-box", task_params("inpaint-box", s, 0), s) == "inpaint-box"
    assert task_preset_name("inpaint-random", task_params("inpaint-random", s, 0, observed=0.03, sigma=0.1), s) is None
    assert task_preset_name("denoise", task_params("denoise", s, 0), s) is None          # σ 0.1 is not the 0.2 preset
    cfg = preset_config("utkface64", "sgilo")
    note = calibration_note({"config": {"chains": 3, "steps": [100, 50], "eta": cfg.eta}}, cfg)
    assert "chains 3 (fitted) vs 4" in note and "eta" not in note
    assert calibration_note({"config": {"chains": cfg.chains, "steps": list(cfg.steps)}}, cfg) is None
    # every recorded sampler setting counts (a calibration fitted without the burn-in or with another κ_z does not
    # transfer; these went unnoticed when only chains/steps/eta/eta_h were compared), seed and precision do not
    from sgilo.app.configs import config_dict
    same = config_dict(cfg)
    assert calibration_note({"config": same}, cfg) is None
    assert calibration_note({"config": {**same, "seed": 7, "precision": "fp32"}}, cfg) is None
    note = calibration_note({"config": {**same, "burn_in": 0.0,
                                        "curvature": {**same["curvature"], "kappa_z": 30.0}}}, cfg)
    assert "burn_in 0.0 (fitted)" in note and "curvature" in note and "\n" not in note
