"""Split-R̂ and ESS (Gelman et al. BDA3; Vehtari et al. 2021) on chains with known behaviour."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sgilo.solvers.diagnostics import (count_modes, effective_sample_size, pixel_summaries, split_rhat, summarize,
                                      warn_if_unmixed)


def ar1(n: int, m: int, rho: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, m))
    x[0] = rng.standard_normal(m) / np.sqrt(1 - rho**2)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + rng.standard_normal(m)
    return x


def test_iid_chains_rhat_one_ess_full():
    x = np.random.default_rng(0).standard_normal((2000, 4))
    assert split_rhat(x) == pytest.approx(1.0, abs=0.01)
    assert effective_sample_size(x) == pytest.approx(8000, rel=0.1)


def test_ar1_ess_matches_theory():
    rho = 0.8
    ess = effective_sample_size(ar1(4000, 4, rho))
    assert ess == pytest.approx(16000 * (1 - rho) / (1 + rho), rel=0.2)   # τ = (1+ρ)/(1−ρ) = 9


def test_separated_chains_are_flagged():
    x = np.random.default_rng(1).standard_normal((400, 4)) + np.array([0.0, 0.0, 0.0, 3.0])
    assert split_rhat(x) > 1.1
    trend = np.linspace(0, 5, 400)[:, None] + np.random.default_rng(2).standard_normal((400, 2))
    assert split_rhat(trend) > 1.1                                          # split halves catch a drift in one chain


def test_summarize_and_one_line_message(caplog, recwarn):
    good = torch.randn(200, 3, 2)
    d = summarize({"data": good, "pixels": torch.randn(200, 3, 2, 4)})
    assert len(d["rhat"]["data"]) == 2 and len(d["rhat"]["pixels"][0]) == 4
    assert d["rhat_max"] < 1.1 and warn_if_unmixed(d) is None and d["modes"] == [1, 1] and d["chains"] == 3
    bad = good.clone()
    bad[:, 0] += 10                                                        # chain 0 of both images on another mode
    with caplog.at_level(logging.WARNING, logger="sgilo"):
        msg = warn_if_unmixed(summarize({"data": bad}))
    assert msg is not None and "different faces (2 modes among 3 chains)" in msg and "R̂ = " in msg
    assert "\n" not in msg and caplog.messages == [msg]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]     # no raw Python warning any more
    drift = torch.linspace(0, 8, 200)[:, None, None] + torch.randn(200, 3, 1) * 0.5   # one mode, not converged
    msg = warn_if_unmixed(summarize({"data": drift}))
    assert msg is not None and "not converged within one mode" in msg


def test_count_modes_clusters_chain_means():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6, 2))
    assert count_modes(x) == 1                                             # same law: one mode
    x[:, 2:4] += 20.0                                                      # two chains far away, together
    x[:, 5] -= 20.0                                                        # one more, elsewhere
    assert count_modes(x) == 3
    assert count_modes(x[:, :1]) == 1 and count_modes(x[:1]) == 6         # one chain / too few draws


def test_pixel_summaries_shape():
    x = torch.zeros(3, 3, 8, 8)
    x[1] = 1
    s = pixel_summaries(x)
    assert s.shape == (3, 4) and torch.equal(s[1], torch.ones(4)) and torch.equal(s[0], torch.zeros(4))
