"""Benchmark grid runner: SGILO (Daras et al., ICML 2022) vs ILO (Daras et al., ICML 2021), CSGM (Bora et al., ICML
2017) and the Lasso baselines of the CSGM paper, over (image, task, solver, seed) cells of a held-out split.

* Batched: the images of a task are cut into fixed chunks of `batch` images (one solver call per chunk).
* Reproducible, "a seed per sample": image i's measurement noise comes from its own generator seeded by
  (seed, task, i), and the solvers get one seed per image, `image_seed(seed, task, i)`, so chain c of image i draws from
  the stream (image seed, c) (`sgilo.solvers.rng`). Results are therefore identical for any `--batch`, any number of
  ranks and any restart; `batch` may change between resumes of the same folder.
* Resumable: every finished cell is appended to `parts/rank{r}.jsonl`; a restart skips cells found there or in
  `results.jsonl`. A changed preset, model, prior set or seeding scheme in the same folder is refused.
* Distributed: under `torchrun`, chunk×solver units are dealt round-robin to the ranks; rank 0 waits for every rank's
  done marker (file based, so no collective time-out on long runs), merges into `results.jsonl` and writes the summary.
* Equal budget (``budget``): every generative solver gets K = ``chains`` restarts/chains and the steps that spend the
  same number of generator evaluations per image (`sgilo.bench.budget`); every record carries the measured ``nfe``.
* Three estimates per generative cell (metrics): ``psnr``/``ssim`` of the mean of the K outputs (the ranked estimate;
  for CSGM/ILO the mean of the restarts, not the best one), ``psnr_best``/``ssim_best`` of the output with the lowest
  final data term (CSGM/ILO: measurement loss; SGILO: the chain's data term), ``psnr_sample``/``ssim_sample`` the mean
  over the K single outputs. Coverage and diversity only for posterior samplers (SGILO and its variants): raw
  ``coverage50/90`` with the mean interval width ``width50/90`` (sharpness), and with the interval calibration stored
  with the bundled model (`sgilo.metrics.conformal`, fitted on train/ by `sgilo calibrate --conformal`) also
  ``coverage50_cal/90_cal``, ``width50_cal/90_cal`` and the scales ``scale50/90``.
* SGILO-family records also carry ``h_move`` (per round k ≥ 1: ‖h_k − head_k(z)‖ / ‖head_k(z)‖ at the round's end,
  mean over the image's chains) and ``modes`` (distinct modes among the image's chains).
"""

from __future__ import annotations

import json
import secrets
import time
import zlib
from dataclasses import asdict, dataclass, replace
from typing import Any
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from sgilo.bench.budget import planned_nfe, with_budget
from sgilo.bench.lasso import lasso_solve, tune_lambda
from sgilo.bench.presets import BENCH_SOLVERS, SOLVER_PRESETS, SOLVERS, TASK_GROUPS, TASK_PRESETS, preset_params
from sgilo.bench.tasks import make_operator, task_params
from sgilo.checkpoints import atomic_write_text
from sgilo.metrics.conformal import coverage_records, load_calibration
from sgilo.metrics.quality import image_metrics, psnr, ssim
from sgilo.solvers.registry import get_solver
from sgilo.solvers.rng import row_seed
from sgilo.utils.images import to_uint8

KEY = ("task", "solver", "seed", "image")
FIXED = ("preset", "model", "priors", "split", "solver_configs", "seeding")
SEEDING = "per-image-v1"                 # recorded in config.json: folders made with batch-position seeding are refused


# ----------------------------------------------------------------------------
# What to run.


