"""Curvature step control of SGILO's Langevin moves (`sgilo.solvers.curvature`): the power-iteration estimate of
ρ = λ_max(D^½ Jᵀ AᵀA J D^½)/σ² against the dense matrix, per-row steps, and the control on the tiny generator."""

from __future__ import annotations

import pytest
import torch

from conftest import MaskOperator, masked_problem

from sgilo.bench.tasks import make_operator
from sgilo.solvers import sgilo
from sgilo.solvers.curvature import preconditioned_curvature, prior_hessian_product, step_scale
from sgilo.solvers.langevin import langevin_step
from sgilo.solvers.objective import DataFidelity
from sgilo.solvers.rng import StackedGenerator


# ----------------------------------------------------------------------------
# A linear "generator" x = M1 v1 + M2 v2: the estimate converges to the dense preconditioned Gauss–Newton λ_max.


@pytest.mark.slow  # > 3 s on 2 cores: make test-slow
def test_preconditioned_curvature_matches_dense():
    g = torch.Generator().manual_seed(0)
    n_img, d1, d2, N = 3 * 4 * 4, 5, 7, 2
    M1, M2 = torch.randn(n_img, d1, generator=g), torch.randn(n_img, d2, generator=g)
    op = make_operator("cs-gaussian", (3, 4, 4), 0, ratio=0.25)
    y = torch.zeros(N, op.A(torch.zeros(1, 3, 4, 4)).shape[1])
    fid = DataFidelity(op, y, sigma_min=0.5)
    etas = (2e-3, 5e-2)

    def image_of(v1, v2):
        return (v1 @ M1.T + v2 @ M2.T).reshape(-1, 3, 4, 4)

    v1, v2 = torch.randn(N, d1, generator=g), torch.randn(N, d2, generator=g)
    start = [torch.randn(N, d1, generator=g), torch.randn(N, d2, generator=g)]
    rho = preconditioned_curvature(image_of, [v1, v2], etas, fid, start, iters=200)
    A = torch.stack([op.A(e.reshape(1, 3, 4, 4)).flatten() for e in torch.eye(n_img)], dim=1)     # [m, n]
    J = torch.cat([M1, M2], dim=1) * torch.cat([torch.full([d1], etas[0]), torch.full([d2], etas[1])]).sqrt()
    exact = float(torch.linalg.eigvalsh(J.T @ A.T @ A @ J / fid.sigma**2).max())
    assert rho.shape == (N,)
    assert torch.allclose(rho, torch.full([N], exact), rtol=1e-3)
    # A Gaussian prior N(0, τ²I) on v1 adds P = λ/τ² on its block (its score −v/τ², differenced numerically).
    tau2, lam = 2e-5, 0.5
    prior = [lambda v, t: prior_hessian_product(lambda a: -a / tau2, v, t, lam), None]
    rho_p = preconditioned_curvature(image_of, [v1, v2], etas, fid, start, iters=3000, priors=prior)
    P = torch.diag(torch.cat([torch.full([d1], lam / tau2 * etas[0]), torch.zeros(d2)]))
    exact_p = float(torch.linalg.eigvalsh(J.T @ A.T @ A @ J / fid.sigma**2 + P).max())
    assert exact_p > exact * 1.05 and torch.allclose(rho_p, torch.full([N], exact_p), rtol=1e-3)
    few = preconditioned_curvature(image_of, [v1, v2], etas, fid, start, iters=2)
    assert bool((few <= rho * (1 + 1e-5)).all())                          # power iteration approaches from below
    with pytest.raises(ValueError, match="iterations"):
        preconditioned_curvature(image_of, [v1, v2], etas, fid, start, iters=0)


def test_step_scale_only_lowers():
    s = step_scale(torch.tensor([0.5, 1.0, 4.0, 0.0]), kappa=1.0)
    assert torch.allclose(s, torch.tensor([1.0, 1.0, 0.25, 1.0]))


# ----------------------------------------------------------------------------
# A per-row step is the scalar step applied row by row (same noise streams).


def test_langevin_step_per_row_eta():
    x, gr, sc = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    eta = torch.tensor([1e-2, 3e-1])
    both = langevin_step(x, gr, sc, eta, generator=StackedGenerator(1, 1, 2))
    for r in range(2):
        gens = StackedGenerator(1, 1, 2)
        one = langevin_step(x, gr, sc, float(eta[r]), generator=gens)
        assert torch.allclose(both[r], one[r], atol=1e-6)
    for bad in (torch.tensor([1e-2]), torch.tensor([1e-2, -1.0]), torch.tensor([1e-2, float("nan")])):
        with pytest.raises(ValueError, match="per-row step size"):
            langevin_step(x, gr, sc, bad)


# ----------------------------------------------------------------------------
# On the tiny generator: a step far too large for a fully observed image blows h up without control and stays
# bounded with it; with a generous κ the control leaves the steps unchanged (same samples as 'none').


def test_curvature_control_on_tiny_generator(tiny_generator):
    G = tiny_generator
    fit, _, _, x = masked_problem(G)
    op = MaskOperator(torch.ones(1, 1, 32, 32), sigma=0.05)
    y = op.measure(x, generator=torch.Generator().manual_seed(3))
    base = dict(steps=(4, 12), chains=2, eta=1e-3, eta_h=0.5, seed=3)
    wild = sgilo.solve(y, op, G, fit, config=sgilo.SGILOConfig(**base))
    ctl = sgilo.solve(y, op, G, fit, config=sgilo.SGILOConfig(**base, curvature=sgilo.CurvatureControl(kappa_h=0.5)))
    assert wild.diagnostics["stopped"] or float(wild.samples.abs().max()) > 1e3
    assert ctl.diagnostics["stopped"] is None and float(ctl.samples.abs().max()) < 20
    rec = ctl.diagnostics["curvature"]
    assert [r["k"] for r in rec] == [0, 1] and [r["kappa"] for r in rec] == [30.0, 0.5] and len(rec[1]["rho"]) == 4
    assert all(0 < s <= 1 for s in rec[1]["scale"]) and min(rec[1]["scale"]) < 1
    assert all(s == pytest.approx(min(1.0, 0.5 / r)) for s, r in zip(rec[1]["scale"], rec[1]["rho"], strict=True))
    easy = dict(base, eta_h=1e-6)
    a = sgilo.solve(y, op, G, fit, config=sgilo.SGILOConfig(**easy))
    b = sgilo.solve(y, op, G, fit, config=sgilo.SGILOConfig(**easy, curvature=sgilo.CurvatureControl(kappa_z=1e12,
                                                                                               kappa_h=1e12)))
    assert torch.allclose(a.samples, b.samples, atol=1e-5)


def test_bad_step_control_raises():
    with pytest.raises(ValueError, match="curvature: expected a CurvatureControl"):
        sgilo.SGILOConfig(curvature="operator")
    with pytest.raises(ValueError, match="kappa_h"):
        sgilo.CurvatureControl(kappa_h=0.0)
    with pytest.raises(ValueError, match="curvature iters"):
        sgilo.CurvatureControl(iters=0)
    with pytest.raises(TypeError):
        sgilo.SGILOConfig(kappa_h=1.0)                                   # the old flat names are gone
    assert sgilo.SGILOConfig().step_control == "none"
    assert sgilo.SGILOConfig(curvature=sgilo.CurvatureControl()).step_control == "curvature"
