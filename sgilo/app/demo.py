"""`sgilo demo`: sparse inpainting and ×4 super-resolution with CSGM, ILO and SGILO (Daras et al., ICML 2022) on the
bundled astronaut crop (public domain, NASA; from scikit-image) and a face sampled from the generator.

When the bundled generator is missing, a randomly initialised 64×64 generator and untrained priors are used, and the
first output line says so (`demo_notice`); the notice disappears once `bundled_available()` is true.

Writes OUT/demo_sheet.png (one row per task and image: truth / measurement / CSGM / ILO / SGILO mean / SGILO sample /
SGILO std with its colour bar, PSNR in the labels) and OUT/demo.json (every number, `image_metrics` per image).
SGILO's entries also hold the interval widths and, with the interval calibration stored with the bundled model
(`sgilo.metrics.conformal`), the calibrated coverage; ``demo.json["interval90"]`` gives the scale of the 90 % interval
per task (1 when uncalibrated: one INFO line says so).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from sgilo.app.figures import Panel, save_sheet, std_of
from sgilo.app.models import load_models
from sgilo.app.outputs import check_out_dir, clear_outputs, write_json
from sgilo.app.presets import preset_config
from sgilo.app.solve import log, run_calibration
from sgilo.generator.io import bundled_available
from sgilo.generator.latents import fit_gaussianized_w
from sgilo.generator.stylegan2 import Generator, GeneratorConfig
from sgilo.metrics.conformal import coverage_records
from sgilo.metrics.quality import image_metrics
from sgilo.solvers.registry import get_solver

ASSET = Path(__file__).resolve().parent.parent / "assets" / "astronaut64.png"
# Architecture of the bundled model (sgilo.training.generator.TrainConfig defaults) for the random stand-in.
STANDIN = GeneratorConfig(z_dim=256, w_dim=256, img_resolution=64, channel_base=2048, channel_max=128, mapping_layers=4)


# ----------------------------------------------------------------------------
# The first line of the demo: a plain notice when the bundled model is missing, else None.


def demo_notice() -> str | None:
    if bundled_available():
        from sgilo.priors.io import bundled_prior_names
        if bundled_prior_names():           # any of z, h1, h2 (the bundled set has no z prior: z's score is exact)
            return None
        return ("NOTE: the bundled latent score priors are not in this checkout yet: SGILO runs with the N(0, I) "
                "prior of the Gaussianised w+ code only (no learned prior on z or h_k).")
    return ("NOTE: the bundled face generator is not in this checkout yet: this demo uses a RANDOMLY INITIALISED 64x64 "
            "generator and UNTRAINED priors, so the reconstructions are not faces.")


# ----------------------------------------------------------------------------
# Generator, Gaussian fit and priors: bundled, or random stand-ins.


def demo_models(seed: int = 0):
    if bundled_available():
        return tuple(load_models("default", "default"))
    torch.manual_seed(seed)
    G = Generator(STANDIN).freeze()
    fit = fit_gaussianized_w(G.mapping, 20_000, generator=torch.Generator().manual_seed(seed))
    from sgilo.priors.scaling import LatentScaler
    from sgilo.priors.score import LatentPrior
    from sgilo.priors.score_net import LatentScoreNet, ScoreNetConfig
    from sgilo.priors.sde import VPSDE
    shape = (G.num_ws, G.w_dim)
    net = LatentScoreNet(ScoreNetConfig(kind="z", latent_shape=shape, d_model=64, depth=2, heads=2))
    prior = LatentPrior(net, VPSDE(), LatentScaler(shape), layer=0).eval().requires_grad_(False)
    return G, fit, {"z": prior}


# ----------------------------------------------------------------------------
# The console line of one (task, solver): what the numbers are, per image.


def summary_line(task: str, solver: str, names: list[str], metrics: list[dict]) -> str:
    """E.g. 'superres x4  SGILO  PSNR of the posterior mean: astronaut 21.4 dB, face 22.0 dB; single samples
    18.9–20.1 dB'. ``metrics``: `image_metrics` of each image."""
    what = "posterior mean" if "psnr_sample" in metrics[0] else "reconstruction"
    line = f"{task:>20s}  {solver:<5s}  PSNR of the {what}: " + ", ".join(
        f"{n} {m['psnr']:.1f} dB" for n, m in zip(names, metrics, strict=True))
    if "psnr_sample" in metrics[0]:
        lo, hi = min(m["psnr_sample_min"] for m in metrics), max(m["psnr_sample_max"] for m in metrics)
        line += f"; single samples {lo:.1f}–{hi:.1f} dB"
    return line


# ----------------------------------------------------------------------------
# Run the 2 tasks × 3 solvers on a batch of 2 images; write the labelled comparison sheet and demo.json.


def demo_solvers(preset: str, seed: int, progress: bool) -> dict:
    """The demo's configs: the preset's (tuned for the bundled model, paper defaults for the stand-in) with fewer
    steps, so the demo stays ≤ 3 min on a laptop CPU."""
    ilo_cfg = preset_config(preset, "ilo")
    radii = None if ilo_cfg.l1_radius_h is None else ilo_cfg.l1_radius_h[:3]          # 3 rounds instead of 4
    return {"CSGM": ("csgm", replace(preset_config(preset, "csgm"), steps=150, restarts=1, seed=seed,
                                     progress=progress)),
            "ILO": ("ilo", replace(ilo_cfg, steps=(30, 30, 20), l1_radius_h=radii, seed=seed, progress=progress)),
            "SGILO": ("sgilo", replace(preset_config(preset, "sgilo"), steps=(100, 50, 50), chains=4, seed=seed,
                                       progress=progress))}


