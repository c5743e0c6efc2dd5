"""Equal-budget benchmark (issue 15): budget → steps, measured NFE, the three estimates, faithful CSGM, the variants."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from conftest import make_tiny_generator, masked_problem
from sgilo.bench.budget import planned_nfe, split_steps, with_budget
from sgilo.bench.presets import BENCH_SOLVERS, GENERATIVE, SOLVER_PRESETS, SolverPreset
from sgilo.bench.run import BenchConfig, Outcome, cell_metrics, run_bench
from sgilo.operators.inpainting import Inpainting
from sgilo.solvers import csgm, ilo, sgilo
from sgilo.solvers.sgilo import CurvatureControl
from test_bench import make_zip


# ----------------------------------------------------------------------------
# Budget → steps: every generative solver of the default preset plans the same NFE (K·⌊N/K⌋), proportions kept.


@pytest.mark.parametrize("budget", [300, 1000, 4321])
def test_budget_plans_equal_nfe(budget):
    preset = SOLVER_PRESETS["default"]
    plans = {s: with_budget(preset.config(s), budget, 3) for s in GENERATIVE}
    nfe = {s: planned_nfe(c) for s, c in plans.items()}
    assert set(nfe.values()) == {3 * (budget // 3)}, nfe
    assert plans["csgm"].restarts == plans["ilo"].restarts == plans["sgilo"].chains == 3
    assert plans["sgilo"].curvature is not None and len(plans["sgilo-z"].steps) == 1
    assert len(plans["sgilo"].steps) == 3 and len(plans["sgilo-h1"].steps) == 2        # depth ablation: no h₂ round
    ilo_steps = plans["ilo"].steps                                               # preset proportions 2:2:1:1
    assert ilo_steps[0] == pytest.approx(2 * ilo_steps[2], abs=1) and sum(ilo_steps) == budget // 3 - 1


def test_split_steps_and_small_budgets():
    assert split_steps(10, (2, 1)) == (7, 3) and split_steps(7, (1, 1, 1)) == (3, 2, 2)
    assert sum(split_steps(97, (30, 30, 15, 15))) == 97
    with pytest.raises(ValueError, match="too small"):
        with_budget(SOLVER_PRESETS["default"].config("sgilo"), 30, 3)          # 3 curvature estimates alone: 63
    with pytest.raises(ValueError, match="at least 2 SGILO rounds"):
        BENCH_SOLVERS["sgilo-h1"].config(SOLVER_PRESETS["smoke"].config("sgilo-z"))


# ----------------------------------------------------------------------------
# The plan is what the solvers measure (Result.diagnostics['nfe']), curvature estimates included.


def test_planned_nfe_is_measured(tiny_generator):
    G = tiny_generator
    fit, op, y, _ = masked_problem(G)
    cases = [(csgm, with_budget(csgm.CSGMConfig(steps=5), 40, 2)),
             (ilo, with_budget(ilo.ILOConfig(steps=(2, 2, 1)), 40, 2)),
             (sgilo, with_budget(sgilo.SGILOConfig(steps=(2, 1), eta=1e-6, curvature=CurvatureControl(iters=2)), 40,
                                 2))]
    for mod, cfg in cases:
        r = mod.solve(y, op, G, fit, config=cfg)
        assert r.diagnostics["nfe"] == planned_nfe(cfg) == 40, (mod.__name__, cfg)
        assert r.outputs.shape == (2, 2, 3, 32, 32)


# ----------------------------------------------------------------------------
# CSGM is ILO's round 0: same variables, constraints and streams → the same images (ILO at constant lr, no GeoCross).


def test_ilo_round_zero_is_csgm(tiny_generator):
    G = tiny_generator
    fit, op, y, _ = masked_problem(G)
    a = csgm.solve(y, op, G, fit, config=csgm.CSGMConfig(steps=4, restarts=2, ridge=0.0, seed=3))
    b = ilo.solve(y, op, G, fit, config=ilo.ILOConfig(steps=(4,), restarts=2, rampup=0.0, rampdown=0.0, geocross=0.0,
                                                     seed=3))
    torch.testing.assert_close(a.outputs, b.outputs)
    torch.testing.assert_close(a.x_hat, b.x_hat)
    noisy = csgm.solve(y, op, G, fit, config=csgm.CSGMConfig(steps=4, restarts=2, ridge=0.0, seed=3,
                                                             noise_lookahead=99, project=False))
    assert not torch.allclose(noisy.outputs, a.outputs)                       # csgm-noise frees more variables
    f = torch.tensor(a.diagnostics["final_data_term"])                         # [R, B]
    torch.testing.assert_close(a.x_hat, a.outputs[f.argmin(0), torch.arange(2)])   # x_hat: lowest data term


# ----------------------------------------------------------------------------
# The three estimates against hand-computed values: truth 0, outputs constant c_k, PSNR = 10 log10(4 / c²) and
# SSIM = C1 / (c² + C1), C1 = (0.01 · 2)² (no variance, no covariance).


def test_three_estimates_hand_computed():
    x = torch.zeros(2, 3, 16, 16)
    c = torch.tensor([[0.1, 0.4], [0.3, 0.2], [-0.2, 0.0]])                   # [K = 3, B = 2] constant values
    outputs = c[:, :, None, None, None].expand(3, 2, 3, 16, 16).clone()
    best = torch.tensor([2, 1])                                                # "lowest data term" per image
    op = Inpainting.random((16, 16), 1.0, 0)
    out = Outcome(outputs.mean(0), outputs, best, False, [{}, {}])
    m = cell_metrics(out, x, op.measure(x), op)
    p = (lambda v: 10 * math.log10(4 / v**2))
    means = c.mean(0).tolist()                                                 # [0.0667, 0.2]
    assert m[0]["psnr"] == pytest.approx(p(means[0]), rel=1e-5) and m[1]["psnr"] == pytest.approx(p(means[1]), rel=1e-5)
    assert m[0]["psnr_best"] == pytest.approx(p(0.2), rel=1e-5) and m[1]["psnr_best"] == pytest.approx(p(0.2), rel=1e-5)
    assert m[0]["psnr_sample"] == pytest.approx((p(0.1) + p(0.3) + p(0.2)) / 3, rel=1e-5)
    assert m[1]["psnr_sample"] == math.inf or m[1]["psnr_sample"] > 100                # one exact output (c = 0)
    q = (lambda v: 4e-4 / (v**2 + 4e-4))
    assert m[0]["ssim"] == pytest.approx(q(means[0]), rel=1e-4) and m[0]["ssim_best"] == pytest.approx(q(0.2), rel=1e-4)
    assert m[1]["ssim_sample"] == pytest.approx((q(0.4) + q(0.2) + q(0.0)) / 3, rel=1e-4)
    assert "coverage90" not in m[0]                                            # restarts are not posterior samples
    sampler = cell_metrics(replace(out, samples=True), x, op.measure(x), op)
    assert "coverage90" in sampler[0] and "diversity" in sampler[0]


# ----------------------------------------------------------------------------
# A budgeted bench run on the tiny generator: every generative solver and variant, NFE within 5 %, the summary's
# solver section, estimates and paired SGILO − variant columns.


def test_budget_run_with_variants(tmp_path):
    from sgilo.generator import fit_gaussianized_w

    G = make_tiny_generator(32)
    fit = fit_gaussianized_w(G.mapping, 2000, generator=torch.Generator().manual_seed(0))
    data = make_zip(tmp_path / "data.zip", n_test=2)
    solvers = ("csgm", "csgm-noise", "ilo", "sgilo", "sgilo-gauss", "sgilo-map", "sgilo-h1", "sgilo-z")
    cfg = BenchConfig(data=str(data), out=str(tmp_path / "run"), tasks=("full",), solvers=solvers,
                      n_images=2, preset="smoke", batch=2, budget=24, chains=2, progress=False, figures=False)
    recs = run_bench(cfg, "cpu", models=(G, fit, {}))
    gen = recs
    assert len(gen) == 2 * 8
    nfe = [r["nfe"] for r in gen]
    assert max(nfe) <= 1.05 * min(nfe) and all(r["nfe"] == r["nfe_planned"] == 24 for r in gen)
    for r in gen:
        assert {"psnr", "psnr_best", "psnr_sample", "ssim", "ssim_best", "ssim_sample"} <= set(r["metrics"])
        assert r["K"] == 2
    md = (tmp_path / "run" / "summary.md").read_text()
    assert "### Solvers" in md and BENCH_SOLVERS["csgm"].variables in md and "PSNR of the three estimates" in md
    assert "SGILO − sgilo-map" in md and "SGILO − csgm" in md
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["full"]["csgm"]["psnr"]["n"] == 2 and summary["full"]["ilo"]["nfe"]["mean"] == 24
    assert summary["full"]["sgilo"]["psnr_gain_over_sgilo-z"]["n"] == 2
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["budget"] == 24 and set(conf["nfe_planned"].values()) == {24}


def test_solver_preset_is_typed_and_frozen():
    p = SOLVER_PRESETS["default"]
    assert isinstance(p, SolverPreset) and p.batch == 8 and p.n_images == 64
    with pytest.raises(Exception):
        p.batch = 3
    with pytest.raises(TypeError):
        p.configs["csgm"] = None
    with pytest.raises(ValueError, match="lacks configs"):
        SolverPreset({"csgm": p.configs["csgm"]}, 1, 1, "")
    assert p.config("sgilo-map").beta == math.inf and p.config("csgm-noise").project is False
    assert p.config("sgilo").burn_in > 0 and p.config("sgilo").curvature.kappa_z < 2       # ULA-stable after a burn-in
    noburn = p.config("sgilo-noburn")
    assert noburn.burn_in == 0 and noburn.curvature.kappa_z == 30 and noburn.steps == p.config("sgilo").steps
    noprior = p.config("sgilo-noprior")
    assert noprior.lam == 0 and replace(noprior, lam=p.config("sgilo").lam) == p.config("sgilo")
    with pytest.raises(ValueError, match="budget"):
        BenchConfig(data="d", out="o", budget=0)
    with pytest.raises(ValueError, match="too small"):
        BenchConfig(data="d", out="o", budget=30, chains=3)