@dataclass(frozen=True)
class BenchConfig:
    data: str                                         # dataset zip or folder with a test split
    out: str                                          # output folder (results.jsonl, summary.*, figures/)
    split: str = "test"                               # evaluation split (tuning always uses 'train')
    tasks: tuple[str, ...] = TASK_GROUPS["main"]      # task preset names
    solvers: tuple[str, ...] = ("csgm", "ilo", "sgilo")
    n_images: int | None = None                       # None: the preset's number
    seeds: int = 1                                    # seeds 0 … seeds−1
    preset: str = "default"                           # key of SOLVER_PRESETS
    model: str = "default"                            # generator name or path
    priors: tuple[str, ...] = ("default",)            # 'default' (bundled), 'none', or prior paths
    batch: int | None = None                          # images per solver call (None: the preset's)
    budget: int | None = None                         # generator evaluations per image for every generative solver
    chains: int = 3                                   # K restarts (CSGM, ILO) / chains (SGILO) under a budget
    n_show: int = 4                                   # images per task kept for the figures
    figures: bool = True                              # write figures/ (summary.json and summary.md always)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.preset not in SOLVER_PRESETS:
            raise ValueError(f"unknown solver preset {self.preset!r}; expected one of {sorted(SOLVER_PRESETS)}")
        bad = [s for s in self.solvers if s not in SOLVERS]
        if bad or not self.solvers:
            raise ValueError(f"unknown solver(s) {bad or self.solvers!r}; expected a subset of {list(SOLVERS)}")
        bad = [t for t in self.tasks if t not in TASK_PRESETS]
        if bad or not self.tasks:
            raise ValueError(f"unknown task preset(s) {bad or self.tasks!r}; expected names of {sorted(TASK_PRESETS)}")
        for name in ("seeds", "n_images", "batch", "budget", "chains"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        solver_configs(self)                          # a budget too small for a solver: one line before any work


# ----------------------------------------------------------------------------
# A stable 32-bit id of a string (Python's hash() is salted per process).


def stable_id(text: str) -> int:
    return zlib.crc32(text.encode())


# ----------------------------------------------------------------------------
# The config of every bench solver of a run: the preset's, with the equal-budget steps and K when a budget is given.


def solver_configs(cfg: BenchConfig) -> dict[str, Any]:
    preset = SOLVER_PRESETS[cfg.preset]
    out = {}
    for s in cfg.solvers:
        c = preset.config(s)
        out[s] = c if cfg.budget is None or BENCH_SOLVERS[s].base == "lasso" else with_budget(c, cfg.budget, cfg.chains)
    return out


# ----------------------------------------------------------------------------
# The priors a bench solver runs with: the loaded ones, or their Gaussian counterparts (`sgilo-gauss`: the exact
# N(0, I) score for z, a per-feature Gaussian of each h_k prior's normalisation statistics; `sgilo.priors.gaussian`),
# or their Gaussian parts without the network (`sgilo-pca`: a prior's PCA skip, `LatentPrior.gaussian_part`).


def solver_priors(kind: str, priors: dict, cache: dict) -> dict:
    if kind == "learned":
        return priors
    if kind == "none":
        return {}
    if kind not in cache:
        from sgilo.priors.gaussian import gaussian_priors
        if kind == "gauss":
            cache[kind] = gaussian_priors(priors)
        elif kind == "pca":
            cache[kind] = {n: (p.gaussian_part() if hasattr(p, "gaussian_part") else p) for n, p in priors.items()}
        else:
            raise ValueError(f"bench solver priors: expected 'learned', 'gauss', 'pca' or 'none', got {kind!r}")
    return cache[kind]


# ----------------------------------------------------------------------------
# y_i = noise(A x_i) with image i's own generator, so y never depends on the batch it is in.


def measure_images(operator, x: Tensor, seed: int, task: str, indices: list[int]) -> Tensor:
    """Shapes: x [B, C, H, W] → y [B, ...]."""
    ys = []
    for b, i in enumerate(indices):
        g = torch.Generator(device=x.device).manual_seed(row_seed(seed, stable_id(task), i))
        ys.append(operator.measure(x[b:b + 1], generator=g))
    return torch.cat(ys)


# ----------------------------------------------------------------------------
# The solver seed of image i for (bench seed, task): depends on nothing else (not on the chunk or the rank).


def image_seed(seed: int, task: str, i: int) -> int:
    return row_seed(seed, stable_id(f"{task}/solver"), i) % 2**62


# ----------------------------------------------------------------------------
# What one solver call gives the benchmark.


@dataclass
class Outcome:
    x_rank: Tensor                 # [B, C, H, W] the ranked estimate: the mean of the K outputs (Lasso: its output)
    outputs: Tensor | None         # [K, B, C, H, W] every restart's / chain's output (None: Lasso)
    best: Tensor | None            # [B] index of the output with the lowest final data term
    samples: bool                  # outputs are posterior samples (coverage, diversity are reported)
    extras: list[dict]             # per image: nfe, stopped, rhat (samplers), h_move and modes (SGILO), lam (Lasso)


# ----------------------------------------------------------------------------
# Run one bench solver on a chunk.


def run_solver(name: str, y: Tensor, operator, models, config, seed: int, lam: float | None,
               seeds: list[int] | None = None, cache: dict | None = None) -> Outcome:
    """``seed``: the chunk-independent (bench seed, task) seed (Lasso's power iteration, the config's base seed);
    ``seeds``: one solver seed per image of y (the random streams of the generative solvers)."""
    G, fit, priors = models
    B, spec = y.shape[0], BENCH_SOLVERS[name]
    if spec.base == "lasso":
        g = torch.Generator().manual_seed(seed)
        return Outcome(lasso_solve(y, operator, lam, config, generator=g), None, None, False, [{"lam": lam}] * B)
    entry = get_solver(spec.base)
    r = entry.solve(y, operator, G, fit, priors=solver_priors(spec.priors, priors, {} if cache is None else cache),
                    config=replace(config, seed=seed), seeds=seeds)
    outputs = r.outputs.detach()
    best = torch.tensor(r.diagnostics["final_data_term"], device=outputs.device).reshape(outputs.shape[:2]).argmin(0)
    nfe = r.diagnostics.get("nfe", planned_nfe(config))
    extras = [{"stopped": stopped, "nfe": nfe, "nfe_planned": planned_nfe(config), "K": outputs.shape[0]}
              for stopped in stopped_per_image(r.diagnostics, B)]
    rhat = r.diagnostics.get("rhat") or {}
    for b in range(B):
        vals = [v for per in rhat.values() for v in per[b] if np.isfinite(v)]
        if vals:
            extras[b]["rhat"] = max(vals)
    for b, e in enumerate(chain_diagnostics(r.diagnostics, outputs.shape[0], B)):
        extras[b].update(e)
    return Outcome(outputs.mean(0), outputs, best, entry.samples, extras)


# ----------------------------------------------------------------------------
# Per image b: the stop message of the run, for the images whose chains stopped.


def stopped_per_image(diag: dict, B: int) -> list[str | None]:
    """The run's stop message for each of its B images: all of them when the run stopped as a whole, only the images
    of the stopped chains (rows c·B + b of ``diag['stopped_rows']``, SGILO's blow-up guard) when those are given."""
    msg, rows = diag.get("stopped"), diag.get("stopped_rows")
    if msg is None or rows is None:
        return [msg] * B
    hit = {int(r) % B for r in rows}
    return [msg if b in hit else None for b in range(B)]


# ----------------------------------------------------------------------------
# Per image b: h_move of each round k ≥ 1 (mean over its K chains, rows c·B + b of the solver's 'rows') and the
# number of distinct modes among its chains, from the solver's diagnostics (SGILO; absent keys give nothing).


def chain_diagnostics(diag: dict, K: int, B: int) -> list[dict]:
    out: list[dict] = [{} for _ in range(B)]
    for rnd in diag.get("h_move") or []:
        rows = np.asarray(rnd["rows"], dtype=np.float64).reshape(K, B)
        for b in range(B):
            out[b].setdefault("h_move", []).append({"k": rnd["k"], "mean": float(rows[:, b].mean())})
    modes = diag.get("modes")
    if modes is not None:
        for b in range(B):
            out[b]["modes"] = int(modes[b])
    return out


# ----------------------------------------------------------------------------
# Metrics of every image of a chunk: `image_metrics` of the ranked estimate, plus the best-of-K and single-output
# estimates (images clamped to [-1, 1] as `image_metrics` does).


@torch.no_grad()
def cell_metrics(out: Outcome, x: Tensor, y: Tensor, operator, task: str = "",
                 calibration: dict | None = None) -> list[dict]:
    """Shapes: x [B, C, H, W]; y [B, ...]. Returns B dicts of floats. Samplers with K ≥ 2 also get the interval
    widths and, when ``calibration`` holds ``task`` (a task preset name), the calibrated coverage and widths
    (`sgilo.metrics.conformal.coverage_records`)."""
    per = image_metrics(out.x_rank, x, y, operator, samples=out.outputs)
    if out.outputs is None:
        return per
    if out.samples and out.outputs.shape[0] >= 2:
        for m, e in zip(per, coverage_records(out.outputs, x, task, calibration), strict=True):
            m.update(e)
    outs = out.outputs.clamp(-1, 1)
    B = x.shape[0]
    best = outs[out.best, torch.arange(B, device=outs.device)]                       # [B, C, H, W]
    extra = {"psnr_best": psnr(best, x), "ssim_best": ssim(best, x),
             "ssim_sample": torch.stack([ssim(o, x) for o in outs]).mean(0)}
    drop = () if out.samples else ("coverage50", "coverage90", "diversity", "std_mean")   # restarts: no posterior
    return [{**{k: v for k, v in m.items() if k not in drop}, **{k: float(v[b]) for k, v in extra.items()}}
            for b, m in enumerate(per)]


# ----------------------------------------------------------------------------
# config.json's record of the interval calibration applied (None: none ships / another model), with one line when it
# was fitted with other SGILO settings than this run's.


def calibration_info(calibration: dict | None, configs: dict) -> dict | None:
    if calibration is None:
        return None
    from sgilo.app.calibrate import calibration_note
    return {k: calibration.get(k) for k in ("split", "n_images", "bench_preset", "chains")} | {
        "tasks": sorted(calibration.get("tasks", {})),
        "note": calibration_note(calibration, configs["sgilo"]) if "sgilo" in configs else None}


# ----------------------------------------------------------------------------
# Keep the first `n_show` images of each cell group for the figures (uint8 images, fp16 std map).


def save_recon(out: Path, task: str, solver: str, seed: int, i: int, x: Tensor, meas: Tensor, x_hat: Tensor,
               samples: Tensor | None) -> None:
    """Shapes: x, meas, x_hat [C, H, W]; samples [K, C, H, W] or None."""
    arrays = {"truth": to_uint8(x).numpy(), "measurement": to_uint8(meas).numpy(), "x_hat": to_uint8(x_hat).numpy()}
    if samples is not None and samples.shape[0] >= 2:
        arrays["std"] = samples.std(0).cpu().numpy().astype(np.float16)
        arrays["samples"] = to_uint8(samples[:4]).numpy()
    path = out / "recons" / task / f"{solver}_s{seed}_i{i}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


# ----------------------------------------------------------------------------
# Read finished cells from results.jsonl and every rank's part file (later duplicates ignored).


def read_records(out: Path) -> list[dict]:
    files = [out / "results.jsonl"] + sorted((out / "parts").glob("rank*.jsonl"))
    seen: dict[tuple, dict] = {}
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:          # a line cut by a hard kill: that cell is simply redone
                    continue
                seen.setdefault(tuple(rec[k] for k in KEY), rec)
    return list(seen.values())


# ----------------------------------------------------------------------------
# Merge every finished cell into results.jsonl (sorted by task order, solver, seed, image) and drop the part files.


def merge_results(out: Path, task_order: tuple[str, ...]) -> list[dict]:
    order = {t: i for i, t in enumerate(task_order)}
    recs = sorted(read_records(out), key=lambda r: (order.get(r["task"], len(order)), r["task"], r["solver"],
                                                    r["seed"], r["image"]))
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    for f in (out / "parts").glob("rank*.jsonl"):
        f.unlink()
    return recs


# ----------------------------------------------------------------------------
# Every task of a folder (config.json merges the task lists of its runs) that has records: a run on more tasks
# summarises the earlier ones too instead of overwriting the summary with its own tasks only.


def folder_tasks(out: Path, tasks: tuple[str, ...], records: list[dict]) -> tuple[str, ...]:
    path = out / "config.json"
    known = json.loads(path.read_text()).get("tasks", []) if path.is_file() else []
    present = {r["task"] for r in records}
    return tuple(t for t in dict.fromkeys([*known, *tasks]) if t in present or t in tasks)


# ----------------------------------------------------------------------------
# Write config.json, or refuse to resume a folder made with a different fixed configuration.


def check_run_config(out: Path, info: dict, write: bool = True) -> None:
    path = out / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in FIXED if old.get(k) != info.get(k)]
        if diff:
            raise ValueError(f"{out} holds a run with different {', '.join(diff)} (was {[old.get(k) for k in diff]}, "
                             f"now {[info.get(k) for k in diff]}); use another --out")
        info = {**old, **info, "tasks": list(dict.fromkeys(old.get("tasks", []) + info["tasks"]))}
    if write:
        atomic_write_text(path, json.dumps(info, indent=1, default=str))


