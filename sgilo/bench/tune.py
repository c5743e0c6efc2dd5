"""Hyper-parameter tuning of the generative solvers on `train/` images only (issue rule: never on `test/`).

A grid of solver-config overrides (cartesian product) is run on the first n images of the *train* split, one batch per
grid point, and each point's per-image metrics (PSNR of the output/mean, SSIM, residual; for SGILO also coverage at
50 %/90 %, diversity, R̂) and their means go to ``OUT/tune.jsonl``. Finished points are skipped on restart. The chosen
values are then written into `sgilo.app.presets` (preset `utkface64`), with the grids in docs/tuning.md.

Example (the tuning behind the 'default' SGILO preset):
    sgilo bench-tune --data ../shared/data/utkface64.zip --task inpaint-random --param observed=0.05 --solver sgilo \
        --grid '{"eta": [1e-5, 3e-5], "beta": [1.0, 0.5]}' --n-images 4 --out runs/tune
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from sgilo.bench.budget import with_budget
from sgilo.bench.presets import GENERATIVE, SOLVER_PRESETS
from sgilo.bench.run import cell_metrics, image_seed, measure_images, run_solver
from sgilo.bench.tasks import make_operator
from sgilo.checkpoints import atomic_write_text
from sgilo.solvers.configs import replace_nested

TUNABLE = GENERATIVE


# ----------------------------------------------------------------------------
# Grid points: {"eta": [a, b], "steps": [[100, 100], …]} → [{"eta": a, "steps": (100, 100)}, …] (lists → tuples).


def grid_points(grid: dict[str, list], config) -> list[dict]:
    names = {f.name for f in fields(config)}
    bad = [k for k in grid if k.partition(".")[0] not in names]       # 'a.b': field b of nested option a
    if bad:
        raise ValueError(f"unknown {type(config).__name__} field(s) {bad}; expected some of {sorted(names)}")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ValueError(f"grid entry {k!r}: expected a non-empty list of values, got {v!r}")
    keys = list(grid)
    conv = [[tuple(x) if isinstance(x, list) else x for x in grid[k]] for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*conv)]


def point_key(point: dict) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in sorted(point.items())})


# ----------------------------------------------------------------------------
# Run the grid on train/ images; one JSON line per grid point.


def tune(data: str, task: str, params: dict, solver: str, grid: dict[str, list], out: str | Path, n_images: int = 4,
         preset: str = "default", model: str = "default", priors: tuple[str, ...] = ("default",), seed: int = 0,
         device: str | torch.device = "cpu", models=None, progress: bool = True, budget: int | None = None,
         chains: int = 3) -> list[dict]:
    """Returns one record per grid point: {"point", "metrics": {name: mean}, "per_image": [...], "seconds"}.
    With ``budget``, every grid point runs with K = ``chains`` restarts/chains and the steps that spend ``budget``
    generator evaluations per image (`sgilo.bench.budget.with_budget`, applied after the point's overrides, so a
    ``steps`` entry of the grid sets the proportions of the rounds)."""
    from sgilo.app.models import load_models
    from sgilo.utils.datasets import load_image_set, to_float

    if solver not in TUNABLE:
        raise ValueError(f"solver to tune: expected one of {list(TUNABLE)}, got {solver!r}")
    if preset not in SOLVER_PRESETS:
        raise ValueError(f"unknown solver preset {preset!r}; expected one of {sorted(SOLVER_PRESETS)}")
    device = torch.device(device)
    base = SOLVER_PRESETS[preset].config(solver)
    points = grid_points(grid, base)
    models = models if models is not None else load_models(model, priors, device)
    res = models[0].cfg.img_resolution
    x = to_float(load_image_set(data, res, "train", limit=n_images)).to(device)   # tuning: train split only
    shape = tuple(x.shape[1:])
    op = make_operator(task, shape, seed, **params).to(device)
    idx = list(range(len(x)))
    y = measure_images(op, x, seed, f"tune/{task}", idx)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tune.jsonl"
    head = {"task": task, "params": params, "solver": solver, "preset": preset, "model": model, "n_images": len(x),
            "seed": seed, "split": "train", **({"budget": budget, "chains": chains} if budget is not None else {})}
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if all(rec.get(k) == v for k, v in head.items()):
                done[rec["key"]] = rec
    records = []
    for point in points:
        key = point_key(point)
        if key in done:
            records.append(done[key])
            continue
        cfg = replace_nested(base, point)
        cfg = cfg if budget is None else with_budget(cfg, budget, chains)
        t0 = time.perf_counter()
        res = run_solver(solver, y, op, models, cfg, seed, None, [image_seed(seed, f"tune/{task}", i) for i in idx])
        seconds = time.perf_counter() - t0
        per = cell_metrics(res, x, y, op)
        for p, e in zip(per, res.extras, strict=True):
            p.update({k: v for k, v in e.items() if k in ("rhat", "nfe")})
        names = sorted({k for p in per for k in p})
        means = {k: float(np.mean([p[k] for p in per if k in p])) for k in names}
        rec = {**head, "key": key, "point": json.loads(key), "metrics": means, "per_image": per,
               "seconds": round(seconds, 1)}
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        records.append(rec)
        if progress:
            shown = " ".join(f"{k}={means[k]:.3f}" for k in ("psnr", "ssim", "coverage50", "coverage90", "rhat")
                             if k in means)
            print(f"[tune {solver}] {key}: {shown} ({seconds:.0f} s)", flush=True)
    everything = {**done, **{r["key"]: r for r in records}}                 # all points of this set-up so far
    atomic_write_text(out / "tune_table.md", table(list(everything.values())))
    return records


# ----------------------------------------------------------------------------
# A markdown table of grid points (one row each).


def table(records: list[dict]) -> str:
    if not records:
        return ""
    cols = ["psnr", "psnr_best", "psnr_sample", "ssim", "residual", "coverage50", "coverage90", "diversity", "rhat",
            "nfe"]
    cols = [c for c in cols if any(c in r["metrics"] for r in records)]
    lines = ["| point | " + " | ".join(cols) + " | s |", "|---" * (len(cols) + 2) + "|"]
    for r in records:
        vals = [f"{r['metrics'][c]:.3f}" if c in r["metrics"] else "" for c in cols]
        lines.append(f"| `{r['key']}` | " + " | ".join(vals) + f" | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"
