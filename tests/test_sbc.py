"""Simulation-based calibration (Talts et al. 2018) of the real Langevin update of SGILO on a linear-Gaussian model.

Model: z ~ N(0, I_d), x = W z + b, y = A x + σ ε. The posterior of z is Gaussian and the update under test is
`sgilo.solvers.langevin.langevin_step` (the per-variable ULA move of SGILO, Eq. 5) with the exact prior score −z. The
right sampler (β = 1) must pass the uniformity test on every summary; the same update with β = 4 (step noise
sqrt(2η/β) halved, stationary covariance / 4, std halved) must fail with U-shaped (under-dispersed) ranks.
Seed 0's posterior precision has eigenvalues 1.6–6.5: ηλ ≤ 0.13 (ULA std inflation ≤ 3.4 %) and 500 steps are ≥ 15
relaxation times 1/(ηλ), so chains started from the prior have forgotten their start.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgilo.metrics.sbc import (binomial_cdf, rank_direction, sbc_ranks, save_sbc_figure, summarize_ranks,
                               uniformity_test)
from sgilo.solvers.langevin import langevin_step

D, NX, M, SIGMA = 3, 6, 4, 0.5          # latent dim, image dim, measurements, noise std
N_REP, L, STEPS, ETA = 400, 15, 500, 0.02


def linear_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(NX, D, generator=g, dtype=torch.float64) / D ** 0.5
    b = torch.randn(NX, generator=g, dtype=torch.float64) * 0.1
    A = torch.randn(M, NX, generator=g, dtype=torch.float64) / NX ** 0.5
    return W, b, A


# ----------------------------------------------------------------------------
# N replicates × L chains, all rows of one batch; each chain starts from its own prior draw and runs STEPS steps.


def run_sbc(beta: float, seed: int = 0, n_rep: int = N_REP) -> dict[str, np.ndarray]:
    W, b, A = linear_problem(seed)
    g = torch.Generator().manual_seed(1000 + seed)
    z_true = torch.randn(n_rep, D, generator=g, dtype=torch.float64)
    x_true = z_true @ W.T + b
    y = x_true @ A.T + SIGMA * torch.randn(n_rep, M, generator=g, dtype=torch.float64)
    AW = A @ W                                                            # [M, D]
    yy = (y - b @ A.T).repeat(L, 1)                                       # [L·N, M], chain-major
    z = torch.randn(L * n_rep, D, generator=g, dtype=torch.float64)
    for _ in range(STEPS):
        grad_f = (z @ AW.T - yy) @ AW / SIGMA**2                          # ∇_z ‖A(Wz + b) − y‖² / (2σ²)
        z = langevin_step(z, grad_f, -z, ETA, 1.0, beta, g)
    draws = z.reshape(L, n_rep, D)
    x_draws = draws @ W.T + b
    rg = torch.Generator().manual_seed(7)
    v = torch.randn(D, generator=rg, dtype=torch.float64)
    pairs = {"z0": (z_true[:, 0], draws[..., 0]), "z_norm": (z_true.norm(dim=-1), draws.norm(dim=-1)),
             "x5": (x_true[:, 5], x_draws[..., 5]), "proj": (z_true @ v, draws @ v)}
    return {k: sbc_ranks(t, d, rg).numpy() for k, (t, d) in pairs.items()}


def test_right_sampler_passes_and_halved_noise_fails():
    right, wrong = run_sbc(beta=1.0), run_sbc(beta=4.0)
    for name in right:
        ok, bad = summarize_ranks(right[name], L, alpha=0.01), summarize_ranks(wrong[name], L, alpha=0.01)
        assert ok["test"]["p_value"] > 0.01, (name, ok["test"]["p_value"], ok["direction"])
        assert ok["verdict"] == "uniform" and abs(ok["direction"]["z_outer"]) < 3, (name, ok["direction"])
        assert bad["test"]["p_value"] < 1e-3, (name, bad["test"]["p_value"])
        # too-narrow draws: U-shaped ranks for linear summaries; for ‖z‖ the draws' norms are too small (high ranks)
        want = "draws too low" if name == "z_norm" else "under-dispersed (U-shaped)"
        assert bad["verdict"].startswith(want), (name, bad["verdict"])


# ----------------------------------------------------------------------------
# The uniformity test itself: null level, power, band containment, direction labels.


def test_uniformity_test_level_and_power():
    rng = np.random.default_rng(0)
    pvals = np.array([uniformity_test(rng.integers(0, 16, 100), 15, simulations=500, seed=s)["p_value"]
                      for s in range(60)])
    assert 0.0 <= (pvals < 0.05).mean() <= 0.15                            # level ≈ 5 % under uniformity
    u_shaped = np.where(rng.random(100) < 0.5, rng.integers(0, 3, 100), rng.integers(13, 16, 100))
    t = uniformity_test(u_shaped, 15)
    assert t["p_value"] < 1e-3
    ecdf, (lo, hi) = np.array(t["ecdf"]), t["band"]
    assert not ((ecdf >= lo) & (ecdf <= hi)).all()                         # p < α ⇔ the ECDF leaves the band
    assert rank_direction(u_shaped, 15)["dispersion"] == "under-dispersed"
    middle = rng.integers(5, 11, 100)
    assert rank_direction(middle, 15)["dispersion"] == "over-dispersed"
    assert rank_direction(rng.integers(8, 16, 200), 15)["bias"] == "draws too low"
    assert rank_direction(np.array([0, 1, 1]), 1)["dispersion"] == "n/a"          # two ranks cannot show dispersion


def test_band_contains_uniform_ecdf_and_binomial_cdf():
    t = uniformity_test(np.arange(16).repeat(10), 15)                      # perfectly flat ranks
    assert t["p_value"] > 0.9
    assert np.all(np.array(t["band"][0]) <= np.array(t["ecdf"])) and np.all(np.array(t["ecdf"]) <= t["band"][1])
    F = binomial_cdf(10, 0.3)
    assert F[-1] == pytest.approx(1.0) and F[0] == pytest.approx(0.7**10) and F[3] == pytest.approx(0.6496107184)


def test_ranks_count_draws_below_and_break_ties():
    truth = torch.tensor([0.5, 2.0, -3.0])
    draws = torch.tensor([[0.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.2, 0.0, 0.0]])
    assert sbc_ranks(truth, draws).tolist() == [2, 2, 0]
    tied = sbc_ranks(torch.zeros(2000), torch.zeros(3, 2000), torch.Generator().manual_seed(0))
    assert set(tied.tolist()) == {0, 1, 2, 3}                              # ties spread over 0..L uniformly
    with pytest.raises(ValueError, match="expected shape"):
        sbc_ranks(truth, draws[:, :2])


def test_figure_written(tmp_path):
    rng = np.random.default_rng(1)
    s = {"a": summarize_ranks(rng.integers(0, 8, 50), 7), "b": summarize_ranks(rng.integers(0, 8, 50), 7)}
    save_sbc_figure(tmp_path / "sbc.png", s, "test")
    assert (tmp_path / "sbc.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------
# `sgilo calibrate` end to end on the tiny generator (pipeline only: a few steps, numbers meaningless).


def test_calibrate_cli_sbc_and_refuses_existing_out(tmp_path, tiny_generator):
    import json

    from click.testing import CliRunner
    from conftest import write_solve_files

    from sgilo.cli import main
    files = write_solve_files(tmp_path, tiny_generator)
    out = tmp_path / "sbc"
    args = ["calibrate", "--task", "inpaint-random", "--observed", "0.3", "--n", "3", "--draws", "2", "--steps", "2,2",
            "--batch", "3", "--pixels", "8", "--model", str(files / "gen"), "--prior", "none", "--preset", "paper",
            "--device", "cpu", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "sbc.json").read_text())
    assert set(res["summaries"]) == {"pixel", "pixels_pooled", "mean_region", "z_norm", "h_projection"}
    assert len(res["summaries"]["pixel"]["ranks"]) == 3 and len(res["summaries"]["pixels_pooled"]["ranks"]) == 24
    assert all(0 <= v <= 2 for s in res["summaries"].values() for v in s["ranks"])
    assert res["sigma_eff"] == 0.05 and res["split_layer"] == 1 and (out / "sbc.png").stat().st_size > 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output and len(again.output.splitlines()) == 1


def test_prepare_out_overwrite_removes_only_our_files(tmp_path):
    from sgilo.app.calibrate import prepare_out
    (tmp_path / "sbc.json").write_text("{}")
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_out(tmp_path, False, ("sbc.json",))
    prepare_out(tmp_path, True, ("sbc.json",))
    assert not (tmp_path / "sbc.json").exists() and (tmp_path / "keep.txt").exists()


def test_calibrate_cli_conformal(tmp_path, tiny_generator):
    from click.testing import CliRunner
    from conftest import write_solve_files

    from sgilo.cli import main
    from sgilo.metrics.conformal import load_calibration
    from sgilo.utils.images import save_image
    files = write_solve_files(tmp_path, tiny_generator)
    (tmp_path / "faces" / "train").mkdir(parents=True)
    with torch.no_grad():
        x = tiny_generator(torch.randn(10, tiny_generator.z_dim, generator=torch.Generator().manual_seed(5)))
    for i, im in enumerate(x / x.abs().amax()):
        save_image(im, tmp_path / "faces" / "train" / f"{i}.png")
    out = tmp_path / "cal"
    r = CliRunner().invoke(main, ["calibrate", "--conformal", "--data", str(tmp_path / "faces"), "--tasks",
                                  "inpaint-random-3", "--n-images", "10", "--preset", "smoke", "--batch", "5",
                                  "--model", str(files / "gen"), "--prior", "none", "--device", "cpu",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    cal = load_calibration(out / "interval_calibration.json", required=True)
    lv = cal["tasks"]["inpaint-random-3"]["levels"]
    assert set(lv) == {"0.5", "0.9"} and cal["n_images"] == 10 and cal["chains"] == 2
    for q, v in lv.items():       # in-sample calibrated coverage reaches 1 − ((n+1)α − 1)/n by construction
        assert v["calibrated_coverage_in_sample"] >= 1 - (11 * (1 - float(q)) - 1) / 10 - 1e-6
        assert v["scale"] > 0 and v["calibrated_width"] == pytest.approx(v["scale"] * v["raw_width"], rel=1e-4)
    bad = CliRunner().invoke(main, ["calibrate", "--conformal", "--data", str(tmp_path / "faces"), "--split", "test",
                                    "--out", str(tmp_path / "c2")])
    assert bad.exit_code == 2 and "other than test" in bad.output
