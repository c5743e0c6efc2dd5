"""bench-speed: the SGILO step split (generator / score / other), FLOP counts, conv peak, bf16 and naive timings."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_generator
from sgilo.bench.speed import QUICK, BUNDLED_ARCH, SpeedConfig, conv_peak, headline, random_prior, run_speed
from sgilo.generator import GeneratorConfig, fit_gaussianized_w, h_shape


def test_bench_speed_on_a_tiny_generator(tmp_path):
    G = make_tiny_generator(32)
    fit = fit_gaussianized_w(G.mapping, 1000, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    priors = {"z": random_prior((G.synthesis.num_ws, G.synthesis.w_dim), 0, cpu),
              "h1": random_prior(tuple(h_shape(G.synthesis, 1)), 1, cpu)}
    cfg = SpeedConfig(batches=(1, 2), chains=(2,), steps=1, warmup=0, conv_shapes=((2, 16, 8),))
    rep = run_speed(cfg, tmp_path, "cpu", models=(G, fit, priors))
    assert len(rep["rows"]) == 4 and {r["dtype"] for r in rep["rows"]} == {"fp32", "bf16"}
    for r in rep["rows"]:
        parts = r["generator_s"] + r["score_s"] + r["other_s"]
        assert r["seconds_per_step"] == pytest.approx(parts) and 0 < r["generator_score_share"] <= 1
        assert r["flops_per_step"] > 0 and r["fraction_of_peak"] > 0
        assert ("naive_over_ours" in r) == (r["dtype"] == "fp32") == ("curvature_over_step" in r)
    # FLOPs grow with the number of rows N = B·K (same setting otherwise).
    fp32 = [r for r in rep["rows"] if r["dtype"] == "fp32"]
    assert fp32[1]["flops_per_step"] > 1.5 * fp32[0]["flops_per_step"]
    assert json.loads((tmp_path / "speed.json").read_text())["headline"] == rep["headline"]
    assert "| 2 | 2 | bf16 |" in (tmp_path / "speed.md").read_text()
    assert not any(p.requires_grad for p in G.parameters())                        # the naive copy left G frozen
    assert rep["auto_precision"] == ("bf16" if rep["native_bf16"] else "fp32")


def test_bench_speed_without_native_bf16_keeps_small_bf16_settings(tmp_path, monkeypatch):
    import sgilo.bench.speed as speed
    G = make_tiny_generator(32)
    fit = fit_gaussianized_w(G.mapping, 1000, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    priors = {"z": random_prior((G.synthesis.num_ws, G.synthesis.w_dim), 0, cpu),
              "h1": random_prior(tuple(h_shape(G.synthesis, 1)), 1, cpu)}
    monkeypatch.setattr(speed, "native_bf16", lambda device: False)
    cfg = SpeedConfig(batches=(1, 2), chains=(2,), steps=1, warmup=0, conv_shapes=((2, 16, 8),), emulated_bf16_rows=2,
                      naive=False, curvature=False)
    rep = run_speed(cfg, tmp_path, "cpu", models=(G, fit, priors))
    assert sorted((r["rows"], r["dtype"]) for r in rep["rows"]) == [(2, "bf16"), (2, "fp32"), (4, "fp32")]
    assert "emulated" in (tmp_path / "speed.md").read_text() and not rep["native_bf16"]


def test_busy_cpu_is_said_and_threads_are_set_then_restored(tmp_path, monkeypatch):
    """On shared cores OpenMP threads wait for each other (3.6 s/step instead of 0.05 s measured, fp32 and bf16
    alike): the report records the load and speed.md warns; ``threads`` applies to the run only."""
    import sgilo.bench.speed as speed
    G = make_tiny_generator(32)
    fit = fit_gaussianized_w(G.mapping, 500, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    priors = {"z": random_prior((G.synthesis.num_ws, G.synthesis.w_dim), 0, cpu),
              "h1": random_prior(tuple(h_shape(G.synthesis, 1)), 1, cpu)}
    cfg = SpeedConfig(batches=(1,), chains=(1,), dtypes=("fp32",), steps=1, warmup=0, conv_shapes=((2, 16, 8),),
                      naive=False, curvature=False, threads=1)
    before = torch.get_num_threads()
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    torch.set_num_threads(2)
    try:
        rep = run_speed(cfg, tmp_path / "busy", "cpu", models=(G, fit, priors))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert rep["threads"] == 1
    assert rep["machine_load"]["oversubscribed"] and "CPU was busy" in (tmp_path / "busy" / "speed.md").read_text()
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    rep = run_speed(cfg, tmp_path / "idle", "cpu", models=(G, fit, priors))
    assert not rep["machine_load"]["oversubscribed"] and "busy" not in (tmp_path / "idle" / "speed.md").read_text()
    with pytest.raises(ValueError, match="threads"):
        run_speed(SpeedConfig(threads=0), tmp_path / "bad", "cpu", models=(G, fit, priors))


def test_conv_peak_and_headline():
    p = conv_peak(((1, 8, 8),), "fp32", torch.device("cpu"), reps=1)
    assert p["flops_per_s"] > 0 and p["shape"] == [1, 8, 8]
    rows = [{"batch": 1, "chains": 1, "dtype": d, "seconds_per_step": s, "generator_score_share": g}
            for d, s, g in (("fp32", 2.0, 0.9), ("bf16", 1.0, 0.85))]
    rows[0]["naive_over_ours"] = 3.0
    h = headline(rows)
    assert h["median_bf16_speedup"] == 2.0 and h["min_generator_score_share"] == 0.85
    assert h["median_naive_over_ours"] == 3.0


def test_bundled_architecture_and_quick_preset():
    cfg = GeneratorConfig(**BUNDLED_ARCH)
    assert cfg.num_ws == 10 and cfg.z_dim == cfg.w_dim == 256
    assert QUICK.batches == (1, 8) and QUICK.chains == (1, 4)
    assert SpeedConfig().batches == (1, 8, 32) and SpeedConfig().chains == (1, 4, 16)


def test_cli_threads_option_reaches_the_config(tmp_path, monkeypatch):
    """``sgilo bench-speed --threads 1`` sets SpeedConfig.threads; 0 is refused in one line."""
    from click.testing import CliRunner

    import sgilo.bench.speed as speed
    from sgilo.cli import main
    seen = {}

    def fake_run(cfg, out, device):
        seen["cfg"] = cfg
        return {"generator": "fake", "headline": {"x": 1.0}}
    monkeypatch.setattr(speed, "run_speed", fake_run)
    res = CliRunner().invoke(main, ["bench-speed", "--quick", "--threads", "1", "--device", "cpu",
                                    "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].threads == 1 and seen["cfg"].steps == speed.QUICK.steps
    res = CliRunner().invoke(main, ["bench-speed", "--threads", "0", "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "threads" in res.output


def test_naive_step_rebuilds_a_network_free_pca_prior_and_z_may_use_the_exact_score(tmp_path):
    """The bundled priors are PCA Gaussians without a network (kind from the caller, `structured` skip), and the
    bundled model has no z prior (the solver uses −z). The naive step re-created the prior without `kind` and
    `structured` and raised 'prior kind must be ...' on `sgilo bench-speed` with the bundled model."""
    from sgilo.priors import LatentPrior, LatentScaler, VPSDE
    from sgilo.priors.lowrank import LowRankGaussian
    G = make_tiny_generator(32)
    fit = fit_gaussianized_w(G.mapping, 500, generator=torch.Generator().manual_seed(0))
    shape = tuple(h_shape(G.synthesis, 1))
    pca = LowRankGaussian(shape, 4).fit(torch.randn(64, *shape, generator=torch.Generator().manual_seed(1)))
    priors = {"h1": LatentPrior(None, VPSDE(), LatentScaler(shape), layer=1, structured=pca, kind="h")}
    cfg = SpeedConfig(batches=(1,), chains=(2,), dtypes=("fp32",), steps=1, warmup=0, conv_shapes=((2, 16, 8),),
                      curvature=False)
    rep = run_speed(cfg, tmp_path, "cpu", models=(G, fit, priors))
    assert rep["rows"][0]["naive_over_ours"] > 0