# ----------------------------------------------------------------------------
# Rank and world size (initialising torch.distributed under torchrun) and a run token shared by all ranks.


def distributed_setup() -> tuple[int, int, str]:
    import torch.distributed as dist

    from sgilo.training.ddp import configure_logging, init_from_env

    rank, world, _ = init_from_env()
    configure_logging(rank)
    token = [secrets.token_hex(8)]
    if world > 1:
        dist.broadcast_object_list(token, src=0)
    return rank, world, token[0]


# ----------------------------------------------------------------------------
# This rank's share of the unfinished units. Sharding after dropping the finished ones keeps the ranks balanced when a
# folder is resumed with some solvers already complete (sharding first gave one rank all of them and the other none).


def pending_units(units: list[tuple], done: set[tuple], rank: int, world: int) -> list[tuple]:
    """units: (task, seed, start, stop, solver); done: the (task, solver, seed, image) keys of finished cells."""
    pending = [u for u in units if any((u[0], u[4], u[1], i) not in done for i in range(u[2], u[3]))]
    return pending[rank::world]


# ----------------------------------------------------------------------------
# Rank 0: wait (no time-out) until every rank has written its done marker for this run.


def wait_for_ranks(parts: Path, world: int, token: str, poll: float = 0.5) -> None:
    while True:
        markers = [parts / f"rank{r}.done" for r in range(world)]
        if all(m.is_file() and m.read_text() == token for m in markers):
            return
        time.sleep(poll)


