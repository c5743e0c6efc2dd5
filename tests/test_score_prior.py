"""LatentPrior / GaussianScore scores (units, chain rule), the DSM loss ordering, and prior checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sgilo.priors import (VPSDE, GaussianScore, LatentPrior, LatentScaler, LatentScoreNet, ScoreNetConfig, dsm_loss,
                          eps_to_score, load_prior, save_prior)


def make_prior(kind="h", shape=(6, 4, 4), layer=1, seed=0) -> LatentPrior:
    torch.manual_seed(seed)
    net = LatentScoreNet(ScoreNetConfig(kind=kind, latent_shape=shape, d_model=32, depth=2, heads=2))
    for p in net.out.parameters():                      # non-zero output layer so outputs depend on every weight
        nn.init.normal_(p, std=0.1)
    scaler = LatentScaler(shape).fit(torch.randn(64, *shape) * 3 + 1)
    return LatentPrior(net, VPSDE(), scaler, layer=layer)


class ExactStdNormalEps(nn.Module):
    """ε̂ = σ(t) u: the exact ε-predictor for N(0, I) data (p_t = N(0, I), score −u)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg, self.sde = cfg, VPSDE()

    def forward(self, u, t):
        return self.sde.marginal_std(t).float().reshape(-1, *[1] * (u.ndim - 1)) * u


@pytest.mark.parametrize("kind,shape,layer", [("z", (5, 8), 0), ("h", (6, 4, 4), 1)])
def test_score_in_raw_units_uses_chain_rule(kind, shape, layer):
    prior = make_prior(kind, shape, layer)
    prior.net = ExactStdNormalEps(prior.net.cfg)
    x = torch.randn(2, *shape) * 2
    # u ~ N(0, I) at every t  ⇒  raw x = shift + scale·u ~ N(shift, scale²): score −(x − shift)/scale².
    expect = -(x - prior.scaler.shift) / prior.scaler.scale.square()
    torch.testing.assert_close(prior.score(x, 0.3), expect, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(prior.score(x, torch.tensor([0.3, 0.3])), expect, rtol=1e-4, atol=1e-5)
    # Tweedie denoiser of N(0, I) data: E[u_0 | u_t] = α u_t.
    a = float(prior.sde.log_alpha(0.3).exp())
    u = prior.scaler.normalize(x)
    torch.testing.assert_close(prior.denoise(x, 0.3), prior.scaler.denormalize(a * u), rtol=1e-4, atol=1e-4)


def test_eps_to_score_and_prior_validation():
    eps_hat, sigma = torch.randn(2, 3, 4), torch.tensor([0.5, 0.1])
    torch.testing.assert_close(eps_to_score(eps_hat, sigma), -eps_hat / sigma[:, None, None])
    prior = make_prior()
    assert prior.kind == "h" and prior.layer == 1 and prior.latent_shape == (6, 4, 4)
    assert prior.score(torch.randn(2, 6, 4, 4), 0.5).shape == (2, 6, 4, 4)
    with pytest.raises(ValueError, match="h-prior input"):
        prior.score(torch.randn(2, 6, 8, 8), 0.5)
    with pytest.raises(ValueError, match="layer"):
        LatentPrior(prior.net, prior.sde, prior.scaler, layer=0)


def test_gaussian_score_matches_autograd_of_log_density():
    mean, var = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[0.5, 2.0, 1.0]])
    prior = GaussianScore(mean, var)
    x = torch.randn(4, 1, 3, requires_grad=True)
    t = 0.4
    a, s = float(prior.sde.log_alpha(t).exp()), float(prior.sde.marginal_std(t))
    logp = torch.distributions.Normal(a * mean, (a * a * var + s * s).sqrt()).log_prob(x).sum()
    (grad,) = torch.autograd.grad(logp, x)
    torch.testing.assert_close(prior.score(x.detach(), t), grad)


