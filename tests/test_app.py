"""Application layer (`sgilo.app`): one model loader, one metrics function, output folders (checked first, never
silently overwritten), input provenance in result.json, and the CLI defects of issue 19 (one-line user errors, bugs
keep their traceback)."""

from __future__ import annotations

import hashlib
import json
import math

import click
import pytest
import torch
from click.testing import CliRunner
from conftest import write_solve_files

from sgilo.cli import SgiloGroup, main
from sgilo.utils.images import save_image


@pytest.fixture
def files(tmp_path, tiny_generator):
    return write_solve_files(tmp_path, tiny_generator)


def solve(files, *args, image=None, model=None, out="out"):
    base = ["solve", "--image", str(image or files / "img.png"), "--model", str(model or files / "gen"),
            "--prior", "none", "--task", "inpaint-random", "--observed", "0.3", "--steps", "2",
            "--solver", "sgilo", "--samples", "2", "--eta", "1e-6", "--out", str(files / out)]
    return CliRunner().invoke(main, base + list(args))


def one_line(res) -> str:
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("sgilo: error:"), res.output
    return lines[0]


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ----------------------------------------------------------------------------
# Corrupt or truncated safetensors: one line naming the file, for the model, a prior and --init.


def test_truncated_model_is_one_line(files):
    truncate(files / "gen.safetensors")
    line = one_line(solve(files))
    assert "gen.safetensors" in line and "truncated or corrupt" in line


def test_truncated_prior_is_one_line(files):
    from test_score_prior import make_prior

    from sgilo.priors import save_prior
    save_prior(files / "prior_z", make_prior(kind="z", shape=(4, 32), layer=0))
    truncate(files / "prior_z.safetensors", 0.3)
    res = solve(files, "--prior", str(files / "prior_z"))
    assert "prior_z.safetensors" in one_line(res) and "truncated or corrupt" in res.output


def test_truncated_init_is_one_line(files):
    from safetensors.torch import save_file
    (files / "run").mkdir()
    save_file({"z": torch.zeros(1, 4, 32)}, str(files / "run" / "latents.safetensors"), metadata={"k": "0"})
    truncate(files / "run" / "latents.safetensors")
    res = solve(files, "--init", str(files / "run"), out="out2")
    assert "latents.safetensors" in one_line(res) and "truncated or corrupt" in res.output


# ----------------------------------------------------------------------------
# --out is checked before any model is loaded: an impossible folder wins over a corrupt model.


def test_out_checked_before_loading(files):
    truncate(files / "gen.safetensors")
    (files / "a_file").write_text("x")
    line = one_line(solve(files, out="a_file/sub"))
    assert "--out" in line and "a_file" in line and "gen.safetensors" not in line


# ----------------------------------------------------------------------------
# Re-running into a folder of an earlier run is refused; --overwrite clears our old outputs (only ours).


def test_rerun_refused_then_overwrite_clears(files):
    assert solve(files).exit_code == 0
    out = files / "out"
    stale = out / "sample_07.png"
    stale.write_bytes((out / "sample_00.png").read_bytes())
    (out / "notes.txt").write_text("mine")
    before = (out / "result.json").read_text()
    line = one_line(solve(files))
    assert "--overwrite" in line and (out / "result.json").read_text() == before
    res = solve(files, "--overwrite", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "result.json").read_text())["seed"] == 1
    assert sorted(p.name for p in out.glob("sample_*.png")) == ["sample_00.png", "sample_01.png"]


# ----------------------------------------------------------------------------
# result.json records the input (path, sha256, crop, resize); the resize is logged as one line.


def test_input_provenance_and_resize_line(files):
    img = torch.rand(3, 40, 48) * 2 - 1                                   # 48×40 → crop 40×40 → resize 32×32
    save_image(img, files / "wide.png")
    res = solve(files, image=files / "wide.png")
    assert res.exit_code == 0, res.output
    rec = json.loads((files / "out" / "result.json").read_text())["input"]
    assert rec["sha256"] == hashlib.sha256((files / "wide.png").read_bytes()).hexdigest()
    assert rec["path"].endswith("wide.png") and rec["size"] == [48, 40]
    assert rec["crop"] == [4, 0, 44, 40] and rec["resize"]["from"] == [40, 40] and rec["resize"]["to"] == [32, 32]
    resized = [ln for ln in res.output.splitlines() if "resized" in ln]
    assert len(resized) == 1 and "48x40" in resized[0], res.output
    res = solve(files, out="out_same")                                    # 32×32 input: nothing done, nothing said
    rec = json.loads((files / "out_same" / "result.json").read_text())["input"]
    assert rec["crop"] is None and rec["resize"] is None and "resized" not in res.output


# ----------------------------------------------------------------------------
# Options: --preset lists auto, solve has --device, --samples shows its default, train-generator options have help.


