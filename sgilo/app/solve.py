"""Library side of `sgilo solve` (SGILO, Daras et al., ICML 2022; ILO 2021; CSGM 2017): check the output folder,
load the models (`sgilo.app.models`), run the registry's solver (`sgilo.solvers.registry`), score it
(`sgilo.metrics.quality.image_metrics`) and write DIR/result.json, the PNGs, the labelled sheet and the latents
(`sgilo.app.outputs`) so a run can be continued.

The click commands in `sgilo.cli` only parse options; the operator is built there (task presets live in `sgilo.bench`)
and passed in as a factory of the image shape. result.json records the input image (path, sha256, size, the centre
crop and resize applied), the task, the config, ``metrics.mean`` (`image_metrics` of the estimate / posterior mean,
with the sample-set numbers) and ``metrics.samples`` (one entry per sample).

Continuing a run: ``sgilo solve … --init DIR`` (or DIR/latents.safetensors) starts from the final iterate that an
earlier run saved — its split layer k, z, h_k, skip image and noise maps — and skips the rounds before k (they are
already baked into h_k), so with the same image, task, seed and --steps the continued run starts exactly where the earlier
one stopped (its first data term equals the earlier final one; result.json reports both under ``data_term``).
Latents with B rows (CSGM/ILO) continue a K-chain SGILO run by tiling them over the chains.
LPIPS: ``--lpips-weights PATH`` (local LPIPS-VGG weights, layout in `sgilo.metrics.lpips`) adds ``lpips`` to every
metrics entry; ``--lpips-weight W > 0`` also adds W · LPIPS(A†A x, A†y) to the data term.

Intervals (samplers, K ≥ 2): ``metrics.mean`` holds the raw coverage and mean width of the per-pixel 50 % / 90 %
intervals and, when the interval calibration stored with the bundled model (`sgilo.metrics.conformal`, fitted on
train/ faces by `sgilo calibrate --conformal`) has this task's preset, the calibrated ones (``coverage90_cal``,
``width90_cal``, ``scale90``). DIR/interval90.safetensors holds the 90 % interval of the image ("lo", "hi" [C, H, W];
calibrated when possible, ``result.json["interval90"]`` says which). One INFO line says when the intervals are
uncalibrated, or when the calibration was fitted with other SGILO settings than the run's. ``diagnostics.h_move``
reports how far h_k moved from head_k(z) in each round, ``diagnostics.modes`` the distinct modes among the chains.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from sgilo.app.configs import config_dict
from sgilo.app.models import load_models, resolve_device
from sgilo.app.outputs import (check_out_dir, clear_outputs, input_record, load_latents, save_latents,
                               save_reconstruction, write_json)
from sgilo.checkpoints import atomic_write
from sgilo.generator.io import bundled_available
from sgilo.metrics.conformal import apply_calibration, base_interval, coverage_records, load_calibration
from sgilo.metrics.quality import image_metrics
from sgilo.solvers.registry import SOLVERS, get_solver

log = logging.getLogger("sgilo.app")


# ----------------------------------------------------------------------------
# Build a solver config from CLI-level overrides (K, steps, seed, step size); unknown solver → one clear line.


def make_config(solver: str, samples: int | None = None, steps: tuple[int, ...] | None = None, seed: int = 0,
                eta: float | None = None, mode: str | None = None, progress: bool = True,
                lpips_weight: float | None = None, geocross: float | None = None, preset: str = "paper",
                precision: str | None = None, step_control: str | None = None):
    """The ``preset`` config (`sgilo.app.presets`: 'paper' or 'utkface64') with the given overrides."""
    from sgilo.app.presets import preset_config
    get_solver(solver)                                                     # unknown name → one line
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise ValueError(f"--samples K must be an integer >= 1, got {samples!r}")
    kw: dict = {"seed": seed, "progress": progress, **({"precision": precision} if precision else {})}
    for name, v in (("lpips_weight", lpips_weight), ("geocross", geocross)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v!r}")
        kw.update({name: float(v)} if v is not None else {})
    if solver == "csgm":
        kw.update({"steps": int(sum(steps))} if steps else {})
        kw.update({"restarts": samples} if samples else {})
    else:
        kw.update({"steps": tuple(steps)} if steps else {})
    if solver == "sgilo":
        kw.update({"chains": samples} if samples else {})
        kw.update({"eta": eta} if eta is not None else {})
        kw.update({"mode": mode} if mode else {})
        if step_control:                                                  # 'curvature' (default bounds) or 'none'
            from sgilo.solvers.sgilo import CurvatureControl
            on = preset_config(preset, solver).curvature or CurvatureControl()
            kw["curvature"] = on if step_control == "curvature" else None
    elif step_control:
        raise ValueError(f"--step-control applies to --solver sgilo only, got --solver {solver}")
    return replace(preset_config(preset, solver), **kw)


# ----------------------------------------------------------------------------
# result.json pieces: metrics of the estimate (with the sample-set numbers) and of each sample; the data term.


def score(result, truth, y, operator, lpips=None, task_preset: str | None = None,
          calibration: dict | None = None) -> dict:
    """{"mean": `image_metrics` of x̂ and the K samples, "samples": `image_metrics` of each sample} for image 0; with
    K ≥ 2 samples "mean" also holds the interval widths and, when ``calibration`` has ``task_preset``, the calibrated
    coverage and widths (`sgilo.metrics.conformal.coverage_records`)."""
    samples = [] if result.samples is None else result.samples[:, :1]      # [K, 1, C, H, W]
    mean = image_metrics(result.x_hat[:1], truth, y[:1], operator, result.samples, lpips)[0]
    if len(samples) >= 2:
        mean.update(coverage_records(samples, truth, task_preset or "", calibration)[0])
    return {"mean": mean, "samples": [image_metrics(s, truth, y[:1], operator, None, lpips)[0] for s in samples]}


# ----------------------------------------------------------------------------
# The interval calibration a SGILO run gets: the one stored with the bundled model (only for model 'default'), the
# bench task preset the run's task is (calibrations are keyed by it; None if none), and the one line that says what
# it means for this run (None when the calibration applies as fitted).


def run_calibration(model: str | Path, task: str, params: dict, image_shape: tuple[int, int, int],
                    config) -> tuple[dict | None, str | None, str | None]:
    """Returns (calibration, task preset name, line)."""
    from sgilo.app.calibrate import calibration_note, task_preset_name

    task_preset = task_preset_name(task, params, image_shape)
    if str(model) != "default":
        return None, task_preset, (f"intervals are uncalibrated: the interval calibration is fitted for the bundled "
                                   f"model, not {model} (coverage is reported raw)")
    cal = load_calibration("utkface64")
    if cal is None:
        return None, task_preset, ("intervals are uncalibrated: no interval calibration ships with the bundled model "
                                   "(coverage is reported raw; `sgilo calibrate --conformal` fits one)")
    if task_preset is None or task_preset not in cal.get("tasks", {}):
        what = "this task is not a bench task preset" if task_preset is None else f"it has no task {task_preset!r}"
        return cal, task_preset, (f"intervals are uncalibrated: {what} in the interval calibration (coverage is "
                                  "reported raw)")
    return cal, task_preset, calibration_note(cal, config)


# ----------------------------------------------------------------------------
# The 90 % interval of image 0: x̄ ± λ·half (calibrated) or x̄ ± half (raw), written to DIR/interval90.safetensors.


def save_interval(out: Path, samples, task_preset: str | None, calibration: dict | None, q: float = 0.9) -> dict:
    """Shapes: samples [K, 1, C, H, W] with K ≥ 2. Returns result.json's record of the file."""
    from safetensors.torch import save_file

    has = calibration is not None and task_preset in calibration.get("tasks", {})
    if has:
        iv = apply_calibration(samples, task_preset, calibration, levels=(q,))[q]
        lo, hi, lam = iv["lo"], iv["hi"], iv["scale"]
    else:
        mean, half = base_interval(samples, q)
        lo, hi, lam = mean - half, mean + half, 1.0
    name = f"interval{round(q * 100)}.safetensors"
    tensors = {"lo": lo[0].detach().float().cpu().contiguous(), "hi": hi[0].detach().float().cpu().contiguous()}
    meta = {"level": f"{q:g}", "scale": repr(lam), "calibrated": str(has), "task_preset": str(task_preset)}
    atomic_write(out / name, lambda p: save_file(tensors, p, metadata=meta))
    return {"file": name, "level": q, "calibrated": has, "scale": lam, "task_preset": task_preset,
            "mean_width": float((hi - lo).mean())}