# ----------------------------------------------------------------------------
# Run the benchmark grid; returns the merged records on rank 0 (None on other ranks).


def run_bench(cfg: BenchConfig, device: torch.device | str, models=None) -> list[dict] | None:
    """`models` = (G, fit, priors) overrides loading `cfg.model` / `cfg.priors` (used by tests)."""
    from sgilo.bench.summary import write_summary
    from sgilo.utils.datasets import load_image_set, to_float

    from sgilo.app.models import load_models

    device = torch.device(device)
    out, preset = Path(cfg.out), SOLVER_PRESETS[cfg.preset]
    rank, world, token = distributed_setup()
    models = models if models is not None else load_models(cfg.model, cfg.priors, device)
    G = models[0]
    res = G.cfg.img_resolution
    n_images, batch = cfg.n_images or preset.n_images, cfg.batch or preset.batch
    x_all = to_float(load_image_set(cfg.data, res, cfg.split, limit=n_images)).to(device)
    shape = tuple(x_all.shape[1:])
    configs = solver_configs(cfg)
    params = {t: task_params(TASK_PRESETS[t].task, shape, 0, **preset_params(t, shape)) for t in cfg.tasks}
    calibration = load_calibration("utkface64") if cfg.model == "default" else None      # once per run
    info = {**asdict(cfg), "batch": batch, "n_images": len(x_all), "world_size": world, "device": str(device),
            "solver_configs": {s: repr(c) for s, c in configs.items()}, "tuning": preset.tuning,
            "solvers_described": {s: BENCH_SOLVERS[s].variables for s in cfg.solvers},
            "nfe_planned": {s: planned_nfe(c) for s, c in configs.items() if BENCH_SOLVERS[s].base != "lasso"},
            "task_params": params, "tasks": list(cfg.tasks), "priors": sorted(models[2]), "seeding": SEEDING,
            "interval_calibration": calibration_info(calibration, configs)}
    out.mkdir(parents=True, exist_ok=True)
    check_run_config(out, info, write=rank == 0)                         # every rank refuses a mismatched folder
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    (parts / f"rank{rank}.done").unlink(missing_ok=True)

    done = {tuple(r[k] for k in KEY) for r in read_records(out)}
    if world > 1:                                   # every rank has read the same records before any rank adds one
        torch.distributed.barrier()
    units = [(t, s, start, min(start + batch, len(x_all)), solver) for t in cfg.tasks for s in range(cfg.seeds)
             for start in range(0, len(x_all), batch) for solver in cfg.solvers]
    todo = pending_units(units, done, rank, world)
    bar = tqdm(total=sum(u[3] - u[2] for u in todo), desc=f"bench rank {rank}", unit="img",
               disable=not cfg.progress or rank != 0)
    cache: dict = {}
    with open(parts / f"rank{rank}.jsonl", "a") as log:
        for task, seed, start, stop, solver in todo:
            log.write(run_unit(cfg, out, task, seed, start, stop, solver, x_all, shape, models, configs[solver],
                               params[task], cache, device, calibration))
            log.flush()
            bar.update(stop - start)
    bar.close()
    (parts / f"rank{rank}.done").write_text(token)
    if rank != 0:
        return None
    wait_for_ranks(parts, world, token)
    records = merge_results(out, cfg.tasks)
    write_summary(out, records, folder_tasks(out, cfg.tasks, records), cfg.solvers, figures=cfg.figures,
                  described={s: BENCH_SOLVERS[s].variables for s in cfg.solvers})
    return records