@pytest.mark.parametrize("weighting", [False, True])
def test_dsm_loss_is_lower_for_true_score(weighting):
    # Gaussian data N(m, v): the true score has lower DSM loss than perturbed scores (same noise draws).
    mean, var = torch.tensor([[0.5, -1.0, 0.0, 2.0]]), torch.tensor([[0.3, 1.0, 2.0, 0.5]])
    g = torch.Generator().manual_seed(0)
    x0 = mean + var.sqrt() * torch.randn(4096, 1, 4, generator=g)
    sde = VPSDE()

    def eps_fn_of(prior):
        return lambda x, t: -sde.marginal_std(t.double()).float()[:, None, None] * prior.score(x, t)

    def loss(prior):
        return float(dsm_loss(eps_fn_of(prior), sde, x0, likelihood_weighting=weighting,
                              generator=torch.Generator().manual_seed(1)))

    true = loss(GaussianScore(mean, var))
    for bad in (GaussianScore(mean + 0.3, var), GaussianScore(mean, var * 1.5), GaussianScore(mean, var * 0.6)):
        assert true < loss(bad)
    # The exact score's loss is E_t[λ(t) mean_d Var(ε_d | x_t)] with Var(ε_d | x_t) = α²v_d / (α²v_d + σ²) for
    # Gaussian data and λ = 1 (ε-loss) or β/σ² (likelihood weighting): quadrature over t vs the Monte-Carlo estimate.
    t = torch.linspace(1e-3, sde.T, 100_001, dtype=torch.float64)
    a2, s2 = torch.exp(2 * sde.log_alpha(t))[:, None], sde.marginal_std(t).square()[:, None]
    lam = sde.beta(t) / s2[:, 0] if weighting else torch.ones_like(t)
    expected = float(torch.trapezoid(lam * (a2 * var.double() / (a2 * var.double() + s2)).mean(1), t)) / (sde.T - 1e-3)
    assert abs(true / expected - 1) < 0.12


def test_save_load_roundtrip(tmp_path):
    prior = make_prior("z", (5, 8), 0)
    x, t = torch.randn(2, 5, 8), torch.tensor([0.2, 0.7])
    save_prior(tmp_path / "p", prior)
    loaded = load_prior(tmp_path / "p")
    assert loaded.kind == "z" and loaded.layer == 0 and loaded.latent_shape == (5, 8)
    torch.testing.assert_close(loaded.score(x, t), prior.score(x, t))
    save_prior(tmp_path / "p16", prior, dtype=torch.float16)
    half = load_prior(str(tmp_path / "p16.json"))
    torch.testing.assert_close(half.scaler.scale, prior.scaler.scale)          # statistics stay fp32
    torch.testing.assert_close(half.score(x, t), prior.score(x, t), rtol=0.02, atol=0.02)
    assert (tmp_path / "p16.safetensors").stat().st_size < 0.6 * (tmp_path / "p.safetensors").stat().st_size


def test_bundled_name_and_bad_files(tmp_path):
    import sgilo.priors.io as pio
    if not (pio.MODELS_DIR / "prior_h7.safetensors").exists():
        with pytest.raises(FileNotFoundError, match="bundled prior 'h7'"):
            load_prior("h7")
    with pytest.raises(FileNotFoundError):
        load_prior(tmp_path / "missing")
    from sgilo.checkpoints import save_model
    save_model(tmp_path / "g", "generator", {}, {"a": torch.zeros(1)})
    with pytest.raises(ValueError, match="sgilo/prior"):
        load_prior(tmp_path / "g")


def test_patch_tokens_roundtrip_and_validation():
    net = LatentScoreNet(ScoreNetConfig(kind="h", latent_shape=(6, 8, 8), d_model=32, depth=1, heads=2, patch=2))
    u = torch.randn(2, 6, 8, 8)
    tok = net.to_tokens(u)
    assert tok.shape == (2, 16, 24)
    torch.testing.assert_close(tok[0, 0].reshape(6, 2, 2), u[0, :, :2, :2])           # first token = top-left patch
    torch.testing.assert_close(net.from_tokens(tok), u)
    assert net(u, torch.rand(2)).shape == u.shape
    with pytest.raises(ValueError, match="patch"):
        ScoreNetConfig(kind="h", latent_shape=(6, 8, 8), patch=3)
    with pytest.raises(ValueError, match="patch"):
        ScoreNetConfig(kind="z", latent_shape=(4, 8), patch=2)


# ----------------------------------------------------------------------------
# Gaussian skip: with a zero correction the network is the exact ε of a standard Gaussian, so the prior's score is
# the exact score of N(shift, scale²) (VP-diffused in normalised units); the flag survives save/load.


