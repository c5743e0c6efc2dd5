"""Tests of sgilo.theory: random ReLU generators, Hand–Voroninski quantities, GD / Langevin dynamics (small sizes)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sgilo.theory.dynamics import gradient_descent, langevin, run_chains, seed_generators
from sgilo.theory.experiments import run_theory
from sgilo.theory.generators import ReLUGeneratorConfig, expansive_widths, sample_problems, with_z_star
from sgilo.theory.quantities import angle_map, expected_gradient, quadratic_msd, rho_d, w1_empirical


def test_expansive_widths_rule():
    cfg = ReLUGeneratorConfig(k=10, depth=3, expansion=1.0, min_width=1)
    n = expansive_widths(cfg)
    dims = (10, *n)
    assert all(dims[i + 1] >= dims[i] * math.log(dims[i]) for i in range(3))
    assert expansive_widths(ReLUGeneratorConfig(k=2, depth=2, min_width=32)) == (32, 111)


def test_gradient_matches_autograd_and_batch_independence():
    p = sample_problems(ReLUGeneratorConfig(k=3, depth=3, min_width=16), [4, 5])
    z = torch.randn(2, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f, g = p.loss_and_grad(z)
    zz = z.clone().requires_grad_()
    p.loss(zz).sum().backward()
    torch.testing.assert_close(g, zz.grad, rtol=1e-10, atol=1e-12)
    single = sample_problems(ReLUGeneratorConfig(k=3, depth=3, min_width=16), [5])  # seed 5 alone
    torch.testing.assert_close(single.loss(z[1:]), f[1:], rtol=1e-12, atol=0)
    assert float(p.loss(p.z_star[:, None]).abs().max()) == 0.0


def test_rho_d_and_h_critical_points():
    assert rho_d(1) == pytest.approx(0.0, abs=1e-12)
    assert rho_d(2) == pytest.approx(1 / math.pi, rel=1e-12)  # θ̌_1 = g(π) = π/2 ⇒ ρ_2 = sin(π/2)/π
    assert 0 < rho_d(2) < rho_d(3) < rho_d(5) < 1
    assert float(angle_map(torch.tensor(0.0))) == pytest.approx(0.0, abs=1e-6)
    zs = torch.tensor([[-0.8, 0.6, 0.0]], dtype=torch.float64)
    for d in (2, 3, 4):
        assert float(expected_gradient(zs, zs, d).norm()) < 1e-12
        assert float(expected_gradient(-rho_d(d) * zs, zs, d).norm()) < 1e-12
        assert float(expected_gradient(-0.9 * zs, zs, d).norm()) > 1e-3


# Tolerance: with widths (1000, 4000) and m = 2000, ‖∇f(z) − h_{z*}(z)‖ ≤ 0.2 · max(‖z‖, ‖z*‖)/2^d for every one of
# 100 random z (measured max ≈ 0.11, mean ≈ 0.04), and the mean error is smaller than at widths (100, 500) (≈ 0.13).
def test_empirical_gradient_close_to_expected_for_large_widths():
    z = torch.randn(1, 100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    errs = {}
    for widths, m in (((1000, 4000), 2000), ((100, 500), 250)):
        p = sample_problems(ReLUGeneratorConfig(k=2, depth=2, widths=widths, m=m), [0])
        _, g = p.loss_and_grad(z)
        h = expected_gradient(z, p.z_star[:, None, :], 2)
        errs[widths] = (g - h).norm(dim=-1) / (torch.maximum(z.norm(dim=-1), p.z_star.norm()) / 4)
    big = errs[(1000, 4000)]
    assert float(big.max()) <= 0.2 and float(big.mean()) <= 0.08
    assert float(errs[(100, 500)].mean()) > float(big.mean())


def test_w1_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 50, generator=g, dtype=torch.float64), torch.rand(2, 37, generator=g, dtype=torch.float64)
    got = w1_empirical(a, b)
    for i in range(2):
        assert float(got[i]) == pytest.approx(scipy_stats.wasserstein_distance(a[i], b[i]), rel=1e-10)


def test_langevin_quadratic_piece_matches_ula_prediction():
    # Near z* with large β the chain stays on nearly the same linear piece: E‖z − z*‖² ≈ tr[H⁻¹(I − ηH/2)⁻¹]/β.
    p = sample_problems(ReLUGeneratorConfig(k=3, depth=2, min_width=64, m_factor=10), [3])
    beta, eta = 1e5, 2.0
    z0 = p.z_star[:, None, :].expand(1, 400, 3)
    tr = langevin(p, z0, eta=eta, beta=beta, steps=200, record_every=10, generator=seed_generators([3]))
    msd = tr.dist[tr.steps >= 60].square().mean()
    pred = quadratic_msd(p.hessian_at_star(), beta, eta)[0]
    assert float(msd / pred) == pytest.approx(1.0, abs=0.15)


def test_negation_check_and_langevin_escape_bad_region():
    # Measured behaviour at small sizes (d = 2, k = 5, widths (64, 267), m = 250, 40 seeds, T = 300, η = 2,
    # β = 2^d k / 0.1²): from −ρ_d z* + 0.05u, Langevin reaches ‖z − z*‖ ≤ 0.3 in ≥ 90% of seeds, GD+negation too,
    # and plain GD fails noticeably more often (≥ 10 points lower).
    seeds = list(range(100, 140))
    cfg = ReLUGeneratorConfig(k=5, depth=2, min_width=64, m_factor=25, dtype="float32")
    p = sample_problems(cfg, seeds)
    u = torch.randn(40, 1, 5, generator=torch.Generator().manual_seed(0))
    z0 = -rho_d(2) * p.z_star[:, None] + 0.05 * u / u.norm(dim=-1, keepdim=True)
    beta = 4 * 5 / 0.1 ** 2

    # one batched run: chain 0 = GD, 1 = GD + negation check, 2 = Langevin (same start)
    tr = run_chains(p, z0.repeat(1, 3, 1), eta=2.0, steps=300, temperature=torch.tensor([0.0, 0.0, 1 / beta]),
                    negation=torch.tensor([False, True, False]), generator=seed_generators(seeds))
    gd, neg, lan = ((tr.z - p.z_star[:, None]).norm(dim=-1) <= 0.3).float().mean(0).tolist()
    assert lan >= 0.9 and neg >= 0.9
    assert gd <= lan - 0.1


def test_noise_depends_on_seed_not_batch():
    cfg = ReLUGeneratorConfig(k=2, depth=2, min_width=16)
    both, one = sample_problems(cfg, [7, 8]), sample_problems(cfg, [8])
    z0 = torch.zeros(2, 3, 2, dtype=torch.float64) + 0.3
    a = run_chains(both, z0, eta=1.0, steps=5, temperature=0.01, generator=seed_generators([7, 8]))
    b = run_chains(one, z0[1:], eta=1.0, steps=5, temperature=0.01, generator=seed_generators([8]))
    torch.testing.assert_close(a.z[1:], b.z, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="expected 2 generators"):
        run_chains(both, z0, eta=1.0, steps=1, temperature=0.01, generator=seed_generators([1]))


def test_with_z_star_sets_zero_loss():
    p = sample_problems(ReLUGeneratorConfig(k=2, depth=2, min_width=16), [0])
    q = with_z_star(p, torch.tensor([[0.3, -0.4]], dtype=torch.float64))
    assert float(q.loss(q.z_star[:, None]).abs().max()) == 0.0
    assert float(q.loss(p.z_star[:, None])) > 0
    near = q.z_star[:, None] + torch.tensor([[[0.02, -0.01]]], dtype=torch.float64)
    tr = gradient_descent(q, near, eta=2.0, steps=200, record_every=50)
    assert float(tr.dist[-1].max()) < 1e-6 < float(tr.dist[0].max())  # GD converges inside the convex region


def test_run_theory_quick_writes_json_and_png(tmp_path):
    res = run_theory("concentration", tmp_path, quick=True)
    data = json.loads((tmp_path / "concentration.json").read_text())
    assert (tmp_path / "concentration.png").stat().st_size > 1000
    assert data["msd_measured"] == res["concentration"]["msd_measured"]
    assert data["msd_measured"][0] > data["msd_measured"][-1]  # hotter chains spread more
    with pytest.raises(ValueError, match="expected one of"):
        run_theory("nope", tmp_path, quick=True)