def test_preset_error_lists_auto(files):
    line = one_line(solve(files, "--preset", "nonsense"))
    assert "'auto'" in line and "'paper'" in line and "'utkface64'" in line


def test_solve_device_and_samples_default():
    res = CliRunner().invoke(main, ["solve", "--help"])
    assert "--device" in res.output and "--overwrite" in res.output
    opt = next(p for p in main.commands["solve"].params if p.name == "samples")
    assert isinstance(opt.show_default, str) and "4 chains" in opt.show_default


def test_every_train_generator_option_has_help():
    cmd = main.commands["train-generator"]
    missing = [p.name for p in cmd.params if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert not missing, missing


def test_train_generator_precision_auto_follows_native_bf16(monkeypatch, tmp_path):
    import sgilo.training.generator as tg
    from sgilo.solvers.rounds import native_bf16
    seen = {}
    monkeypatch.setattr(tg, "train", lambda cfg, **kw: seen.setdefault("bf16", cfg.bf16))
    for args, expect in (([], native_bf16("cpu")), (["--precision", "bf16"], True), (["--precision", "fp32"], False)):
        seen.clear()
        res = CliRunner().invoke(main, ["train-generator", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                                        *args])
        assert res.exit_code == 0, res.output
        assert seen["bf16"] is expect


# ----------------------------------------------------------------------------
# sgilo sample --prior default / nonsense.


def test_sample_prior_nonsense_lists_bundled(tmp_path):
    from sgilo.priors.io import bundled_prior_names
    res = CliRunner().invoke(main, ["sample", "--prior", "nonsense", "--out", str(tmp_path / "g.png")])
    line = one_line(res)
    assert "nonsense" in line and (", ".join(bundled_prior_names()) or "none in this checkout") in line


def test_sample_prior_default(tmp_path):
    from sgilo.generator.io import bundled_available
    from sgilo.priors.io import bundled_prior_available
    if not (bundled_available() and bundled_prior_available("h1")):
        pytest.skip("bundled model and h1 prior not in this checkout")
    res = CliRunner().invoke(main, ["sample", "--prior", "default", "--layer", "1", "--n", "2", "--steps", "2",
                                    "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g.png").is_file()


def test_load_one_prior_default_layer(monkeypatch):
    import sgilo.app.models as models
    asked = []
    monkeypatch.setattr(models, "bundled_prior_names", lambda: ["z", "h1"])
    monkeypatch.setattr(models, "load_prior", lambda spec, device=None: asked.append(spec) or spec)
    assert models.load_one_prior("default", 0) == "z" and models.load_one_prior("default", 1) == "h1"
    with pytest.raises(FileNotFoundError, match="layer 2.*z, h1"):
        models.load_one_prior("default", 2)


# ----------------------------------------------------------------------------
# One model loader: 'default', 'none', a file, a folder of prior_*.json; keys 'z' / 'h{k}'.


def test_load_priors_specs(tmp_path):
    from test_score_prior import make_prior

    from sgilo.app.models import load_priors
    from sgilo.priors import save_prior
    save_prior(tmp_path / "prior_z", make_prior(kind="z", shape=(4, 32), layer=0))
    save_prior(tmp_path / "prior_h1", make_prior(kind="h", shape=(6, 4, 4), layer=1))
    assert load_priors("none") == {} and load_priors(None) == {}
    assert sorted(load_priors(str(tmp_path))) == ["h1", "z"]
    assert sorted(load_priors(str(tmp_path / "prior_h1.json"))) == ["h1"]
    assert sorted(load_priors(("none", str(tmp_path / "prior_z")))) == ["z"]
    with pytest.raises(FileNotFoundError, match="prior not found"):
        load_priors(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no prior_"):
        load_priors(str(tmp_path / "empty"))


def test_load_priors_default_is_every_bundled_prior(monkeypatch, caplog):
    import sgilo.app.models as models
    monkeypatch.setattr(models, "bundled_prior_names", lambda: [])
    with caplog.at_level("WARNING", logger="sgilo"):
        assert models.load_priors("default") == {}
    assert "no bundled priors" in caplog.text


# ----------------------------------------------------------------------------
# One metrics function: PSNR/SSIM of the clamped estimate, residual of the unclamped one, sample-set numbers.


def test_image_metrics_values():
    from conftest import MaskOperator

    from sgilo.metrics.posterior import coverage
    from sgilo.metrics.quality import image_metrics, psnr
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    op = MaskOperator((torch.rand(1, 1, 16, 16, generator=g) < 0.5).float())
    y = op.A(x)
    samples = x + 0.2 * torch.randn(3, 2, 3, 16, 16, generator=g)
    x_hat = samples.mean(0) * 1.5                                           # partly outside [-1, 1]
    m = image_metrics(x_hat, x, y, op, samples)
    assert len(m) == 2
    assert m[1]["psnr"] == pytest.approx(float(psnr(x_hat.clamp(-1, 1), x)[1]), rel=1e-6)
    assert m[1]["psnr"] > float(psnr(x_hat, x)[1])                          # clamping can only help here
    resid = float((op.A(x_hat) - y)[1].norm() / y[1].norm())
    assert m[1]["residual"] == pytest.approx(resid, rel=1e-5)
    singles = [float(psnr(s.clamp(-1, 1), x)[0]) for s in samples]
    assert m[0]["psnr_sample"] == pytest.approx(sum(singles) / 3, rel=1e-5)
    assert m[0]["coverage90"] == pytest.approx(float(coverage(samples, x, 0.9)[0]))
    assert m[0]["std_mean"] == pytest.approx(float(samples[:, 0].std(0).mean()), rel=1e-5)
    bare = image_metrics(x_hat, None, y, op)
    assert set(bare[0]) == {"residual"}
    one = image_metrics(x_hat, x, y, op, samples[:1])
    assert "psnr_sample" in one[0] and "coverage90" not in one[0]
    with pytest.raises(ValueError, match="samples"):
        image_metrics(x_hat, x, y, op, samples[:, :1])


def test_demo_line_says_what_the_numbers_are():
    from sgilo.app.demo import summary_line
    line = summary_line("superres x4", "SGILO", ["astronaut", "face"],
                        [{"psnr": 21.43, "psnr_sample": 19.0, "psnr_sample_min": 18.9, "psnr_sample_max": 19.6},
                         {"psnr": 22.0, "psnr_sample": 19.5, "psnr_sample_min": 19.2, "psnr_sample_max": 20.1}])
    assert "PSNR of the posterior mean: astronaut 21.4 dB, face 22.0 dB" in line
    assert "single samples 18.9–20.1 dB" in line
    assert "PSNR of the reconstruction" in summary_line("x", "CSGM", ["a"], [{"psnr": 15.4}])


def _calibration_file(path, chains: int):
    from sgilo.metrics.conformal import FORMAT, VERSION
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "config": {"chains": chains},
                                "tasks": {"inpaint-random-10": {"levels": {"0.5": {"scale": 1.1},
                                                                           "0.9": {"scale": 2.0}}}}}))
    return path