# ----------------------------------------------------------------------------
# One (task, seed, chunk, solver) unit → JSON lines of its cells.


def run_unit(cfg: BenchConfig, out: Path, task: str, seed: int, start: int, stop: int, solver: str, x_all: Tensor,
             shape: tuple, models, config, params: dict, cache: dict, device: torch.device,
             calibration: dict | None = None) -> str:
    from sgilo.utils.datasets import load_image_set, to_float

    if (task, seed) not in cache:
        op = make_operator(TASK_PRESETS[task].task, shape, seed, **preset_params(task, shape))
        cache[(task, seed)] = op.to(device)
    operator = cache[(task, seed)]
    idx = list(range(start, stop))
    x = x_all[start:stop]
    y = measure_images(operator, x, seed, task, idx)
    lam = None
    if BENCH_SOLVERS[solver].base == "lasso":
        lam = config.lam
        if lam is None and (task, seed, solver) not in cache:                 # λ from train/ images only
            train = to_float(load_image_set(cfg.data, shape[1], "train", limit=config.tune_images)).to(device)
            cache[(task, seed, solver)] = tune_lambda(operator, train, config,
                                                      torch.Generator(device=device).manual_seed(seed))[0]
        lam = cache.get((task, seed, solver), lam)
    t0 = time.perf_counter()
    res = run_solver(solver, y, operator, models, config, row_seed(seed, stable_id(task), 0) % 2**62,
                     lam, [image_seed(seed, task, i) for i in idx], cache)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    metrics = cell_metrics(res, x, y, operator, task, calibration)
    meas = operator.to_image(y, shape)
    lines = []
    for b, i in enumerate(idx):
        if i < cfg.n_show:
            save_recon(out, task, solver, seed, i, x[b], meas[b], res.x_rank[b],
                       res.outputs[:, b] if res.samples else None)
        rec = {"task": task, "solver": solver, "seed": seed, "image": i, "metrics": metrics[b],
               "seconds": seconds / len(idx), "batch_seconds": seconds, "batch": len(idx),
               "n_measurements": int(y[b].numel()), "params": {**params, "seed": seed}, **res.extras[b]}
        lines.append(json.dumps(rec) + "\n")
    return "".join(lines)
