"""`sgilo solve` / `sgilo demo` (SGILO, Daras et al. 2022): result.json keys, PNGs, latents; bad input → one line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from conftest import write_solve_files

from sgilo.cli import main
from sgilo.utils.images import save_image


@pytest.fixture
def files(tmp_path, tiny_generator):
    return write_solve_files(tmp_path, tiny_generator)


def invoke(files, *args):
    base = ["solve", "--image", str(files / "img.png"), "--model", str(files / "gen"), "--prior", "none",
            "--task", "inpaint-random", "--observed", "0.3", "--steps", "3,2", "--out", str(files / "out")]
    return CliRunner().invoke(main, base + list(args))


@pytest.mark.parametrize("solver", ["csgm", "ilo", "sgilo"])
def test_solve_writes_result(files, solver):
    r = invoke(files, "--solver", solver, "--samples", "2", "--eta", "1e-6")
    assert r.exit_code == 0, r.output
    res = json.loads((files / "out" / "result.json").read_text())
    m = res["metrics"]
    assert {"psnr", "ssim", "residual"} <= set(m["mean"]) and math.isfinite(m["mean"]["psnr"])
    assert ({"coverage50", "coverage90", "diversity", "psnr_sample"} <= set(m["mean"])) == (solver == "sgilo")
    assert res["input"]["sha256"] and res["input"]["resize"] is None
    assert "rhat" in res["diagnostics"] and res["seconds"] > 0 and res["seed"] == 0
    assert res["task"]["task"] == "inpaint-random"
    assert (files / "out" / "latents.safetensors").is_file() and (files / "out" / "summary.png").is_file()
    if solver == "sgilo":
        assert len(m["samples"]) == 2 and {"psnr", "ssim", "residual"} <= set(m["samples"][1])
        assert 0 <= m["mean"]["coverage90"] <= 1 and (files / "out" / "sample_01.png").is_file()
        assert (files / "out" / "std.png").is_file()


@pytest.mark.parametrize("args, needle", [
    (["--samples", "0"], "--samples"),
    (["--eta", "nan"], "eta"),
    (["--steps", "3,x"], "--steps"),
    (["--preset", "nope"], "preset"),
])
def test_bad_input_one_line(files, args, needle):
    r = invoke(files, "--solver", "sgilo", *args)
    assert r.exit_code != 0
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.output


def test_missing_image_and_unknown_task(files, tmp_path):
    r = CliRunner().invoke(main, ["solve", "--image", str(tmp_path / "nope.png"), "--task", "inpaint-random",
                                  "--model", str(files / "gen"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "nope.png" in r.output and len(r.output.strip().splitlines()) == 1
    r = invoke(files, "--task", "teleport")
    assert r.exit_code != 0 and "teleport" in r.output


def test_wrong_size_mask(files, tmp_path):
    save_image(torch.ones(3, 8, 8), tmp_path / "mask.png")
    r = CliRunner().invoke(main, ["solve", "--image", str(files / "img.png"), "--model", str(files / "gen"),
                                  "--task", "inpaint-mask", "--mask", str(tmp_path / "mask.png"), "--prior", "none",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "mask" in r.output and len(r.output.strip().splitlines()) == 1


def test_demo_notice_follows_bundled_model(monkeypatch, tmp_path):
    import sgilo.app.demo as demo
    monkeypatch.setattr(demo, "bundled_available", lambda: False)
    assert "RANDOMLY INITIALISED" in demo.demo_notice()
    monkeypatch.setattr(demo, "bundled_available", lambda: True)
    import sgilo.priors.io as prior_io
    monkeypatch.setattr(prior_io, "bundled_prior_available", lambda name: False)
    assert "priors are not in this checkout" in demo.demo_notice()
    monkeypatch.setattr(prior_io, "bundled_prior_available", lambda name: True)
    assert demo.demo_notice() is None
    # The bundled set has h priors and no z prior (z's N(0, I) score is exact): no notice (it said "not in this
    # checkout" while the demo ran with the h1/h2 priors).
    monkeypatch.setattr(prior_io, "MODELS_DIR", tmp_path)
    for name in ("h1", "h2"):
        (tmp_path / f"prior_{name}.json").write_text("{}")
    monkeypatch.setattr(prior_io, "bundled_prior_available", lambda name: name != "z")
    assert demo.demo_notice() is None


def test_presets_auto_and_overrides():
    from sgilo.app.presets import PRESETS, default_preset
    from sgilo.app.solve import make_config
    assert default_preset("default") == "utkface64" and default_preset("/some/model") == "paper"
    tuned = make_config("sgilo", samples=8, seed=3, preset="utkface64")
    assert tuned.chains == 8 and tuned.seed == 3 and tuned.eta == PRESETS["utkface64"]["sgilo"].eta
    assert tuned.precision == "auto" and tuned.step_control == "curvature" and make_config("sgilo").precision == "fp32"
    assert make_config("ilo", steps=(5, 5, 5, 5), preset="utkface64").l1_radius_h is not None


def test_precision_and_step_control_overrides():
    from sgilo.app.solve import make_config
    c = make_config("sgilo", preset="utkface64", precision="fp32", step_control="none")
    assert c.precision == "fp32" and c.step_control == "none"
    assert make_config("ilo", preset="utkface64", precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="step-control"):
        make_config("csgm", step_control="curvature")


# ----------------------------------------------------------------------------
# Interval calibration (issue 17): raw coverage + one "uncalibrated" line without a calibration; calibrated coverage,
# widths and the 90 % interval file with one (written here, at the bundled location monkeypatched to tmp).


def test_solve_uncalibrated_reports_raw_coverage_h_move_and_modes(files):
    from safetensors.torch import load_file
    r = invoke(files, "--solver", "sgilo", "--samples", "2", "--eta", "1e-6")
    assert r.exit_code == 0, r.output
    assert sum("intervals are uncalibrated" in ln for ln in r.output.splitlines()) == 1, r.output
    res = json.loads((files / "out" / "result.json").read_text())
    m = res["metrics"]["mean"]
    assert {"coverage90", "width90", "width50"} <= set(m) and "coverage90_cal" not in m
    iv = res["interval90"]
    assert iv["calibrated"] is False and iv["scale"] == 1.0 and iv["file"] in res["files"]
    t = load_file(files / "out" / "interval90.safetensors")
    assert t["lo"].shape == (3, 32, 32) and bool((t["lo"] <= t["hi"]).all())
    assert float((t["hi"] - t["lo"]).mean()) == pytest.approx(m["width90"], rel=1e-5)
    # How far h_1 moved in round k = 1 (issue 16) and the modes among the chains (issue 17), via diagnostics.
    moves = res["diagnostics"]["h_move"]
    assert [h["k"] for h in moves] == [1] and len(moves[0]["rows"]) == 2 and moves[0]["mean"] >= 0
    assert res["diagnostics"]["modes"][0] in (1, 2)


@pytest.mark.parametrize("fitted_chains", [2, 5])
def test_solve_applies_the_bundled_calibration(files, monkeypatch, tiny_generator, fitted_chains):
    import sgilo.app.solve as solve_mod
    import sgilo.metrics.conformal as conformal
    from safetensors.torch import load_file
    from sgilo.generator import load_generator
    G, fit = load_generator(files / "gen")
    monkeypatch.setattr(solve_mod, "load_models", lambda *a, **k: (G, fit, {}))        # 'default' → the tiny model
    cal = files / "interval_calibration.json"
    cal.write_text(json.dumps({"format": conformal.FORMAT, "version": conformal.VERSION, "split": "train",
                               "config": {"chains": fitted_chains, "steps": [3, 2]},
                               "tasks": {"inpaint-random-10": {"levels": {"0.5": {"scale": 1.25},
                                                                          "0.9": {"scale": 1.5}}}}}))
    monkeypatch.setattr(conformal, "calibration_path", lambda name="utkface64": cal)
    r = CliRunner().invoke(main, ["solve", "--image", str(files / "img.png"), "--model", "default", "--prior", "none",
                                  "--preset", "paper", "--task", "inpaint-random", "--observed", "0.1", "--steps",
                                  "3,2", "--solver", "sgilo", "--samples", "2", "--eta", "1e-6", "--out",
                                  str(files / "cal_out")])
    assert r.exit_code == 0, r.output
    assert "uncalibrated" not in r.output
    assert ("fitted with other SGILO settings" in r.output) == (fitted_chains != 2), r.output
    res = json.loads((files / "cal_out" / "result.json").read_text())
    m = res["metrics"]["mean"]
    assert m["scale90"] == 1.5 and m["scale50"] == 1.25 and m["coverage90_cal"] >= m["coverage90"]
    assert m["width90_cal"] == pytest.approx(1.5 * m["width90"])
    assert res["interval90"]["calibrated"] is True and res["interval90"]["task_preset"] == "inpaint-random-10"
    t = load_file(files / "cal_out" / "interval90.safetensors")
    assert float((t["hi"] - t["lo"]).mean()) == pytest.approx(m["width90_cal"], rel=1e-5)
