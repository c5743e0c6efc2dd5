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


def test_demo_notice_follows_bundled_model(monkeypatch):
    import sgilo.app.demo as demo
    monkeypatch.setattr(demo, "bundled_available", lambda: False)
    assert "RANDOMLY INITIALISED" in demo.demo_notice()
    monkeypatch.setattr(demo, "bundled_available", lambda: True)
    import sgilo.priors.io as prior_io
    monkeypatch.setattr(prior_io, "bundled_prior_available", lambda name: False)
    assert "priors are not in this checkout" in demo.demo_notice()
    monkeypatch.setattr(prior_io, "bundled_prior_available", lambda name: True)
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
