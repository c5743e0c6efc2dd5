"""Solver options of SGILO (Daras et al. 2022) and its baselines: per-image seeds, GeoCross (PULSE), continuing from
saved latents (--init) and the LPIPS term/metric from local weights (--lpips-weights)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from conftest import masked_problem, write_lpips_weights, write_solve_files

from sgilo.cli import main
from sgilo.solvers import csgm, ilo, sgilo
from sgilo.solvers.objective import GEOCROSS_SCALE, geocross
from sgilo.solvers.result import Latents
from sgilo.solvers.rounds import begin_round, geocross_penalty, init_iterate, make_problem
from sgilo.app.solve import load_latents


@pytest.fixture
def setup(tiny_generator):
    fit, op, y, _ = masked_problem(tiny_generator)
    return tiny_generator, fit, op, y


# ----------------------------------------------------------------------------
# Per-image seeds: image 1 of a batch of 2 == image 1 alone (position 0) when it keeps its seed.


@pytest.mark.parametrize("mod, cfg", [
    (sgilo, sgilo.SGILOConfig(steps=(2, 2), chains=2, eta=1e-6)),
    (csgm, csgm.CSGMConfig(steps=3, restarts=2)),
])
def test_per_image_seeds_do_not_depend_on_position(setup, mod, cfg):
    G, fit, op, y = setup
    both = mod.solve(y, op, G, fit, config=cfg, seeds=[11, 22])
    alone = mod.solve(y[1:], op, G, fit, config=cfg, seeds=[22])
    torch.testing.assert_close(both.x_hat[1:], alone.x_hat, atol=1e-5, rtol=1e-5)
    positional = mod.solve(y[1:], op, G, fit, config=cfg)                      # default streams: keyed by position
    assert not torch.allclose(positional.x_hat, alone.x_hat, atol=1e-3)
    with pytest.raises(ValueError, match="one per image"):
        mod.solve(y, op, G, fit, config=cfg, seeds=[1])


# ----------------------------------------------------------------------------
# GeoCross: PULSE's value on known rows, finite gradients at coincident rows, rows 2k−1… only, weights/defaults.


def test_geocross_values_and_gradient():
    e = torch.eye(2)[None]                                                      # two orthogonal unit rows
    assert float(geocross(e)) == pytest.approx(GEOCROSS_SCALE * 2 * (math.pi / 2) ** 2 / 4, rel=1e-6)
    same = torch.ones(3, 4, 8, requires_grad=True)
    v = geocross(same)
    assert v.shape == (3,) and float(v.detach().max()) < 1e-6
    v.sum().backward()
    assert torch.isfinite(same.grad).all()
    with pytest.raises(ValueError, match=r"\[N, L, D\]"):
        geocross(torch.ones(4, 8))


def test_geocross_penalty_reads_rows_of_round_k(setup):
    G, fit, op, y = setup
    problem = make_problem(y, op, G, fit, 1, 0, 0.05, None, False)
    it = begin_round(problem, init_iterate(problem), 0, 2)
    it = begin_round(problem, begin_round(problem, it, 1, 2), 2, 2)               # k = 2: rows 3.. are read
    pen = geocross_penalty(problem, 0.01)
    base = pen(it).detach()
    with torch.no_grad():
        it.z[:, 2] += 5.0                                                       # row 2k − 2: not read by blocks ≥ 2
    assert torch.equal(pen(it).detach(), base)
    with torch.no_grad():
        it.z[:, 3] += 5.0                                                       # row 2k − 1: read by block 2
    assert not torch.allclose(pen(it).detach(), base)
    assert geocross_penalty(problem, 0.0) is None
    with pytest.raises(ValueError, match="geocross"):
        geocross_penalty(problem, float("nan"))


def test_geocross_defaults_and_zero_weight_reproduces_plain_runs(setup):
    G, fit, op, y = setup
    assert ilo.ILOConfig().geocross == 0.01 and csgm.CSGMConfig().geocross == 0.0
    assert sgilo.SGILOConfig().geocross_weight == 0.0
    assert sgilo.SGILOConfig(mode="reference").geocross_weight == 0.001
    assert sgilo.SGILOConfig(geocross=0.5).geocross_weight == 0.5
    with pytest.raises(ValueError, match="geocross"):
        sgilo.SGILOConfig(geocross=-1.0)
    cfg = ilo.ILOConfig(steps=(6, 6, 4), seed=7)
    plain = ilo.solve(y, op, G, fit, config=replace(cfg, geocross=0.0))         # the pre-GeoCross golden value
    assert float(plain.x_hat.double().sum()) == pytest.approx(54.54461913090199, rel=1e-4, abs=1e-3)
    # A large weight pulls the w+ rows together (smaller GeoCross at the end than without it).
    strong = ilo.solve(y, op, G, fit, config=replace(cfg, geocross=1.0))
    assert float(geocross(strong.state.ws).mean()) < float(geocross(plain.state.ws).mean())


# ----------------------------------------------------------------------------
# Continuation: a run started from its own final latents starts with the data term it ended with.


def test_continue_from_latents_library(setup):
    G, fit, op, y = setup
    cfg = sgilo.SGILOConfig(steps=(3, 2, 2), chains=2, eta=1e-6)
    first = sgilo.solve(y, op, G, fit, config=cfg)
    lat = Latents.from_result(first)
    assert lat.k == 2
    again = sgilo.solve(y, op, G, fit, config=cfg, init=lat)
    assert again.traces["data"].shape[0] == 2 and set(again.traces["round"].tolist()) == {2}   # rounds 0, 1 skipped
    torch.testing.assert_close(again.traces["data"][0], torch.tensor(first.diagnostics["final_data_term"]),
                               rtol=1e-5, atol=1e-3)
    point = ilo.solve(y, op, G, fit, config=ilo.ILOConfig(steps=(3, 2)))      # B rows → tiled over K chains
    warm = sgilo.solve(y, op, G, fit, config=replace(cfg, steps=(2, 2)), init=Latents.from_result(point))
    torch.testing.assert_close(warm.traces["data"][0], torch.tensor(point.diagnostics["final_data_term"] * 2),
                               rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="at layer k=2"):
        sgilo.solve(y, op, G, fit, config=replace(cfg, steps=(2, 2)), init=lat)
    with pytest.raises(ValueError, match="expected z of shape"):
        sgilo.solve(y, op, G, fit, config=replace(cfg, chains=3), init=lat)


# ----------------------------------------------------------------------------
# CLI: --init round trip, --lpips-weights metric/term, one-line errors.


@pytest.fixture
def files(tmp_path, tiny_generator):
    return write_solve_files(tmp_path, tiny_generator)


def invoke(files, out, *args):
    base = ["solve", "--image", str(files / "img.png"), "--model", str(files / "gen"), "--prior", "none",
            "--task", "inpaint-random", "--observed", "0.3", "--steps", "3,2", "--out", str(files / out)]
    return CliRunner().invoke(main, base + list(args))


def _one_line(r, needle):
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code != 0 and len(lines) == 1 and needle in lines[0], r.output


@pytest.mark.parametrize("solver", ["ilo", "sgilo"])
def test_cli_init_round_trip(files, solver):
    r = invoke(files, "a", "--solver", solver, "--samples", "2", "--eta", "1e-6")
    assert r.exit_code == 0, r.output
    first = json.loads((files / "a" / "result.json").read_text())
    lat = load_latents(files / "a")
    assert lat.k == 1 and lat.z.shape[0] == (2 if solver == "sgilo" else 1)
    r = invoke(files, "b", "--solver", solver, "--samples", "2", "--eta", "1e-6", "--init", str(files / "a"))
    assert r.exit_code == 0, r.output
    second = json.loads((files / "b" / "result.json").read_text())
    assert second["start_layer"] == 1 and second["init"] == str(files / "a")
    assert second["data_term"]["initial"] == pytest.approx(first["data_term"]["final"], rel=1e-5)
    _one_line(invoke(files, "c", "--solver", solver, "--init", str(files / "nowhere")), "--init")


def test_cli_lpips_metric_and_term(files):
    weights = write_lpips_weights(files / "lpips.safetensors")
    r = invoke(files, "a", "--solver", "sgilo", "--samples", "2", "--eta", "1e-6", "--lpips-weights", str(weights))
    assert r.exit_code == 0, r.output
    res = json.loads((files / "a" / "result.json").read_text())
    assert res["metrics"]["mean"]["lpips"] >= 0 and "lpips" in res["metrics"]["samples"][1]
    assert res["config"]["lpips_weight"] == 0.0
    r = invoke(files, "b", "--solver", "ilo", "--lpips-weights", str(weights), "--lpips-weight", "5")
    assert r.exit_code == 0, r.output
    res = json.loads((files / "b" / "result.json").read_text())
    assert res["config"]["lpips_weight"] == 5.0 and math.isfinite(res["metrics"]["mean"]["lpips"])
    assert invoke(files, "d", "--solver", "ilo", "--lpips-weights", str(weights)).exit_code == 0
    plain = json.loads((files / "d" / "result.json").read_text())
    assert res["data_term"]["initial"][0] > plain["data_term"]["initial"][0]      # same start, + 5 · LPIPS in f
    assert plain["metrics"]["mean"]["residual"] != res["metrics"]["mean"]["residual"]   # the LPIPS term changed the path
    _one_line(invoke(files, "c", "--solver", "ilo", "--lpips-weights", str(files / "missing.safetensors")),
              "LPIPS weights not found")
    _one_line(invoke(files, "c", "--solver", "ilo", "--lpips-weight", "1"), "--lpips-weights")
    _one_line(invoke(files, "c", "--solver", "ilo", "--lpips-weight", "-1"), "--lpips-weight")
