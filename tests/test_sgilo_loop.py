"""SGILO's explicit loop (Daras et al., ICML 2022, Eq. 5) and the solver bookkeeping of issue 16: NFE counts of every
solver, the blow-up guard, how far h_k moves, the annealed score time and the likelihood's noise level."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from conftest import MaskOperator, masked_problem
from sgilo.bench.run import stopped_per_image
from sgilo.solvers import csgm, ilo, sgilo
from sgilo.solvers.configs import replace_nested
from sgilo.solvers.rounds import begin_round, h_move, init_iterate, make_problem


@pytest.fixture
def setup(tiny_generator):
    fit, op, y, x = masked_problem(tiny_generator)
    return tiny_generator, fit, op, y, x


# ----------------------------------------------------------------------------
# NFE = generator-tail row evaluations / B (sgilo.solvers.rounds): the closed forms of each solver.


def test_nfe_counts_match_the_formulas(setup):
    G, fit, op, y, _ = setup
    r = csgm.solve(y, op, G, fit, config=csgm.CSGMConfig(steps=2, restarts=3))
    assert r.diagnostics["nfe"] == 3 * (2 + 1)                             # R (steps + final render)
    r = ilo.solve(y, op, G, fit, config=ilo.ILOConfig(steps=(2, 1, 1)))
    assert r.diagnostics["nfe"] == 2 + 1 + 1 + 1
    base = sgilo.SGILOConfig(steps=(2, 1), chains=2, eta=1e-6)
    r = sgilo.solve(y, op, G, fit, config=base)
    assert r.diagnostics["nfe"] == 2 * (2 + 1 + 1)                         # K (Σ steps + final)
    assert len(r.diagnostics["final_data_term"]) == 2 and len(r.diagnostics["final_data_term"][0]) == 2
    iters = 2
    r = sgilo.solve(y, op, G, fit, config=replace(base, curvature=sgilo.CurvatureControl(iters=iters)))
    assert r.diagnostics["nfe"] == 2 * (2 + 1 + 1) + 2 * 2 * (2 * iters + 1)   # + K (2 iters + 1) per round
    r = sgilo.solve(y, op, G, fit, config=replace(base, mode="reference"))
    assert r.diagnostics["nfe"] == 2 * (2 + 1 + 1)


# ----------------------------------------------------------------------------
# Blow-up guard: a step far too large rolls back, halves the step of the chain, then stops with one line; finite result.


def test_blowup_guard_rolls_back_halves_and_stops(setup, caplog):
    G, fit, op, y, _ = setup
    cfg = sgilo.SGILOConfig(steps=(6, 6), chains=2, eta=1e-6, eta_h=1e3, seed=1,
                            guard=sgilo.BlowupGuard(retries=2))
    with caplog.at_level(logging.WARNING, logger="sgilo"):
        r = sgilo.solve(y, op, G, fit, config=cfg)
    msg = r.diagnostics["stopped"]
    assert msg is not None and "blow-up in round k=1" in msg and "after 2 roll-backs with the step halved" in msg
    assert "eta_h" in msg and msg in caplog.text and "\n" not in msg
    assert torch.isfinite(r.samples).all() and float(r.samples.abs().max()) < 1e3
    assert max(r.diagnostics["halvings"]) == 3


# One chain that blows up stops alone: the other chains of the batch go on exactly as they would without it (before,
# the first exhausted chain ended the run for all K·B rows).


def test_blowup_guard_stops_only_the_chain_that_blew_up(setup, caplog):
    G, fit, op, y, _ = setup
    y2 = y.clone()
    y2[1] = 30 * y2[1]                                                      # image 1: a stiff data term
    cfg = sgilo.SGILOConfig(steps=(3, 6), chains=2, eta=1e-6, eta_h=1e-4, seed=1, guard=sgilo.BlowupGuard(retries=2))
    with caplog.at_level(logging.WARNING, logger="sgilo"):
        both = sgilo.solve(y2, op, G, fit, config=cfg)
    alone = sgilo.solve(y2[:1], op, G, fit, config=cfg)
    assert torch.allclose(both.samples[:, 0], alone.samples[:, 0], atol=1e-4)   # image 0 unaffected
    assert both.diagnostics["stopped_rows"] == [3]                          # row c·B + b: chain 1 of image 1
    msg = both.diagnostics["stopped"]
    assert "chain row(s) [3]" in msg and "3 of 4 chains go on" in msg and msg in caplog.text and "\n" not in msg
    assert alone.diagnostics["stopped"] is None and alone.diagnostics["stopped_rows"] == []
    assert torch.isfinite(both.samples).all() and float(both.samples.abs().max()) < 1e3
    assert stopped_per_image(both.diagnostics, 2) == [None, msg]            # the bench blames image 1 only


def test_blowup_guard_catches_a_finite_blowup(setup):
    G, fit, op, y, _ = setup
    problem = make_problem(y, op, G, fit, 1, 0, 0.05, None, False)
    it = begin_round(problem, init_iterate(problem), 1, 0)
    rb = sgilo.Rollback.at(it, sgilo.BlowupGuard(data_rise=2.0, retries=5), m=10)         # allowance 2 · 10 = 20
    before = {n: p.detach().clone() for n, p in it.params().items()}
    bad, _ = rb.check(it, before, torch.tensor([1.0, 2.0]))                 # sets the round-start f
    assert not bad.any()
    with torch.no_grad():
        it.h.mul_(2.0)                                                             # a finite move, kept
    before = {n: p.detach().clone() for n, p in it.params().items()}
    bad, why = rb.check(it, before, torch.tensor([21.0, 100.0]))            # row 0: +20 (allowed), row 1: +98
    assert bad.tolist() == [False, True] and "data term 100 > its round-start 2 + 20" in why[0]
    assert rb.backoff.tolist() == [1.0, 0.5] and rb.steps({"z": 2.0})["z"].tolist() == [2.0, 1.0]
    assert torch.equal(it.h[1], rb.good["h"][1]) and not torch.equal(it.h[1], before["h"][1])
    assert sgilo.Rollback.at(it, sgilo.BlowupGuard(), m=10, beta=0.5).allowance == 40.0   # rank/(2β): scales with 1/β


def test_blowup_guard_catches_a_30_fold_rise_of_a_chain_started_at_a_mode(setup):
    # A chain that starts at a burn-in's mode (f0 = 7e5, m = 10 000 measurements) and whose unstable steps multiply its
    # deviation every step: f = 7.7e5, then 2.4e6 (seen on a CSGM-protocol face at m = 10 000). The former threshold
    # (1000 × f0) let such a chain end 30× above f0; the default allowance 2 m = 20 000 stops it at the first rise.
    G, fit, op, y, _ = setup
    problem = make_problem(y, op, G, fit, 1, 0, 0.05, None, False)
    it = begin_round(problem, init_iterate(problem), 1, 0)
    rb = sgilo.Rollback.at(it, sgilo.BlowupGuard(), m=10_000)
    before = {n: p.detach().clone() for n, p in it.params().items()}
    rb.check(it, before, torch.tensor([7.0e5, 7.0e5]))
    bad, _ = rb.check(it, before, torch.tensor([7.1e5, 7.7e5]))             # +10 000 (a sampling chain), +70 000
    assert bad.tolist() == [False, True]


# ----------------------------------------------------------------------------
# h_move = ‖h_k − head_k(z)‖ / ‖head_k(z)‖: 0 at the start of round 1, ≈ 0 when h barely moves, > 0 when it moves.


def test_h_move(setup):
    G, fit, op, y, _ = setup
    problem = make_problem(y, op, G, fit, 1, 0, 0.05, None, False)
    it = begin_round(problem, init_iterate(problem), 1, 0)
    assert h_move(problem, it).abs().max() < 1e-6 and h_move(problem, init_iterate(problem)) is None
    still = sgilo.solve(y, op, G, fit, config=sgilo.SGILOConfig(steps=(2, 4), chains=2, eta=1e-6, eta_h=1e-30))
    moved = sgilo.solve(y, op, G, fit, config=sgilo.SGILOConfig(steps=(2, 4), chains=2, eta=1e-6, eta_h=1e-4))
    s, m = still.diagnostics["h_move"], moved.diagnostics["h_move"]
    assert [d["k"] for d in s] == [1] and len(s[0]["rows"]) == 4
    assert s[0]["mean"] < 1e-5 and m[0]["mean"] > 1e-3 and m[0]["start"] < 1e-6


# ----------------------------------------------------------------------------
# Annealed score time: the prior is called at t_max … t_min (geometric) within each round; default t_h throughout.


class RecordingPrior:
    def __init__(self, shape):
        self.latent_shape, self.times = tuple(shape), []

    def score(self, x, t):
        self.times.append(float(t[0]))
        return -x


def test_t_schedule_is_geometric_within_each_round(setup):
    G, fit, op, y, _ = setup
    p = RecordingPrior((G.synthesis.num_ws, G.synthesis.w_dim))
    sgilo.solve(y, op, G, fit, priors={"z": p}, config=sgilo.SGILOConfig(steps=(3, 3), chains=1, eta=1e-6,
                                                                          t_schedule=(0.4, 0.1)))
    assert p.times == pytest.approx([0.4, 0.2, 0.1] * 2)
    p.times.clear()
    sgilo.solve(y, op, G, fit, priors={"z": p}, config=sgilo.SGILOConfig(steps=(2,), chains=1, eta=1e-6))
    assert p.times == pytest.approx([0.01, 0.01])
    for bad in ((0.1, 0.4), (0.5,), (2.0, 0.1)):
        with pytest.raises(ValueError, match="t_schedule"):
            sgilo.SGILOConfig(t_schedule=bad)


def test_t_schedule_spans_the_burn_in_and_the_langevin_steps(setup):
    # Before: the burn-in's Adam steps read the prior at t_h and only the Langevin steps after it were annealed, so with
    # the preset's burn-in 0.8 the schedule reached a fifth of each round.
    G, fit, op, y, _ = setup
    p = RecordingPrior((G.synthesis.num_ws, G.synthesis.w_dim))
    cfg = sgilo.SGILOConfig(steps=(5,), chains=1, eta=1e-6, burn_in=0.6, t_schedule=(0.8, 0.05))
    sgilo.solve(y, op, G, fit, priors={"z": p}, config=cfg)
    assert p.times == pytest.approx([0.8, 0.4, 0.2, 0.1, 0.05])


# ----------------------------------------------------------------------------
# The likelihood's σ is the operator's whenever it declares one; σ_min stands in only for a noiseless operator. (The
# former floor max(σ, σ_min) made SGILO assume σ = 0.05 in the CSGM protocol's σ = 0.01 problems.)


@pytest.mark.parametrize("sigma, expected", [(0.0, 0.05), (0.01, 0.01), (0.2, 0.2)])
def test_likelihood_follows_the_operator_noise(setup, sigma, expected):
    G, fit, _, _, x = setup
    op = MaskOperator((torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2)) < 0.3).float(), sigma=sigma)
    y = op.measure(x, generator=torch.Generator().manual_seed(3))
    r = sgilo.solve(y, op, G, fit, config=sgilo.SGILOConfig(steps=(2,), chains=1, eta=1e-6, sigma_min=0.05))
    assert r.diagnostics["sigma_eff"] == pytest.approx(expected)
    fid = make_problem(y, op, G, fit, 1, 0, 0.05, None, False).fidelity
    x0 = torch.zeros_like(x)
    torch.testing.assert_close(fid(x0), (op.A(x0) - y).square().flatten(1).sum(1) / (2 * expected**2))


# ----------------------------------------------------------------------------
# One public step function: sgilo_step moves every variable of the round once and returns (image, f) before the move.


def test_sgilo_step_is_one_langevin_step(setup):
    G, fit, op, y, _ = setup
    c = sgilo.SGILOConfig(chains=2, steps=(1, 1), eta=1e-6)
    problem = make_problem(y, op, G, fit, 2, 0, 0.05, None, False)
    it = begin_round(problem, init_iterate(problem), 1, 0)
    before = {n: p.detach().clone() for n, p in it.params().items()}
    parts = []
    x, f = sgilo.sgilo_step(problem, it, sgilo.step_sizes(it, c), {}, c, timer=parts.append)
    assert parts == ["generator", "score", "update"] and x.shape == (4, 3, 32, 32) and f.shape == (4,)
    assert all(not torch.equal(before[n], p.detach()) for n, p in it.params().items())
    assert problem.nfe == 2


def test_replace_nested():
    c = replace_nested(sgilo.SGILOConfig(curvature=sgilo.CurvatureControl()),
                       {"eta": 1e-3, "curvature.kappa_z": 10.0, "reference.lr": 0.01})
    assert c.eta == 1e-3 and c.curvature.kappa_z == 10.0 and c.curvature.kappa_h == 1.0 and c.reference.lr == 0.01
    with pytest.raises(ValueError, match="unknown option 'kappa_z'"):
        replace_nested(c, {"kappa_z": 1.0})
    with pytest.raises(ValueError, match="no sub-options"):
        replace_nested(sgilo.SGILOConfig(), {"curvature.kappa_z": 1.0})


def test_fit_on_the_fly_is_one_logged_line_in_the_diagnostics(setup, caplog, monkeypatch):
    import sgilo.solvers.rounds as rounds
    from sgilo.solvers.rounds import FIT_ON_THE_FLY
    G, fit, op, y, _ = setup
    monkeypatch.setattr(rounds, "fit_gaussianized_w", lambda mapping, n, generator: fit)   # the 100 000-sample fit
    with caplog.at_level(logging.WARNING, logger="sgilo"):
        r = sgilo.solve(y, op, G, None, config=sgilo.SGILOConfig(steps=(1,), chains=1, eta=1e-6))
    assert r.diagnostics["notes"] == [FIT_ON_THE_FLY] and caplog.text.count(FIT_ON_THE_FLY) == 1


def test_tune_grid_names_nested_options():
    from sgilo.bench.tune import grid_points
    base = sgilo.SGILOConfig(curvature=sgilo.CurvatureControl())
    points = grid_points({"curvature.kappa_z": [10.0, 100.0], "t_schedule": [[0.1, 0.01]]}, base)
    assert [replace_nested(base, p).curvature.kappa_z for p in points] == [10.0, 100.0]
    assert replace_nested(base, points[0]).t_schedule == (0.1, 0.01)
    with pytest.raises(ValueError, match="kappa_z"):
        grid_points({"kappa_z": [1.0]}, base)


# ----------------------------------------------------------------------------
# Burn-in: the first fraction of a round's steps are Adam steps on U = f − λ log p (same NFE); the prior enters through
# the surrogate −λ⟨sg(s), v⟩, whose gradient is −λ s, with the z rows of earlier blocks held fixed.


def test_burn_in_options_are_checked():
    for bad in ({"burn_in": (0.5, 0.5)}, {"burn_in": 1.0}, {"burn_in": -0.1}, {"burn_in_lr": 0.0}):
        with pytest.raises(ValueError, match="burn_in|burn-in"):
            sgilo.SGILOConfig(steps=(2, 1), **bad)


def test_burn_in_reaches_a_lower_data_term_at_the_same_nfe(setup):
    G, fit, op, y, _ = setup
    cfg = sgilo.SGILOConfig(steps=(12, 4), chains=2, eta=1e-7, seed=3)
    plain = sgilo.solve(y, op, G, fit, config=cfg)
    burnt = sgilo.solve(y, op, G, fit, config=replace(cfg, burn_in=0.75))
    assert burnt.diagnostics["nfe"] == plain.diagnostics["nfe"]
    assert burnt.traces["data"].shape == plain.traces["data"].shape
    torch.testing.assert_close(burnt.traces["data"][0], plain.traces["data"][0])     # same start
    assert float(burnt.traces["data"][-1].mean()) < 0.5 * float(plain.traces["data"][-1].mean())
    assert burnt.traces["burn"].tolist() == [True] * 9 + [False] * 3 + [True] * 3 + [False]   # R̂/ESS skip these
    assert not plain.traces["burn"].any()


def test_prior_surrogate_gradient_is_minus_lambda_score(setup):
    from sgilo.priors.gaussian import GaussianPrior
    G, fit, op, y, _ = setup
    problem = make_problem(y, op, G, fit, 1, 0, 0.05, None, False)
    it = begin_round(problem, init_iterate(problem), 1, 0)
    prior = GaussianPrior(torch.randn(it.h.shape[1:]), torch.rand(it.h.shape[1:]) + 0.5, kind="h", layer=1)
    mask = sgilo.active_rows(problem.synthesis, 1, it.z)
    params = it.params()
    grads = dict(zip(params, torch.autograd.grad(sgilo.prior_surrogate(it, {"h1": prior}, 0.05, 0.7, mask).sum(),
                                                 list(params.values())), strict=True))
    torch.testing.assert_close(grads["h"], -0.7 * prior.score(it.h.detach(), torch.full([it.h.shape[0]], 0.05)))
    torch.testing.assert_close(grads["z"], 0.7 * it.z.detach() * mask)                # N(0, I): −s = z; rows < 2k−1: 0
    assert float(mask.sum()) < mask.numel() and bool((grads["z"][:, 0] == 0).all())
    for n in params:
        if n.startswith("n"):
            torch.testing.assert_close(grads[n], 0.7 * params[n].detach())


def test_a_burn_in_that_blows_up_falls_back_to_the_round_start(setup):
    G, fit, op, y, _ = setup
    cfg = sgilo.SGILOConfig(steps=(2, 6), chains=2, eta=1e-7, eta_h=1e-7, burn_in=0.5, burn_in_lr=1e30, seed=1)
    r = sgilo.solve(y, op, G, fit, config=cfg)
    assert not torch.isfinite(r.traces["data"][2:5]).all()                # the burn-in of round 1 did blow up
    assert torch.isfinite(r.samples).all() and r.diagnostics["stopped"] is None