# ----------------------------------------------------------------------------
# SGILO's per-pixel intervals in the demo: raw, and calibrated when the bundled calibration has the task's preset.


def interval_metrics(samples, truth, task: str, params: dict, config, model: str, said: set) -> dict:
    """Coverage / width records (raw and calibrated) of SGILO's samples [K, B, C, H, W]; logs each distinct
    calibration line once (``said``). Returns {"metrics": [B dicts], "interval90": {...}}."""
    cal, name, line = run_calibration(model, task, params, tuple(truth.shape[1:]), config)
    if line and line not in said:
        said.add(line)
        log.info(line)
    recs = coverage_records(samples, truth, name or "", cal)
    scale = recs[0].get("scale90")
    return {"metrics": recs, "interval90": {"task_preset": name, "calibrated": scale is not None,
                                            "scale": 1.0 if scale is None else scale,
                                            "mean_width": [r.get("width90_cal", r["width90"]) for r in recs]}}


def run_demo(out: str | Path, seed: int = 0, progress: bool = True, echo=print, overwrite: bool = False) -> dict:
    from sgilo.bench.tasks import task_params
    from sgilo.metrics.quality import psnr
    from sgilo.operators.inpainting import Inpainting
    from sgilo.operators.resampling import SuperResolution
    from sgilo.utils.images import load_image

    t_start = time.perf_counter()
    out = check_out_dir(out, overwrite)
    G, fit, priors = demo_models(seed)
    R = G.img_resolution
    with torch.no_grad():
        face = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed + 1))).clamp(-1, 1)
    truth = torch.cat([load_image(ASSET, R), face])                        # [2, 3, R, R]
    names = ["astronaut", "generated face"]
    tasks = {"inpaint-random 10%": Inpainting.random((R, R), 0.10, seed),
             "superres x4": SuperResolution(4, (3, R, R))}
    kinds = {"inpaint-random 10%": task_params("inpaint-random", (3, R, R), seed, observed=0.10),
             "superres x4": task_params("superres", (3, R, R), seed, factor=4)}
    model, said = ("default" if bundled_available() else "a random stand-in generator"), set()
    preset = "utkface64" if bundled_available() else "paper"
    solvers = demo_solvers(preset, seed, progress)
    report: dict = {"bundled_model": bundled_available(), "preset": preset, "images": names, "psnr": {}, "metrics": {},
                    "interval90": {},
                    "columns": ["truth", "measurement", "CSGM", "ILO", "SGILO mean", "SGILO sample 1", "SGILO std"]}
    rows: list[list[Panel]] = []
    for tname, op in tasks.items():
        y = op.measure(truth, generator=torch.Generator().manual_seed(seed))
        meas = op.to_image(y, (3, R, R))
        cells = [[Panel(truth[b], f"truth ({names[b]})"), Panel(meas[b], f"measurement\n{tname}")] for b in range(2)]
        for sname, (solver, cfg) in solvers.items():
            res = get_solver(solver).solve(y, op, G, fit, priors=priors, config=cfg)
            metrics = image_metrics(res.x_hat, truth, y, op, res.samples)
            if res.samples is not None:                                      # range of the single samples' PSNR
                per = torch.stack([psnr(s.clamp(-1, 1), truth) for s in res.samples])      # [K, B]
                for b, m in enumerate(metrics):
                    m.update(psnr_sample_min=float(per[:, b].min()), psnr_sample_max=float(per[:, b].max()))
                if res.samples.shape[0] >= 2:
                    params = {**kinds[tname], "sigma": float(op.sigma)}
                    iv = interval_metrics(res.samples.detach(), truth, kinds[tname]["task"], params, cfg, model, said)
                    for m, e in zip(metrics, iv["metrics"], strict=True):
                        m.update(e)
                    report["interval90"][tname] = iv["interval90"]
            report["metrics"][f"{tname} / {sname}"] = metrics
            report["psnr"][f"{tname} / {sname}"] = [round(m["psnr"], 2) for m in metrics]
            echo(summary_line(tname, sname, names, metrics))
            for b in range(2):
                label = f"{sname} mean" if res.samples is not None else sname
                cells[b].append(Panel(res.x_hat[b].detach(), f"{label}\nPSNR {metrics[b]['psnr']:.1f} dB"))
                if res.samples is not None:
                    s0 = res.samples[0, b].detach()
                    db = float(psnr(s0[None].clamp(-1, 1), truth[b:b + 1])[0])
                    cells[b].append(Panel(s0, f"{sname} sample 1\nPSNR {db:.1f} dB"))
                    cells[b].append(Panel(std_of(res.samples[:, b].detach()), f"{sname} std", kind="std"))
        rows += cells
    clear_outputs(out)
    save_sheet(out / "demo_sheet.png", rows,
               title="PSNR vs the truth; std: per-pixel posterior std of SGILO's 4 chains")
    report["seconds"] = time.perf_counter() - t_start
    write_json(out / "demo.json", report)
    echo(f"wrote {out / 'demo_sheet.png'} and {out / 'demo.json'} ({report['seconds']:.0f} s)")
    return report
