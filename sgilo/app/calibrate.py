"""`sgilo calibrate`: how far SGILO's (Daras et al., ICML 2022) posterior samples can be trusted, in two jobs.

* `run_sbc` — simulation-based calibration (Talts et al. 2018; Modrák et al. 2023; `sgilo.metrics.sbc`) on the model
  itself: truth z ~ N(0, I) (the Gaussianised w+ code) and noise maps ~ N(0, I), x = G(z), y = A x + σ_eff ε with
  σ_eff (σ, or σ_min when σ = 0) the noise level SGILO's likelihood assumes (`sgilo.solvers.objective.effective_sigma`),
  then L SGILO chains per replicate and the rank of the truth among the L draws for: pixel values (one random pixel per
  replicate, and P pixels pooled), the mean intensity of the unobserved region (inpainting; the whole image for other
  tasks), ‖z‖ and a random projection of h_k at the last round's split layer k (of z for one round). Writes
  DIR/sbc.json and DIR/sbc.png (rank histograms | ECDF differences with the simultaneous 95 % band).
* `run_conformal` — split-conformal (conformal risk control) scales λ_q per task for the 50 % and 90 % intervals on
  faces of one split (train/ only by default; `sgilo.metrics.conformal`), written to DIR/interval_calibration.json.
  Copy it to ``sgilo/models/utkface64/interval_calibration.json`` to make it the bundled calibration.

An existing DIR is refused unless ``overwrite``; every file is written atomically.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from sgilo.checkpoints import atomic_write_text
from sgilo.metrics.conformal import FORMAT, LEVELS, VERSION, fit_scale, interval_coverage, interval_scores
from sgilo.metrics.sbc import save_sbc_figure, sbc_ranks, summarize_ranks
from sgilo.solvers.objective import effective_sigma
from sgilo.solvers.registry import get_solver
from sgilo.solvers.rng import row_seed


# ----------------------------------------------------------------------------
# Output folder: refused when it exists unless overwrite (then emptied of our files only).


def refuse_existing(out: str | Path, overwrite: bool) -> None:
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"output folder {out} exists; pass --overwrite to replace it or choose another --out")


def prepare_out(out: str | Path, overwrite: bool, files: tuple[str, ...]) -> Path:
    out = Path(out)
    refuse_existing(out, overwrite)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: expected a folder, got the file {out}")
    out.mkdir(parents=True, exist_ok=True)
    for name in files:
        (out / name).unlink(missing_ok=True)
    return out


def _json(obj) -> str:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o
    return json.dumps(clean(obj), indent=1)


def _config_dict(config) -> dict:
    from sgilo.app.configs import config_dict
    return config_dict(config)


# ----------------------------------------------------------------------------
# One simulated replicate set: z, noises ~ N(0, I) → state at layer k, image, measurement with σ_eff.


@torch.no_grad()
def simulate(G, fit, operator, n: int, k: int, sigma_eff: float, generator: torch.Generator):
    """Returns truth dict {"z" [n, L, D], "h" [n, C, r, r] | None, "x" [n, C, H, W]} and y [n, ...]."""
    from sgilo.generator.split import head, tail

    syn = G.synthesis
    z = torch.randn([n, syn.num_ws, syn.w_dim], generator=generator)
    noises = [torch.randn([n, 1, layer.resolution, layer.resolution], generator=generator)
              for layer in syn.noise_layers()]
    state = head(syn, fit(z), k, noises)
    x = tail(syn, state)
    ax = operator.A(x)
    y = ax + sigma_eff * torch.randn(ax.shape, generator=generator)
    return {"z": z, "h": state.h, "x": x}, y


# ----------------------------------------------------------------------------
# Scalar summaries of truth [n, ...] and draws [L, n, ...] → {name: (truth [n], draws [L, n])}.


def summaries(truth: dict, samples: Tensor, z: Tensor, h: Tensor | None, region: Tensor, pix: Tensor,
              v_h: Tensor, offset: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """Shapes: samples [L, n, C, H, W]; z [L·n, Lw, D] and h [L·n, C, r, r] chain-major; region [H, W] bool;
    pix [P] flat pixel indices into C·H·W; v_h unit vector of h's (or z's when h is None) flat size. Replicate i of
    this batch (global index offset + i) uses pixel pix[(offset + i) mod P] for the one-pixel summary."""
    L, n = samples.shape[:2]
    flat_s, flat_t = samples.flatten(2), truth["x"].flatten(1)              # [L, n, CHW], [n, CHW]
    one = pix[(offset + torch.arange(n)) % len(pix)]                        # one pixel per replicate (independent)
    mask = region.expand_as(truth["x"][0])
    lat_t, lat_d = (truth["h"], h) if truth["h"] is not None and h is not None else (truth["z"], z)
    return {
        "pixel": (flat_t[torch.arange(n), one], flat_s[:, torch.arange(n), one]),
        "pixels_pooled": (flat_t[:, pix], flat_s[:, :, pix]),
        "mean_region": (truth["x"][:, mask].mean(1), samples[:, :, mask].mean(2)),
        "z_norm": (truth["z"].flatten(1).norm(dim=1), z.reshape(L, n, -1).norm(dim=2)),
        "h_projection": (lat_t.flatten(1) @ v_h, lat_d.reshape(L, n, -1) @ v_h),
    }


# ----------------------------------------------------------------------------
# The unobserved region: mask == 0 for inpainting; the whole image otherwise.


def unobserved_region(operator, hw: tuple[int, int]) -> tuple[Tensor, str]:
    mask = getattr(operator, "mask", None)
    if mask is not None:
        return mask.reshape(hw) == 0, "unobserved pixels (mask = 0)"
    return torch.ones(hw, dtype=torch.bool), "whole image (the task has no unobserved region)"


# ----------------------------------------------------------------------------
# SBC job.


def run_sbc(task: str, task_kw: dict, out: str | Path, n: int = 20, draws: int = 8, *, model: str = "default",
            prior: str = "default", preset: str = "utkface64", steps: tuple[int, ...] | None = None, seed: int = 0,
            pixels: int = 64, batch: int = 4, overwrite: bool = False, device: str = "cpu",
            echo: Callable[[str], None] = print) -> dict:
    """Simulation-based calibration of SGILO on its own model (module docstring). Returns the sbc.json dict."""
    from sgilo.app.models import load_models
    from sgilo.app.presets import preset_config
    from sgilo.bench.tasks import make_operator, task_params

    if n < 2 or draws < 1 or batch < 1 or pixels < 1:
        raise ValueError(f"calibrate: expected --n >= 2, --draws >= 1, --batch >= 1, --pixels >= 1, got n={n}, "
                         f"draws={draws}, batch={batch}, pixels={pixels}")
    config = replace(preset_config(preset, "sgilo"), chains=draws, seed=seed, progress=False,
                     **({"steps": tuple(steps)} if steps else {}))
    out = prepare_out(out, overwrite, ("sbc.json", "sbc.png"))
    G, fit, priors = load_models(model, prior, device)
    shape = (G.img_channels, G.img_resolution, G.img_resolution)
    op = make_operator(task, shape, seed, **task_kw).to(device)
    info = task_params(task, shape, seed, **task_kw)
    sigma_eff = effective_sigma(op.sigma, config.sigma_min)
    k = len(config.steps) - 1
    g = torch.Generator().manual_seed(row_seed(seed, 17, 0))
    region, region_desc = unobserved_region(op, shape[1:])
    pix = torch.randperm(math.prod(shape), generator=g)[:pixels]
    solve, collected, diag, t0 = get_solver("sgilo").solve, {}, [], time.time()
    v_h = None
    for start in range(0, n, batch):
        b = min(batch, n - start)
        truth, y = simulate(G, fit, op, b, k, sigma_eff, g)
        r = solve(y.to(device), op, G, fit, priors=priors, config=config,
                  seeds=[row_seed(seed, 18, start + i) % 2**62 for i in range(b)])
        lat = truth["h"] if truth["h"] is not None else truth["z"]
        if v_h is None:
            v_h = torch.randn(lat[0].numel(), generator=g)
            v_h = v_h / v_h.norm()
        h = r.state.h if k > 0 else None
        for name, (t, d) in summaries(truth, r.samples.cpu(), r.z.cpu(), None if h is None else h.cpu(), region,
                                      pix, v_h, start).items():
            collected.setdefault(name, []).append(sbc_ranks(t, d, g))
        diag.append({"rhat_max": r.diagnostics.get("rhat_max"), "modes": r.diagnostics.get("modes")})
        echo(f"sbc {task}: {start + b}/{n} replicates ({time.time() - t0:.0f} s)")
    result = {"task": info, "n": n, "draws": draws, "sigma_eff": sigma_eff, "split_layer": k, "model": str(model),
              "prior": prior, "preset": preset, "config": _config_dict(config), "region": region_desc,
              "pixels": pix.tolist(), "seconds": round(time.time() - t0, 1), "diagnostics": diag, "summaries": {}}
    for name, ranks in collected.items():
        result["summaries"][name] = summarize_ranks(torch.cat(ranks, dim=0).reshape(-1), draws,
                                                    independent=name != "pixels_pooled")
    atomic_write_text(out / "sbc.json", _json(result))
    save_sbc_figure(out / "sbc.png", result["summaries"],
                    f"SBC of SGILO: {task} {task_kw or ''}, N = {n}, L = {draws}, σ_eff = {sigma_eff:g}")
    return result


# ----------------------------------------------------------------------------
# Conformal job: λ_q per task on n faces of one split.


def run_conformal(data: str, out: str | Path, tasks: str = "main", split: str = "train", n_images: int = 20, *,
                  preset: str = "default", model: str = "default", prior: str = "default", seed: int = 0,
                  batch: int = 4, levels: tuple[float, ...] = LEVELS, overwrite: bool = False, device: str = "cpu",
                  echo: Callable[[str], None] = print) -> dict:
    """Fit the interval scales; returns the calibration dict (also DIR/interval_calibration.json, after every task)."""
    from sgilo.app.models import load_models
    from sgilo.bench.presets import SOLVER_PRESETS, TASK_PRESETS, expand_tasks, preset_params
    from sgilo.bench.tasks import make_operator
    from sgilo.utils.datasets import load_image_set, to_float

    if split == "test":
        raise ValueError("calibrate --conformal: expected a calibration split other than test/ (e.g. train), got test")
    if preset not in SOLVER_PRESETS:
        raise ValueError(f"unknown bench preset {preset!r}; expected one of {sorted(SOLVER_PRESETS)}")
    names = expand_tasks(tasks)
    refuse_existing(out, overwrite)                                        # before any work
    G, fit, priors = load_models(model, prior, device)
    bp = SOLVER_PRESETS[preset]
    config = replace(bp.configs["sgilo"] if hasattr(bp, "configs") else bp["sgilo"], progress=False)
    if config.chains < 2:
        raise ValueError(f"calibrate --conformal: the preset's SGILO config has {config.chains} chain; need >= 2")
    x_all = to_float(load_image_set(data, G.img_resolution, split, limit=n_images)).to(device)
    shape = tuple(x_all.shape[1:])
    out = prepare_out(out, overwrite, ("interval_calibration.json",))
    cal = {"format": FORMAT, "version": VERSION, "method": "conformal risk control (Angelopoulos et al. 2022, 2024)",
           "interval": "mean ± scale · t_{K-1}((1+q)/2) · s · sqrt(1 + 1/K)", "model": str(model), "prior": prior,
           "split": split, "n_images": len(x_all), "solver": "sgilo", "bench_preset": preset,
           "chains": config.chains, "config": _config_dict(config), "tasks": {}}
    t0 = time.time()
    for name in names:
        op = make_operator(TASK_PRESETS[name].task, shape, seed, **preset_params(name, shape)).to(device)
        samples = []
        for start in range(0, len(x_all), batch):
            x = x_all[start:start + batch]
            gens = [torch.Generator(device=device).manual_seed(row_seed(seed, 19, start + i)) for i in range(len(x))]
            y = torch.cat([op.measure(x[i:i + 1], generator=gens[i]) for i in range(len(x))])
            r = get_solver("sgilo").solve(y, op, G, fit, priors=priors, config=config,
                                          seeds=[row_seed(seed, 20, start + i) % 2**62 for i in range(len(x))])
            samples.append(r.samples.detach().cpu())
        s = torch.cat(samples, dim=1)
        cal["tasks"][name] = fit_task(s, x_all.cpu(), levels)
        cal["seconds"] = round(time.time() - t0, 1)
        atomic_write_text(out / "interval_calibration.json", _json(cal))
        lv = cal["tasks"][name]["levels"]
        echo(f"{name}: " + ", ".join(f"q={q}: scale {v['scale']:.3f}, raw coverage {v['raw_coverage']:.3f}"
                                     for q, v in lv.items()) + f" ({time.time() - t0:.0f} s)")
    return cal


def fit_task(samples: Tensor, truth: Tensor, levels: tuple[float, ...] = LEVELS) -> dict:
    """Shapes: samples [K, n, C, H, W], truth [n, C, H, W] → {"levels": {"0.9": {...}}, "n": n}."""
    out: dict = {"n": int(truth.shape[0]), "levels": {}}
    for q in levels:
        lam = fit_scale(interval_scores(samples, truth, q), q)
        raw_c, raw_w = interval_coverage(samples, truth, q)
        cal_c, cal_w = interval_coverage(samples, truth, q, lam)
        out["levels"][f"{q:g}"] = {"scale": lam, "alpha": round(1 - q, 10),
                                   "raw_coverage": float(raw_c.mean()), "raw_width": float(raw_w.mean()),
                                   "calibrated_coverage_in_sample": float(cal_c.mean()),
                                   "calibrated_width": float(cal_w.mean())}
    return out


# ----------------------------------------------------------------------------
# Install a fitted calibration beside the bundled model (the file `load_calibration('utkface64')` reads).


def install_calibration(path: str | Path, name: str = "utkface64") -> Path:
    from sgilo.metrics.conformal import calibration_path, load_calibration
    load_calibration(Path(path), required=True)                               # validates the format
    dst = calibration_path(name)
    atomic_write_text(dst, Path(path).read_text())
    return dst


# ----------------------------------------------------------------------------
# The bench task preset a `sgilo solve` task is (calibrations are keyed by preset name), or None.


def task_preset_name(task: str, params: dict, image_shape: tuple[int, int, int]) -> str | None:
    """``params``: the resolved `sgilo.bench.tasks.task_params` of the run, e.g. {"observed": 0.03, "sigma": 0.0};
    returns e.g. 'inpaint-random-3' when task and every preset parameter match, else None."""
    from sgilo.bench.presets import TASK_PRESETS, preset_params

    def same(a, b) -> bool:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b

    for name, preset in TASK_PRESETS.items():
        if preset.task != task:
            continue
        pp = {"sigma": 0.0, **preset_params(name, tuple(image_shape))}
        if all(k in params and same(v, params[k]) for k, v in pp.items()):
            return name
    return None


# ----------------------------------------------------------------------------
# One line when a calibration was fitted with other SGILO settings than the run it is applied to (else None).


# Every recorded sampler setting counts (steps, chains, step sizes, burn-in, curvature bounds, score time, ...), not the
# seed, the progress bar or the precision.
IGNORED = ("seed", "progress", "precision")


def calibration_note(calibration: dict | None, config) -> str | None:
    if calibration is None:
        return None
    fitted, now = calibration.get("config", {}), _config_dict(config)
    diff = [f"{k} {fitted[k]} (fitted) vs {now.get(k)}" for k in fitted
            if k not in IGNORED and _norm(fitted[k]) != _norm(now.get(k))]
    if not diff:
        return None
    return ("interval calibration was fitted with other SGILO settings (" + "; ".join(diff) +
            "): its coverage guarantee does not transfer exactly")


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v
