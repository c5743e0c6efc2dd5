"""Library side of `sgilo solve` and `sgilo demo` (SGILO, Daras et al., ICML 2022; ILO 2021; CSGM 2017): load models,
run a solver, score it and write DIR/result.json, PNGs and the latents (safetensors) so a run can be continued.

The click commands in `sgilo.cli` only parse options; the operator is built there (task presets live in `sgilo.bench`)
and passed in as an object.

Continuing a run: ``sgilo solve … --init DIR`` (or DIR/latents.safetensors) starts from the final iterate that an
earlier run saved — its split layer k, z, h_k, skip image and noise maps — and skips the rounds before k (they are
already baked into h_k), so with the same image, task, seed and --steps the continued run starts exactly where the earlier
one stopped (its first data term equals the earlier final one; result.json reports both under ``data_term``).
Latents with B rows (CSGM/ILO) continue a K-chain SGILO run by tiling them over the chains.
LPIPS: ``--lpips-weights PATH`` (local LPIPS-VGG weights, layout in `sgilo.metrics.lpips`) adds ``lpips`` to every
metrics entry; ``--lpips-weight W > 0`` also adds W · LPIPS(A†A x, A†y) to the data term.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import fields, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from sgilo.checkpoints import atomic_write, atomic_write_text
from sgilo.generator.io import bundled_available, load_generator
from sgilo.solvers import csgm, ilo, sgilo
from sgilo.solvers.result import Latents, Result

SOLVERS = {"csgm": (csgm, csgm.CSGMConfig), "ilo": (ilo, ilo.ILOConfig), "sgilo": (sgilo, sgilo.SGILOConfig)}


# ----------------------------------------------------------------------------
# Build a solver config from CLI-level overrides (K, steps, seed, step size); unknown solver → one clear line.


def make_config(solver: str, samples: int | None = None, steps: tuple[int, ...] | None = None, seed: int = 0,
                eta: float | None = None, mode: str | None = None, progress: bool = True,
                lpips_weight: float | None = None, geocross: float | None = None, preset: str = "paper",
                precision: str | None = None, step_control: str | None = None):
    """The ``preset`` config (`sgilo.app.presets`: 'paper' or 'utkface64') with the given overrides."""
    from dataclasses import replace

    from sgilo.app.presets import preset_config
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}, expected one of {sorted(SOLVERS)}")
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
        kw.update({"step_control": step_control} if step_control else {})
    elif step_control:
        raise ValueError(f"--step-control applies to --solver sgilo only, got --solver {solver}")
    return replace(preset_config(preset, solver), **kw)


# ----------------------------------------------------------------------------
# Priors for SGILO: "default" = the bundled ones that exist; a path = one prior file or a folder of prior_*.json.


def load_priors(spec: str | None, rounds: int) -> dict:
    from sgilo.priors.io import load_prior

    if spec is None or spec == "none":
        return {}
    if spec == "default":
        out = {}
        for name in ["z"] + [f"h{k}" for k in range(1, rounds)]:
            try:
                out[name] = load_prior(name)
            except FileNotFoundError:
                continue
        if not out:
            warnings.warn("no bundled priors in this checkout: SGILO uses the N(0, I) prior of z only", RuntimeWarning,
                          stacklevel=2)
        return out
    path = Path(spec)
    if not path.exists() and not path.with_suffix(".json").exists():
        raise FileNotFoundError(f"prior not found: {spec} (expected a prior file or a folder of prior_*.json)")
    files = sorted(path.glob("prior_*.json")) if path.is_dir() else [path]
    priors = [load_prior(f) for f in files]
    return {("z" if p.kind == "z" else f"h{p.layer}"): p for p in priors}


# ----------------------------------------------------------------------------
# Metrics of every sample and of the mean, plus coverage and diversity (sgilo.metrics).


def score(result: Result, truth: Tensor | None, operator, y: Tensor, lpips=None) -> dict:
    """``lpips``: an optional `sgilo.metrics.lpips.LPIPS`; adds ``lpips`` (to the truth) to every metrics entry."""
    from sgilo.metrics.posterior import coverage, diversity
    from sgilo.metrics.quality import measurement_residual, psnr, ssim

    @torch.no_grad()
    def one(x: Tensor) -> dict:
        m = {"residual": float(measurement_residual(operator, x, y)[0])}
        if truth is not None:
            m.update(psnr=float(psnr(x.clamp(-1, 1), truth)[0]), ssim=float(ssim(x.clamp(-1, 1), truth)[0]))
            if lpips is not None:
                m["lpips"] = float(lpips(x.clamp(-1, 1), truth)[0])
        return m

    out = {"mean": one(result.x_hat), "samples": [], "coverage50": None, "coverage90": None, "diversity": None}
    if result.samples is not None:
        out["samples"] = [one(s) for s in result.samples]
        out["diversity"] = float(diversity(result.samples)[0]) if result.samples.shape[0] > 1 else 0.0
        if truth is not None:
            out["coverage50"] = float(coverage(result.samples, truth, 0.5)[0])
            out["coverage90"] = float(coverage(result.samples, truth, 0.9)[0])
    return out


# ----------------------------------------------------------------------------
# JSON-ready config (drops the perceptual callable; inf → "inf").


def config_dict(config) -> dict:
    d = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "perceptual"}
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------
# Write PNGs (truth, measurement, samples, mean, std map, summary sheet) and latents.safetensors.


def write_outputs(out: Path, result: Result, truth: Tensor | None, meas_img: Tensor) -> None:
    from sgilo.utils.images import save_image, save_image_grid

    out.mkdir(parents=True, exist_ok=True)
    tiles = []
    if truth is not None:
        save_image(truth[0], out / "truth.png")
        tiles.append(truth[0])
    save_image(meas_img[0], out / "measurement.png")
    save_image(result.x_hat[0].clamp(-1, 1), out / "mean.png")
    tiles += [meas_img[0], result.x_hat[0]]
    if result.samples is not None:
        std = result.std[0].mean(0, keepdim=True)                          # [1, H, W]
        std_img = (std / std.max().clamp_min(1e-8) * 2 - 1).expand(3, -1, -1)
        save_image(std_img, out / "std.png")
        tiles.append(std_img)
        for i, s in enumerate(result.samples[:, 0]):
            save_image(s.clamp(-1, 1), out / f"sample_{i:02d}.png")
        tiles += list(result.samples[:8, 0])
    save_image_grid(torch.stack(tiles), out / "summary.png", nrow=len(tiles) if len(tiles) <= 6 else 6)
    st = result.state
    tensors = {"z": result.z, "ws": st.ws}
    tensors.update({"h": st.h} if st.h is not None else {})
    tensors.update({"skip": st.skip} if st.skip is not None else {})
    tensors.update({f"noise_{i}": n for i, n in enumerate(st.noises) if n is not None})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(out / "latents.safetensors", lambda p: save_file(tensors, p, metadata={"k": str(st.k)}))


# ----------------------------------------------------------------------------
# Read latents.safetensors (a run folder or the file) back into `Latents` for --init.


def load_latents(path: str | Path) -> Latents:
    p = Path(path)
    p = p / "latents.safetensors" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"--init: no saved latents at {path} (expected a run folder or the "
                                f"latents.safetensors that `sgilo solve` writes)")
    with safe_open(str(p), framework="pt") as f:
        meta, t = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if "z" not in t or "k" not in meta:
        raise ValueError(f"--init: {p} is not a latents file written by `sgilo solve` (needs tensor 'z' and metadata k)")
    n = len([k for k in t if k.startswith("noise_")])
    if any(f"noise_{i}" not in t for i in range(n)):
        raise ValueError(f"--init: {p} has noise maps with missing indices: {sorted(k for k in t if 'noise' in k)}")
    return Latents(k=int(meta["k"]), z=t["z"], h=t.get("h"), skip=t.get("skip"),
                   noises=tuple(t[f"noise_{i}"] for i in range(n)))


# ----------------------------------------------------------------------------
# The whole `sgilo solve` run on one image; returns the result.json dict.


def solve_image(image: str | Path, make_operator, solver: str, config, out: str | Path, model: str = "default",
                prior: str | None = "default", task: dict | None = None, seed: int = 0,
                lpips_weights: str | Path | None = None, init: str | Path | None = None) -> dict:
    """Load the model and the image (at the generator's resolution), measure it with ``make_operator(image_shape)``,
    solve, score and write DIR/result.json, the PNGs and latents.safetensors.

    ``lpips_weights``: local LPIPS weights (metric, and data term when config.lpips_weight > 0); ``init``: a run
    folder or latents file to continue from."""
    from sgilo.metrics.lpips import LPIPS
    from sgilo.utils.images import load_image, measurement_to_image

    if not Path(image).is_file():
        raise FileNotFoundError(f"image not found: {image}")
    if config.lpips_weight > 0 and lpips_weights is None:
        raise ValueError(f"--lpips-weight {config.lpips_weight} > 0 needs --lpips-weights PATH (local LPIPS-VGG "
                         f"weights, layout in sgilo/metrics/lpips.py); nothing is downloaded")
    lpips = LPIPS(lpips_weights) if lpips_weights is not None else None
    start = load_latents(init) if init is not None else None
    G, fit = load_generator(model)
    if lpips is not None:
        lpips = lpips.to(G.mapping.w_avg.device)
        config = replace(config, perceptual=lpips) if config.lpips_weight > 0 else config
    truth = load_image(image, G.img_resolution)                           # [1, 3, R, R]
    operator = make_operator(tuple(truth.shape[1:]))
    y = operator.measure(truth, generator=torch.Generator().manual_seed(seed))
    mod = SOLVERS[solver][0]
    t0 = time.perf_counter()
    if solver == "sgilo":
        result = mod.solve(y, operator, G, fit, priors=load_priors(prior, len(config.steps)), config=config,
                           init=start)
    else:
        result = mod.solve(y, operator, G, fit, config=config, init=start)
    seconds = time.perf_counter() - t0
    out = Path(out)
    write_outputs(out, result, truth, measurement_to_image(operator, y, tuple(truth.shape[1:])))
    diag = {k: v for k, v in result.diagnostics.items() if k not in ("final_data_term",)}
    diag.setdefault("rhat", None)
    data = result.traces["data"]
    data_term = {"initial": data[0].flatten().tolist() if len(data) else None,
                 "final": torch.tensor(result.diagnostics["final_data_term"]).flatten().tolist()}
    report = {"solver": solver, "seed": seed, "task": task or {}, "model": str(model), "prior": prior,
              "init": None if init is None else str(init), "start_layer": 0 if start is None else start.k,
              "lpips_weights": None if lpips_weights is None else str(lpips_weights), "data_term": data_term,
              "config": config_dict(config), "metrics": score(result, truth, operator, y, lpips), "diagnostics": diag,
              "seconds": seconds, "seconds_per_round": result.seconds_per_round,
              "bundled_model": bundled_available()}
    atomic_write_text(out / "result.json", json.dumps(_clean(report), indent=2) + "\n")
    return report


__all__ = ["SOLVERS", "make_config", "load_priors", "load_latents", "score", "solve_image", "write_outputs"]
