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
"""

from __future__ import annotations

import math
import time
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import torch

from sgilo.app.models import load_models, resolve_device
from sgilo.app.outputs import (check_out_dir, clear_outputs, input_record, load_latents, save_latents,
                               save_reconstruction, write_json)
from sgilo.generator.io import bundled_available
from sgilo.metrics.quality import image_metrics
from sgilo.solvers.registry import SOLVERS, get_solver


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
# JSON-ready config (drops the perceptual callable; inf → "inf").


def config_dict(config) -> dict:
    """Fields of a (possibly nested) config dataclass as JSON-ready values."""
    def value(v):
        if is_dataclass(v) and not isinstance(v, type):
            return config_dict(v)
        return str(v) if isinstance(v, float) and not math.isfinite(v) else v
    return {f.name: value(getattr(config, f.name)) for f in fields(config) if f.name != "perceptual"}


# ----------------------------------------------------------------------------
# result.json pieces: metrics of the estimate (with the sample-set numbers) and of each sample; the data term.


def score(result, truth, y, operator, lpips=None) -> dict:
    """{"mean": `image_metrics` of x̂ and the K samples, "samples": `image_metrics` of each sample} for image 0."""
    samples = [] if result.samples is None else result.samples[:, :1]      # [K, 1, C, H, W]
    return {"mean": image_metrics(result.x_hat[:1], truth, y[:1], operator, result.samples, lpips)[0],
            "samples": [image_metrics(s, truth, y[:1], operator, None, lpips)[0] for s in samples]}


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
    t0 = time.perf_counter()
    result = entry.solve(y, operator, G, fit, priors=priors, config=config, init=start)
    seconds = time.perf_counter() - t0
    clear_outputs(out)
    meas = operator.to_image(y, tuple(truth.shape[1:]))[0]
    files = save_reconstruction(out, result.x_hat[0], meas, truth[0], None if result.samples is None else
                                result.samples[:, 0], title=f"{solver} · {(task or {}).get('task', '')}")["files"]
    save_latents(out, result)
    diag = {k: v for k, v in result.diagnostics.items() if k not in ("final_data_term",)}
    diag.setdefault("rhat", None)
    report = {"solver": solver, "seed": seed, "task": task or {}, "input": source, "model": str(model),
              "prior": prior if solver == "sgilo" else None, "priors_loaded": sorted(priors),
              "init": None if init is None else str(init), "start_layer": 0 if start is None else start.k,
              "lpips_weights": None if lpips_weights is None else str(lpips_weights), "device": str(device),
              "data_term": data_term(result), "config": config_dict(config),
              "metrics": score(result, truth, y, operator, lpips),
              "diagnostics": diag, "seconds": seconds, "seconds_per_round": result.seconds_per_round,
              "bundled_model": bundled_available(), "files": files + ["latents.safetensors", "result.json"]}
    write_json(out / "result.json", report)
    return report


__all__ = ["SOLVERS", "config_dict", "data_term", "load_latents", "make_config", "score", "solve_image"]


