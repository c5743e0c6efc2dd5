"""VP-SDE (Song et al. 2021, Eq. 11/29): closed forms, simulation of the discretised SDE, reverse drift."""

from __future__ import annotations

import math

import pytest
import torch

from sgilo.priors.sde import VPSDE, vp_time_for_std


def test_log_alpha_is_minus_half_integral_of_beta():
    sde = VPSDE()
    for t in (0.0, 0.01, 0.3, 1.0):
        s = torch.linspace(0, t, 10001, dtype=torch.float64)
        integral = torch.trapezoid(sde.beta(s), s) if t > 0 else torch.tensor(0.0)
        assert float(sde.log_alpha(t)) == pytest.approx(-0.5 * float(integral), abs=1e-9)
    assert float(sde.marginal_std(1.0)) == pytest.approx(math.sqrt(1 - math.exp(2 * float(sde.log_alpha(1.0)))))
    # the original's numbers at t = 0.01 (docs/original-code.md#sampling-the-hot-sampler)
    assert float(sde.marginal_std(0.01)) == pytest.approx(0.044643, abs=1e-6)
    assert float(sde.marginal_std(1e-6)) == pytest.approx(math.sqrt(0.1 * 1e-6), rel=1e-3)  # float64: no cancellation


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 3, 4, 4)])
def test_marginal_prob_shapes_and_values(shape):
    sde = VPSDE()
    x0 = torch.randn(shape)
    t = torch.tensor([0.1, 0.7])
    mean, std = sde.marginal_prob(x0, t)
    assert mean.shape == x0.shape and std.shape == (2,) and mean.dtype == torch.float32
    for b in range(2):
        a = math.exp(float(sde.log_alpha(float(t[b]))))
        torch.testing.assert_close(mean[b], a * x0[b])
        assert float(std[b]) == pytest.approx(math.sqrt(1 - a * a), rel=1e-6)
    mean_s, std_s = sde.marginal_prob(x0, 0.5)                      # float time broadcasts
    assert std_s.shape == (2,) and torch.allclose(std_s, std_s[0])
    with pytest.raises(ValueError, match="time must be"):
        sde.marginal_prob(x0, torch.ones(3))


def test_discretised_chain_matches_marginals():
    sde = VPSDE()
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([2.0, -1.0])
    x = x0.expand(20000, 2).clone()
    k = 500                                                          # DDPM steps i = 0..k-1 reach t = k / N
    for i in range(k):
        f, G = sde.discretize(x, i / (sde.N - 1))
        x = x + f + G[:, None] * torch.randn(x.shape, generator=g)
    mean, std = sde.marginal_prob(x0[None], k / sde.N)
    assert torch.allclose(x.mean(0), mean[0], atol=0.02)
    assert torch.allclose(x.std(0), std.expand(2), atol=0.02)


def test_euler_maruyama_of_forward_sde_matches_marginals():
    sde = VPSDE()
    g = torch.Generator().manual_seed(1)
    x = torch.full((20000, 1, 1), 1.5)
    n, t_end = 400, 0.4
    dt = t_end / n
    for i in range(n):
        f, gg = sde.sde(x, i * dt)
        x = x + f * dt + gg[:, None, None] * math.sqrt(dt) * torch.randn(x.shape, generator=g)
    mean, std = sde.marginal_prob(torch.full((1, 1, 1), 1.5), t_end)
    assert float(x.mean()) == pytest.approx(float(mean), abs=0.02)
    assert float(x.std()) == pytest.approx(float(std), abs=0.02)


def test_reverse_drift_for_standard_normal_data():
    # data N(0, I) is stationary under the VP-SDE: score = −x, reverse drift = +½βx, probability flow = 0.
    sde = VPSDE()
    x = torch.randn(2, 3, 4)
    t = torch.tensor([0.2, 0.9])
    beta = sde.beta(t).float()[:, None, None]
    torch.testing.assert_close(sde.reverse_drift(x, t, -x), 0.5 * beta * x)
    torch.testing.assert_close(sde.reverse_drift(x, t, -x, probability_flow=True), torch.zeros_like(x))
    with pytest.raises(ValueError, match="score must have the shape"):
        sde.reverse_drift(x, t, x[:, :1])


def test_prior_sampling_and_time_inverse():
    sde = VPSDE()
    a = sde.prior_sampling((3, 4), torch.Generator().manual_seed(5), "cpu")
    b = sde.prior_sampling((3, 4), torch.Generator().manual_seed(5), "cpu")
    assert torch.equal(a, b) and a.shape == (3, 4)
    for t in (0.01, 0.3, 0.9):
        assert vp_time_for_std(sde, float(sde.marginal_std(t))) == pytest.approx(t, rel=1e-9)
    with pytest.raises(ValueError):
        VPSDE(beta_min=1.0, beta_max=0.5)