def test_demo_intervals_calibrated_or_one_uncalibrated_line(tmp_path, monkeypatch, caplog):
    import logging
    from dataclasses import replace as dc_replace

    import sgilo.metrics.conformal as conformal
    from sgilo.app.demo import interval_metrics
    from sgilo.solvers.sgilo import SGILOConfig
    g = torch.Generator().manual_seed(0)
    samples, truth = torch.randn(3, 2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    params, cfg = {"observed": 0.1, "sigma": 0.0}, dc_replace(SGILOConfig(), chains=3)
    # No calibration file at the bundled location: raw numbers, one INFO line however often asked.
    monkeypatch.setattr(conformal, "calibration_path", lambda name="utkface64": tmp_path / "none.json")
    said: set = set()
    with caplog.at_level(logging.INFO, logger="sgilo"):
        for _ in range(2):
            iv = interval_metrics(samples, truth, "inpaint-random", params, cfg, "default", said)
    assert [r.message for r in caplog.records].count(next(iter(said))) == 1 and "uncalibrated" in next(iter(said))
    assert iv["interval90"] == {"task_preset": "inpaint-random-10", "calibrated": False, "scale": 1.0,
                                "mean_width": [m["width90"] for m in iv["metrics"]]}
    assert "coverage90_cal" not in iv["metrics"][0]
    # With a calibration: calibrated coverage ≥ raw (λ = 2 > 1) and a line because it was fitted with 4 chains, not 3.
    cal = _calibration_file(tmp_path / "cal.json", chains=4)
    monkeypatch.setattr(conformal, "calibration_path", lambda name="utkface64": cal)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sgilo"):
        iv = interval_metrics(samples, truth, "inpaint-random", params, cfg, "default", set())
    assert len(caplog.records) == 1 and "fitted with other SGILO settings" in caplog.records[0].message
    m = iv["metrics"][0]
    assert iv["interval90"]["calibrated"] and iv["interval90"]["scale"] == 2.0
    assert m["coverage90_cal"] >= m["coverage90"]
    # Another generator than the bundled one: never calibrated.
    iv = interval_metrics(samples, truth, "inpaint-random", params, cfg, "a random stand-in generator", set())
    assert not iv["interval90"]["calibrated"]


@pytest.mark.slow  # 4 s on 2 cores (a whole demo run): make test-slow
def test_run_demo_reports_intervals(tmp_path, monkeypatch, tiny_generator):
    import sgilo.app.demo as demo
    from sgilo.generator import fit_gaussianized_w
    from sgilo.solvers.csgm import CSGMConfig
    from sgilo.solvers.ilo import ILOConfig
    from sgilo.solvers.sgilo import SGILOConfig
    fit = fit_gaussianized_w(tiny_generator.mapping, 500, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(demo, "bundled_available", lambda: False)
    monkeypatch.setattr(demo, "demo_models", lambda seed=0: (tiny_generator, fit, {}))
    monkeypatch.setattr(demo, "demo_solvers", lambda preset, seed, progress: {
        "CSGM": ("csgm", CSGMConfig(steps=2, restarts=1, progress=False)),
        "ILO": ("ilo", ILOConfig(steps=(1, 1), progress=False)),
        "SGILO": ("sgilo", SGILOConfig(steps=(2, 1), chains=2, eta=1e-6, progress=False))})
    rep = demo.run_demo(tmp_path / "demo", echo=lambda line: None)
    m = rep["metrics"]["superres x4 / SGILO"][0]
    assert {"coverage90", "width90", "width50"} <= set(m) and "coverage90_cal" not in m
    assert rep["interval90"]["superres x4"]["task_preset"] == "superres-x4"
    assert rep["interval90"]["inpaint-random 10%"]["calibrated"] is False
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["interval90"] == rep["interval90"]


# ----------------------------------------------------------------------------
# SgiloGroup: user errors (ValueError, OSError) are one line; bugs (TypeError, KeyError, ...) keep the traceback.


def _group(exc):
    @click.group(cls=SgiloGroup)
    def g():
        pass

    @g.command("go")
    def go():
        raise exc

    return g


@pytest.mark.parametrize("exc", [ValueError("bad --x: expected 1, got 2"), FileNotFoundError("image not found: a.png"),
                                 PermissionError(13, "Permission denied", "/root/x")])
def test_user_errors_are_one_line(exc):
    line = one_line(CliRunner().invoke(_group(exc), ["go"]))
    assert line in (f"sgilo: error: {exc}", "sgilo: error: Permission denied: /root/x")


@pytest.mark.parametrize("exc", [TypeError("unsupported operand"), KeyError("chains"), RuntimeError("boom"),
                                 AttributeError("no attribute")])
def test_bugs_keep_their_traceback(exc):
    res = CliRunner().invoke(_group(exc), ["go"])
    assert res.exit_code != 0 and isinstance(res.exception, type(exc))
    assert "sgilo: error" not in res.output


def test_checkpoint_key_mismatch_is_a_user_error(tmp_path, tiny_generator):
    """A model file with a missing key is the user's file: one line (it was a KeyError, shown as a bug)."""
    from safetensors.torch import load_file, save_file

    from sgilo.generator import save_generator
    save_generator(tmp_path / "gen", tiny_generator)
    sd = load_file(str(tmp_path / "gen.safetensors"))
    sd.pop(next(iter(sd)))
    save_file(sd, str(tmp_path / "gen.safetensors"))
    res = CliRunner().invoke(main, ["sample", "--model", str(tmp_path / "gen"), "--n", "1",
                                    "--out", str(tmp_path / "g.png")])
    assert "missing key" in one_line(res)


def test_psnr_label_and_std_sheet(tmp_path):
    """The solve sheet labels: PSNR under mean and samples; std.png written for K >= 2."""
    from sgilo.app.outputs import save_reconstruction
    truth = torch.zeros(3, 16, 16)
    samples = truth + 0.1 * torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    info = save_reconstruction(tmp_path, samples.mean(0), truth, truth, samples)
    assert {"summary.png", "std.png", "sample_02.png", "truth.png"} <= set(info["files"])
    assert math.isfinite(info["psnr"]["mean"]) and len(info["psnr"]["samples"]) == 3
    assert info["psnr"]["mean"] > max(info["psnr"]["samples"])               # averaging K samples removes noise


def test_bad_device_is_one_line(files):
    assert "--device" in one_line(solve(files, "--device", "toaster"))
    if not torch.cuda.is_available():
        assert "CUDA is not available" in one_line(solve(files, "--device", "cuda"))


def test_sample_out_file_not_overwritten(tmp_path, tiny_generator):
    from sgilo.generator import save_generator
    save_generator(tmp_path / "gen", tiny_generator)
    args = ["sample", "--model", str(tmp_path / "gen"), "--n", "2", "--out", str(tmp_path / "g.png")]
    assert CliRunner().invoke(main, args).exit_code == 0
    before = (tmp_path / "g.png").read_bytes()
    assert "--overwrite" in one_line(CliRunner().invoke(main, args + ["--seed", "1"]))
    assert (tmp_path / "g.png").read_bytes() == before
    assert CliRunner().invoke(main, args + ["--seed", "1", "--overwrite"]).exit_code == 0
    assert (tmp_path / "g.png").read_bytes() != before
