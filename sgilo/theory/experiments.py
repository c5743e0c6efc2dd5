"""Experiments `field` and `escape` for the theory of Daras et al., "Score-Guided Intermediate Layer Optimization"
(ICML 2022), in the random-generator setting of Hand & Voroninski (COLT 2018), and the `run_theory` entry.

Each experiment is a function of a frozen config that writes ``NAME.json`` and ``NAME.png`` atomically into ``out``
and returns the JSON dict (`sgilo.theory.results.save_result`). `mixing` and `concentration` live in
`sgilo.theory.stationary`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from sgilo.theory.dynamics import run_chains, seed_generators  # noqa: E402
from sgilo.theory.generators import (ReLUGeneratorConfig, expansive_widths, num_measurements,  # noqa: E402
                                     random_directions, sample_problems, with_z_star)
from sgilo.theory.quantities import expected_gradient, rho_d  # noqa: E402
from sgilo.theory.results import save_result  # noqa: E402
from sgilo.theory.stationary import ConcentrationConfig, MixingConfig, run_concentration, run_mixing  # noqa: E402


# ----------------------------------------------------------------------------
# Experiment `field`: empirical ∇f next to the closed-form h_{z*} in k = 2.


@dataclass(frozen=True)
class FieldConfig:
    depth: int = 2                       # d
    widths: tuple[int, ...] = (300, 1500)  # (n_1, n_2): wide, so ∇f ≈ h_{z*}
    m: int = 300                         # measurements
    z_star: tuple[float, float] = (-0.8, 0.6)  # the talk slide's x* = (−4, 3), scaled to norm 1
    extent: float = 1.5                  # grid over [−extent, extent]²
    grid: int = 25                       # grid points per axis
    seed: int = 0


def run_field(cfg: FieldConfig, out: str | Path) -> dict:
    """Grid of −∇f(z) and −h_{z*}(z) for one random generator, with z*, −ρ_d z* and 0 marked."""
    gcfg = ReLUGeneratorConfig(k=2, depth=cfg.depth, widths=cfg.widths, m=cfg.m)
    problem = sample_problems(gcfg, [cfg.seed])
    problem = with_z_star(problem, torch.tensor([cfg.z_star], dtype=torch.float64))
    zs = problem.z_star[0]
    ax = torch.linspace(-cfg.extent, cfg.extent, cfg.grid, dtype=torch.float64)
    Y, X = torch.meshgrid(ax, ax, indexing="ij")
    z = torch.stack([X, Y], -1).reshape(1, -1, 2)  # [1, G², 2]
    _, grad = problem.loss_and_grad(z)
    h = expected_gradient(z, zs, cfg.depth)
    scale = torch.maximum(z.norm(dim=-1), zs.norm()) / 2 ** cfg.depth
    rel = ((grad - h).norm(dim=-1) / scale)[0]
    rho = rho_d(cfg.depth)
    t = torch.linspace(0.0, 1.0, 401, dtype=torch.float64)
    f_ray = problem.loss((-t[:, None] * zs)[None])[0]  # f(−t z*)
    result = {"config": asdict(cfg), "rho_d": rho, "argmin_t_f(-t z*)": float(t[f_ray.argmin()]),
              "rel_err_grad_vs_h": {"mean": float(rel.mean()), "median": float(rel.median()),
                                    "q90": float(rel.quantile(0.9)), "max": float(rel.max())},
              "rel_err_definition": "||grad f(z) - h(z)|| / (max(||z||, ||z*||) / 2^d) over the grid"}
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.3), sharey=True)
    for a, field, title in ((axes[0], grad, "empirical −∇f(z)"), (axes[1], h, "expected −h_{z*}(z) (HV)")):
        U = -field[0, :, 0].reshape(cfg.grid, cfg.grid).numpy()
        V = -field[0, :, 1].reshape(cfg.grid, cfg.grid).numpy()
        a.streamplot(X.numpy(), Y.numpy(), U, V, density=1.1, color=(U ** 2 + V ** 2) ** 0.25, cmap="viridis",
                     linewidth=0.8)
        a.plot(*zs.tolist(), "r*", ms=13, label="z*")
        a.plot(*(-rho * zs).tolist(), "kX", ms=10, label=f"−ρ_d z*  (ρ_{cfg.depth} = {rho:.3f})")
        a.plot(0, 0, "ko", ms=5, mfc="w", label="0")
        a.set_title(title)
        a.set_aspect("equal")
    axes[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(f"d = {cfg.depth}, widths {cfg.widths}, m = {cfg.m}; median rel. error {rel.median():.3f}")
    return save_result(out, "field", result, fig)


# ----------------------------------------------------------------------------
# Experiment `escape`: success rates of GD, GD + negation and Langevin from random and bad starts.


@dataclass(frozen=True)
class EscapeConfig:
    depths: tuple[int, ...] = (2, 3)     # d values
    ks_by_depth: tuple[tuple[int, ...], ...] = ((2, 5, 10), (2, 5))  # latent sizes k for each depth
    min_width: tuple[int, ...] = (64, 48)  # width floor per depth (same order as `depths`); expansion c = 1
    m_factor: float = 25.0               # m = m_factor · k · d
    n_seeds: int = 100                   # independent problems (W, A, z*, starts, noise) per (d, k)
    steps: int = 400                     # iterations T
    eta_scaled: float = 0.5              # η = eta_scaled · 2^d (the Hessian at z* is ≈ I / 2^d)
    radius: float = 0.1                  # Langevin β = 2^d k / radius² (stationary RMS ‖z − z*‖ ≈ radius)
    eps: float = 0.3                     # success: ‖z_T − z*‖ ≤ eps ‖z*‖
    bad_jitter: float = 0.05             # bad starts: −ρ_d z* + bad_jitter · u, u uniform on the sphere
    dtype: str = "float32"               # float32 halves memory traffic; precision is ample here
    seed: int = 0


METHODS = ("gd", "gd_negation", "langevin")
STARTS = ("bad", "random")


# ----------------------------------------------------------------------------
# One (d, k) cell of the escape experiment: 100 problems × (3 methods × 2 starts) chains in one batched run.


def escape_cell(cfg: EscapeConfig, depth: int, k: int, min_width: int) -> dict:
    """Success rates and median final distances for every (method, start) at one (d, k)."""
    gcfg = ReLUGeneratorConfig(k=k, depth=depth, min_width=min_width, m_factor=cfg.m_factor, dtype=cfg.dtype)
    seeds = [cfg.seed * 100_003 + 1000 * depth + 10 * k + i * 7919 for i in range(cfg.n_seeds)]
    problem = sample_problems(gcfg, seeds)
    S, dtype = problem.n_seeds, problem.A.dtype
    gen = torch.Generator().manual_seed(cfg.seed + 17 * k + depth)
    bad = -rho_d(depth) * problem.z_star[:, None, :] + cfg.bad_jitter * random_directions(S, 1, k, gen, dtype)
    radii = 0.2 + 1.8 * torch.rand(S, 1, 1, generator=gen, dtype=torch.float64).to(dtype)
    rand = radii * random_directions(S, 1, k, gen, dtype)
    z0 = torch.cat([bad, rand], 1).repeat(1, len(METHODS), 1)  # [S, 6, k]: method-major, start-minor
    beta = 2 ** depth * k / cfg.radius ** 2
    temp = torch.tensor([0.0, 0.0, 0.0, 0.0, 1 / beta, 1 / beta], dtype=dtype)
    neg = torch.tensor([False, False, True, True, False, False])
    trace = run_chains(problem, z0, eta=cfg.eta_scaled * 2 ** depth, steps=cfg.steps, temperature=temp,
                       negation=neg, generator=seed_generators(seeds, 10 ** 6))
    dist = (trace.z - problem.z_star[:, None, :]).norm(dim=-1) / problem.z_star.norm(dim=-1, keepdim=True)
    cell = {"d": depth, "k": k, "widths": list(expansive_widths(gcfg)), "m": num_measurements(gcfg), "beta": beta}
    for i, (meth, start) in enumerate((mm, s) for mm in METHODS for s in STARTS):
        cell[f"{meth}/{start}"] = {"success": float((dist[:, i] <= cfg.eps).double().mean()),
                                   "median_dist": float(dist[:, i].median())}
    return cell


def run_escape(cfg: EscapeConfig, out: str | Path) -> dict:
    """All (d, k) cells, a JSON table and a grouped bar chart of success rates."""
    if not len(cfg.min_width) == len(cfg.ks_by_depth) == len(cfg.depths):
        raise ValueError(f"min_width, ks_by_depth: expected one entry per depth ({len(cfg.depths)}), "
                         f"got {len(cfg.min_width)} and {len(cfg.ks_by_depth)}")
    t0, cells = time.time(), []
    for depth, ks, mw in zip(cfg.depths, cfg.ks_by_depth, cfg.min_width, strict=True):
        cells += [escape_cell(cfg, depth, k, mw) for k in ks]
    result = {"config": asdict(cfg), "rho_d": {str(d): rho_d(d) for d in cfg.depths}, "cells": cells,
              "seconds": round(time.time() - t0, 1)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    labels = [f"d={c['d']}\nk={c['k']}" for c in cells]
    for ax, start in zip(axes, STARTS, strict=True):
        for j, meth in enumerate(METHODS):
            vals = [c[f"{meth}/{start}"]["success"] for c in cells]
            ax.bar([i + 0.27 * (j - 1) for i in range(len(cells))], vals, width=0.27, label=meth)
        ax.axhline(0.9, color="k", lw=0.6, ls="--")
        ax.set_xticks(range(len(cells)), labels, fontsize=8)
        ax.set_title(f"start: {'near −ρ_d z*' if start == 'bad' else 'random'}")
    axes[0].set_ylabel(f"P(‖z_T − z*‖ ≤ {cfg.eps}‖z*‖) over {cfg.n_seeds} seeds")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"T = {cfg.steps}, η = {cfg.eta_scaled}·2^d, Langevin β = 2^d k / {cfg.radius}²")
    return save_result(out, "escape", result, fig)


# ----------------------------------------------------------------------------
# Fast sizes for `--quick` (CLI smoke runs and tests).


def quick_configs(seed: int = 0) -> dict[str, object]:
    """Small versions of every experiment's config (seconds each)."""
    return {"field": FieldConfig(widths=(64, 256), m=64, grid=13, seed=seed),
            "escape": EscapeConfig(depths=(2,), ks_by_depth=((2,),), min_width=(32,), n_seeds=20, steps=150,
                                   seed=seed),
            "mixing": MixingConfig(ks=(2, 4), radii=(0.3,), n_chains=64, steps=120, ref_steps=150, seed=seed),
            "concentration": ConcentrationConfig(betas=(30.0, 300.0, 3000.0), n_seeds=1, n_chains=32,
                                                 burn_in=60, steps=60, seed=seed)}


# ----------------------------------------------------------------------------
# Entry point of `sgilo theory NAME --out DIR`.


def run_theory(name: str, out: str | Path, quick: bool = False, seed: int = 0) -> dict[str, dict]:
    """Run one experiment (or ``all``) with the paper-scale or ``quick`` configs; returns {name: result}."""
    runners = {"field": run_field, "escape": run_escape, "mixing": run_mixing, "concentration": run_concentration}
    full = {"field": FieldConfig(), "escape": EscapeConfig(), "mixing": MixingConfig(),
            "concentration": ConcentrationConfig()}
    names = list(runners) if name == "all" else [name]
    if any(n not in runners for n in names):
        raise ValueError(f"experiment: expected one of {sorted(runners)} or 'all', got {name!r}")
    configs = quick_configs(seed) if quick else {n: replace(c, seed=seed) for n, c in full.items()}
    results = {}
    for n in names:
        t0 = time.time()
        results[n] = runners[n](configs[n], out)
        results[n]["wall_seconds"] = round(time.time() - t0, 1)
    return results