def test_gaussian_skip_gives_exact_gaussian_score(tmp_path):
    from sgilo.priors.io import load_prior, save_prior
    shape = (6, 4, 4)
    net = LatentScoreNet(ScoreNetConfig(kind="h", latent_shape=shape, d_model=16, depth=1, heads=2)).eval()
    g = torch.Generator().manual_seed(0)                                      # output layer starts at zero
    data = 0.3 + 0.5 * torch.randn(4000, *shape, generator=g)
    scaler = LatentScaler(shape).fit(data)
    prior = LatentPrior(net, VPSDE(), scaler, layer=1, gaussian_skip=True)
    x = 0.3 + 0.5 * torch.randn(3, *shape, generator=g)
    u = scaler.normalize(x)
    for t in (0.01, 0.3, 1.0):
        # normalised space: data N(0, I) stays N(0, I) under the VP-SDE, score −u at every t
        torch.testing.assert_close(prior.score_normalized(u, t), -u, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(prior.score(x, t), -(x - scaler.shift) / scaler.scale.square(), rtol=1e-4,
                                   atol=1e-4)
    save_prior(tmp_path / "p", prior)
    again = load_prior(tmp_path / "p")
    assert again.gaussian_skip
    torch.testing.assert_close(again.score(x, 0.3), prior.score(x, 0.3), rtol=1e-4, atol=1e-4)


def test_dsm_mixed_t_sampling_puts_mass_at_small_t():
    ts = {}

    def eps_fn(mode):
        def f(x, t):
            ts[mode] = t
            return torch.zeros_like(x)
        return f

    x0 = torch.randn(20000, 2)
    for mode in ("uniform", "mixed"):
        dsm_loss(eps_fn(mode), VPSDE(), x0, generator=torch.Generator().manual_seed(0), t_sampling=mode)
    small = {m: float((t < 0.01).float().mean()) for m, t in ts.items()}
    # uniform: (0.01 - 1e-3) / (1 - 1e-3) ≈ 0.009; mixed: ½·0.009 + ½·log(10)/log(1000) ≈ 0.171
    assert abs(small["uniform"] - 0.009) < 0.003 and abs(small["mixed"] - 0.171) < 0.01
    assert float(ts["mixed"].min()) >= 1e-3 - 1e-9 and float(ts["mixed"].max()) <= 1.0
    with pytest.raises(ValueError, match="t_sampling"):
        dsm_loss(eps_fn("x"), VPSDE(), x0, t_sampling="beta")


# The skip moved from the network into the prior wrapper: prior files of the old form (the flag and the β range in the
# network config, as the former bundled transformer priors were written) load and give the scores of the old formula
# s = −(F_θ(u, t) + σ_net(t)·u) / σ(t) / scale, with σ_net from the β range stored in the network config.


def test_legacy_prior_files_keep_their_scores_after_moving_the_skip(tmp_path):
    import json

    from sgilo.priors.io import save_prior
    prior = make_prior("h", (6, 4, 4), 1)
    prior.gaussian_skip = True
    save_prior(tmp_path / "p", prior)
    meta = json.loads((tmp_path / "p.json").read_text())
    cfg = meta["config"]
    for k in ("kind", "latent_shape", "structured"):
        cfg.pop(k, None)
    cfg["net"].update({"gaussian_skip": cfg.pop("gaussian_skip"), "beta_min": 0.1, "beta_max": 20.0})
    (tmp_path / "p.json").write_text(json.dumps(meta))
    loaded = load_prior(tmp_path / "p")
    stored = cfg["net"]
    assert loaded.gaussian_skip and "gaussian_skip" not in loaded.net.cfg.to_dict()
    g = torch.Generator().manual_seed(0)
    x = loaded.scaler.denormalize(torch.randn(3, *loaded.latent_shape, generator=g))
    t = torch.tensor([0.01, 0.3, 0.9])
    u = loaded.scaler.normalize(x)
    sigma_net = VPSDE(stored["beta_min"], stored["beta_max"]).marginal_std(t).float()
    eps_old = loaded.net(u, t) + sigma_net.reshape(-1, *[1] * (u.ndim - 1)) * u
    old = eps_to_score(eps_old, loaded.sde.marginal_std(t)) / loaded.scaler.scale
    assert float((loaded.score(x, t) - old).abs().max()) < 1e-5
    assert not torch.allclose(loaded.net(u, t), loaded.eps(u, t))        # the network alone no longer has the skip


def test_legacy_prior_config_with_a_different_beta_range_is_refused():
    from sgilo.priors.score import read_prior_config
    config = {"net": {"kind": "z", "latent_shape": [2, 4], "gaussian_skip": True, "beta_min": 0.2, "beta_max": 20.0},
              "sde": {"beta_min": 0.1, "beta_max": 20.0, "T": 1.0, "N": 1000}}
    with pytest.raises(ValueError, match="Gaussian skip's β range"):
        read_prior_config(config)
    config["net"]["beta_min"] = 0.1
    assert read_prior_config(config) == (ScoreNetConfig(kind="z", latent_shape=(2, 4)), True)

