"""GaussianPrior (sgilo.priors.gaussian): the per-feature Gaussian of a learned prior's statistics, VP-diffused in the
prior's normalised units, against the analytic score of N(0, α² + σ²) in those units (Song et al. 2021, Eq. 11)."""

from __future__ import annotations

import pytest
import torch

from sgilo.priors import VPSDE, GaussianScore, LatentPrior, LatentScaler, LatentScoreNet, ScoreNetConfig
from sgilo.priors.gaussian import GaussianPrior, gaussian_priors


def learned(shape=(3, 2, 2), mode="standard", layer=1):
    g = torch.Generator().manual_seed(0)
    data = 0.5 + 0.1 * torch.randn(64, *shape, generator=g) * torch.arange(1, 13).reshape(shape)
    net = LatentScoreNet(ScoreNetConfig(kind="h", latent_shape=shape, d_model=16, depth=1, heads=2))
    return LatentPrior(net, VPSDE(beta_min=0.2, beta_max=15.0), LatentScaler(shape, mode).fit(data), layer=layer)


@pytest.mark.parametrize("t", [0.01, 0.3, 1.0])
def test_gaussian_prior_matches_the_analytic_score(t):
    prior = learned()
    gp = GaussianPrior.like(prior)
    assert gp.latent_shape == prior.latent_shape and gp.kind == "h" and gp.layer == 1 and gp.sde is prior.sde
    x = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    mu, s = prior.scaler.shift, prior.scaler.scale
    a = torch.exp(prior.sde.log_alpha(torch.tensor(t))).float()
    sig = prior.sde.marginal_std(torch.tensor(t)).float()
    want = -(x - mu) / (s**2 * (a**2 + sig**2))                                   # score of N(μ, s²(α² + σ²))
    torch.testing.assert_close(gp.score(x, t), want)
    u = (x - mu) / s                                                              # same law in the prior's units
    ref = GaussianScore(torch.zeros(3, 2, 2), torch.ones(3, 2, 2), prior.sde).score(u, t) / s
    torch.testing.assert_close(gp.score(x, torch.full([5], t)), ref)


def test_standard_is_the_exact_z_prior_and_minmax_is_refused():
    z = torch.randn(4, 8, 16)
    torch.testing.assert_close(GaussianPrior.standard((8, 16)).score(z, 0.01), -z)   # VP: α² + σ² = 1
    with pytest.raises(ValueError, match="standard"):
        GaussianPrior.like(learned(mode="minmax"))
    with pytest.raises(ValueError, match="GaussianPrior input"):
        GaussianPrior.standard((8, 16)).score(torch.randn(4, 8, 15), 0.01)
    gp = gaussian_priors({"h1": learned()}, z_shape=(8, 16))
    assert sorted(gp) == ["h1", "z"] and gp["z"].latent_shape == (8, 16)