def data_term(result) -> dict:
    data = result.traces["data"]
    return {"initial": data[0].flatten().tolist() if len(data) else None,
            "final": torch.tensor(result.diagnostics["final_data_term"]).flatten().tolist()}


# ----------------------------------------------------------------------------
# The whole `sgilo solve` run on one image; returns the result.json dict.


def solve_image(image: str | Path, make_operator, solver: str, config, out: str | Path, model: str = "default",
                prior: str | None = "default", task: dict | None = None, seed: int = 0,
                lpips_weights: str | Path | None = None, init: str | Path | None = None,
                device: str | torch.device | None = None, overwrite: bool = False) -> dict:
    """Check ``out`` (writable; an earlier run there only with ``overwrite``), load the model and the image (centre
    crop + resize to the generator's resolution, logged and recorded), measure it with ``make_operator(image_shape)``,
    solve with the registry's solver, score and write DIR/result.json, the PNGs, the sheet and latents.safetensors.

    ``lpips_weights``: local LPIPS weights (metric, and data term when config.lpips_weight > 0); ``init``: a run
    folder or latents file to continue from; ``device``: 'cpu', 'cuda', … (default cpu)."""
    from sgilo.metrics.lpips import LPIPS
    from sgilo.utils.images import load_image

    if not Path(image).is_file():
        raise FileNotFoundError(f"image not found: {image}")
    out = check_out_dir(out, overwrite)
    if config.lpips_weight > 0 and lpips_weights is None:
        raise ValueError(f"--lpips-weight {config.lpips_weight} > 0 needs --lpips-weights PATH (local LPIPS-VGG "
                         f"weights, layout in sgilo/metrics/lpips.py); nothing is downloaded")
    device = resolve_device(device)
    entry = get_solver(solver)
    lpips = LPIPS(lpips_weights).to(device) if lpips_weights is not None else None
    start = load_latents(init) if init is not None else None
    G, fit, priors = load_models(model, prior if solver == "sgilo" else "none", device)
    if lpips is not None and config.lpips_weight > 0:
        config = replace(config, perceptual=lpips)
    truth = load_image(image, G.img_resolution).to(device)                 # [1, 3, R, R]
    source = input_record(image, G.img_resolution)
    operator = make_operator(tuple(truth.shape[1:])).to(device)
    y = operator.measure(truth, generator=torch.Generator(device=device).manual_seed(seed))
    cal, preset_name = None, None
    if entry.samples and getattr(config, "chains", 1) >= 2:
        cal, preset_name, line = run_calibration(model, (task or {}).get("task", ""), task or {},
                                                 tuple(truth.shape[1:]), config)
        if line:
            log.info(line)
    t0 = time.perf_counter()
    result = entry.solve(y, operator, G, fit, priors=priors, config=config, init=start)
    seconds = time.perf_counter() - t0
    clear_outputs(out)
    meas = operator.to_image(y, tuple(truth.shape[1:]))[0]
    files = save_reconstruction(out, result.x_hat[0], meas, truth[0], None if result.samples is None else
                                result.samples[:, 0], title=f"{solver} · {(task or {}).get('task', '')}")["files"]
    save_latents(out, result)
    interval = None
    if result.samples is not None and result.samples.shape[0] >= 2:
        interval = save_interval(out, result.samples[:, :1], preset_name, cal)
        files.append(interval["file"])
    diag = {k: v for k, v in result.diagnostics.items() if k not in ("final_data_term",)}
    diag.setdefault("rhat", None)
    report = {"solver": solver, "seed": seed, "task": task or {}, "input": source, "model": str(model),
              "prior": prior if solver == "sgilo" else None, "priors_loaded": sorted(priors),
              "init": None if init is None else str(init), "start_layer": 0 if start is None else start.k,
              "lpips_weights": None if lpips_weights is None else str(lpips_weights), "device": str(device),
              "data_term": data_term(result), "config": config_dict(config),
              "metrics": score(result, truth, y, operator, lpips, preset_name, cal), "interval90": interval,
              "diagnostics": diag, "seconds": seconds, "seconds_per_round": result.seconds_per_round,
              "bundled_model": bundled_available(), "files": files + ["latents.safetensors", "result.json"]}
    write_json(out / "result.json", report)
    return report


__all__ = ["SOLVERS", "config_dict", "data_term", "load_latents", "make_config", "score", "solve_image"]


