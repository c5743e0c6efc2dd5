"""Experiments `mixing` and `concentration`: how fast Langevin reaches its stationary law ∝ exp(−β f) and how that law
concentrates around z*, for random ReLU generators (Daras et al., "Score-Guided Intermediate Layer Optimization",
ICML 2022, theory section; setting of Hand & Voroninski, COLT 2018).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from sgilo.theory.dynamics import run_chains, seed_generators  # noqa: E402
from sgilo.theory.generators import (ReLUGeneratorConfig, expansive_widths, num_measurements,  # noqa: E402
                                     random_directions, sample_problems)
from sgilo.theory.quantities import quadratic_msd, rho_d, w1_empirical  # noqa: E402
from sgilo.theory.results import save_result  # noqa: E402


# ----------------------------------------------------------------------------
# Experiment `mixing`: W1 between the chains' law at step t and the stationary law, and steps to tolerance vs k.


@dataclass(frozen=True)
class MixingConfig:
    depth: int = 2                       # d
    ks: tuple[int, ...] = (2, 5, 10, 20, 50)  # latent sizes k
    min_width: int = 64                  # width floor; expansion c = 1
    m_factor: float = 4.0                # m = m_factor · k · d
    n_seeds: int = 2                     # problems per k (W1 is computed per problem, then averaged)
    n_chains: int = 128                  # chains per problem started from spread-out points
    steps: int = 300                     # horizon of the measured chains
    ref_steps: int = 400                 # long reference chains (started at z*) ...
    ref_snapshots: int = 4               # ... pooled over this many snapshots in their second half
    record_every: int = 5                # W1 evaluated every this many steps
    eta_scaled: float = 0.5              # η = eta_scaled · 2^d
    radii: tuple[float, ...] = (0.3, 0.1)  # β = 2^d k / radius² (stationary RMS ‖z − z*‖ ≈ radius), one run each
    tol: float = 0.2                     # mixed when W1 ≤ tol · (reference mean of the statistic)
    dtype: str = "float32"
    seed: int = 0


def mixing_starts(problem, n: int, generator: torch.Generator):
    """Spread-out starts [S, n, k]: a quarter each near −ρ_d z*, and at radii 0.25, 1 and 2 in random directions."""
    S, k, dtype = problem.n_seeds, problem.k, problem.A.dtype
    u = random_directions(S, n, k, generator, dtype)
    radius = torch.tensor([0.0, 0.25, 1.0, 2.0], dtype=dtype).repeat_interleave(math.ceil(n / 4))[:n]
    z0 = radius[None, :, None] * u
    bad = torch.arange(n) < math.ceil(n / 4)
    z0[:, bad] = -rho_d(problem.depth) * problem.z_star[:, None, :] + 0.05 * u[:, bad]
    return z0


# ----------------------------------------------------------------------------
# W1 curves and first step below tolerance for one k.


def mixing_cell(cfg: MixingConfig, k: int, radius: float) -> dict:
    """Run measured and reference chains for one (k, radius); return W1 curves (dist, f) and steps to tolerance."""
    gcfg = ReLUGeneratorConfig(k=k, depth=cfg.depth, min_width=cfg.min_width, m_factor=cfg.m_factor, dtype=cfg.dtype)
    seeds = [cfg.seed * 100_003 + 50_000 + 10 * k + i for i in range(cfg.n_seeds)]
    problem = sample_problems(gcfg, seeds)
    gen = torch.Generator().manual_seed(cfg.seed + 31 * k)
    eta, beta = cfg.eta_scaled * 2 ** cfg.depth, 2 ** cfg.depth * k / radius ** 2
    z0 = mixing_starts(problem, cfg.n_chains, gen)
    zr = problem.z_star[:, None, :].expand(-1, cfg.n_chains, -1)  # reference chains start at z*
    trace = run_chains(problem, torch.cat([z0, zr], 1), eta=eta, steps=max(cfg.steps, cfg.ref_steps),
                       temperature=1 / beta, record_every=cfg.record_every, generator=seed_generators(seeds, 10 ** 6))
    C, steps = cfg.n_chains, trace.steps
    snap = torch.linspace(cfg.ref_steps / 2, cfg.ref_steps, cfg.ref_snapshots).round()
    idx = [int(torch.argmin((steps - s).abs())) for s in snap]
    cell = {"k": k, "radius": radius, "widths": list(expansive_widths(gcfg)), "m": num_measurements(gcfg), "beta": beta, "eta": eta}
    keep = steps <= cfg.steps
    cell["t"] = steps[keep].tolist()
    for stat, rec in (("dist", trace.dist), ("f", trace.loss)):
        ref = torch.cat([rec[i, :, C:] for i in idx], -1).double()  # [S, snapshots · C]
        w1 = w1_empirical(rec[keep][:, :, :C].double(), ref[None]).mean(-1)  # [T], averaged over problems
        scale = float(ref.mean())
        below = (w1 <= cfg.tol * scale).nonzero()
        cell[stat] = {"w1": w1.tolist(), "ref_mean": scale,
                      "steps_to_tol": int(cell["t"][int(below[0])]) if len(below) else None,
                      "w1_final_rel": float(w1[-1]) / scale}
    return cell


def fit_slope(ks: list[int], steps: list[int | None]) -> float | None:
    """Least-squares slope of log(steps) against log(k) over the k's that reached the tolerance."""
    pts = [(math.log(k), math.log(s)) for k, s in zip(ks, steps, strict=True) if s]
    return float(np.polyfit(*zip(*pts, strict=True), 1)[0]) if len(pts) >= 2 else None


def run_mixing(cfg: MixingConfig, out: str | Path) -> dict:
    """All (radius, k): W1-vs-t curves (left, middle) and log-log steps-to-tolerance vs k with fitted slopes (right)."""
    t0 = time.time()
    cells = [mixing_cell(cfg, k, r) for r in cfg.radii for k in cfg.ks]
    slopes = {f"radius={r}/{s}": fit_slope(list(cfg.ks), [c[s]["steps_to_tol"] for c in cells if c["radius"] == r])
              for r in cfg.radii for s in ("dist", "f")}
    result = {"config": asdict(cfg), "cells": cells, "loglog_slope": slopes, "seconds": round(time.time() - t0, 1)}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(cfg.ks)))
    styles = ["-", "--", ":", "-."]
    for ax, stat, name in ((axes[0], "dist", "‖z − z*‖"), (axes[1], "f", "f(z)")):
        for c in cells:
            ax.semilogy(c["t"], np.array(c[stat]["w1"]) / c[stat]["ref_mean"], styles[cfg.radii.index(c["radius"]) % 4],
                        color=colors[cfg.ks.index(c["k"])], lw=1, label=f"k={c['k']}, r={c['radius']}")
        ax.axhline(cfg.tol, color="k", lw=0.6)
        ax.set_xlabel("step t")
        ax.set_title(f"W1(law of {name} at t, stationary) / stationary mean", fontsize=9)
    axes[0].legend(fontsize=6, ncol=2)
    for i, r in enumerate(cfg.radii):
        for stat, mk in (("dist", "o"), ("f", "s")):
            pts = [(c["k"], c[stat]["steps_to_tol"]) for c in cells if c["radius"] == r and c[stat]["steps_to_tol"]]
            slope = slopes[f"radius={r}/{stat}"]
            if pts:
                axes[2].loglog(*zip(*pts, strict=True), mk + styles[i % 4], ms=4,
                               label=f"r={r}, W1 on {stat}: slope " + ("n/a" if slope is None else f"{slope:.2f}"))
    axes[2].set_xlabel("k")
    axes[2].set_ylabel(f"steps until W1 ≤ {cfg.tol} × stationary mean")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"d = {cfg.depth}, {cfg.n_chains} chains × {cfg.n_seeds} problems per k, β = 2^d k / r²; "
                 "missing points: tolerance not reached within the horizon", fontsize=9)
    return save_result(out, "mixing", result, fig)


# ----------------------------------------------------------------------------
# Experiment `concentration`: stationary E‖z − z*‖² against β and the local quadratic model.


@dataclass(frozen=True)
class ConcentrationConfig:
    depth: int = 2                       # d
    k: int = 5                           # latent size
    min_width: int = 64                  # width floor; expansion c = 1
    m_factor: float = 10.0               # m = m_factor · k · d
    betas: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)  # inverse temperatures
    n_seeds: int = 3                     # problems
    n_chains: int = 64                   # chains per (problem, β), started at z*
    burn_in: int = 200                   # steps discarded
    steps: int = 300                     # steps averaged (every 10th)
    eta_scaled: float = 0.5              # η = eta_scaled · 2^d
    dtype: str = "float64"
    seed: int = 0


def run_concentration(cfg: ConcentrationConfig, out: str | Path) -> dict:
    """Measured stationary E‖z − z*‖² per β vs tr[H^{−1}(I − ηH/2)^{−1}]/β (H = exact Hessian at z*)."""
    t0 = time.time()
    gcfg = ReLUGeneratorConfig(k=cfg.k, depth=cfg.depth, min_width=cfg.min_width, m_factor=cfg.m_factor,
                               dtype=cfg.dtype)
    seeds = [cfg.seed * 100_003 + 90_000 + i for i in range(cfg.n_seeds)]
    problem = sample_problems(gcfg, seeds)
    eta, nb, C = cfg.eta_scaled * 2 ** cfg.depth, len(cfg.betas), cfg.n_chains
    betas = torch.tensor(cfg.betas, dtype=problem.A.dtype)
    z0 = problem.z_star[:, None, :].expand(-1, nb * C, -1)
    trace = run_chains(problem, z0, eta=eta, steps=cfg.burn_in + cfg.steps,
                       temperature=(1 / betas).repeat_interleave(C), record_every=10,
                       generator=seed_generators(seeds, 10 ** 6))
    sq = trace.dist[trace.steps >= cfg.burn_in].double().square()  # [T, S, nb·C]
    msd = sq.reshape(sq.shape[0], cfg.n_seeds, nb, C).mean(dim=(0, 1, 3))  # [nb]
    H = problem.hessian_at_star().double()
    pred = torch.stack([quadratic_msd(H, float(b), eta).mean() for b in betas])  # ULA-corrected
    pred_ct = torch.stack([quadratic_msd(H, float(b), 0.0).mean() for b in betas])  # η → 0
    slope = float(np.polyfit(np.log(cfg.betas), np.log(msd.numpy()), 1)[0])
    large = [i for i, b in enumerate(cfg.betas) if b >= 1e3]
    slope_large = float(np.polyfit(np.log([cfg.betas[i] for i in large]), np.log(msd[large].numpy()), 1)[0]) \
        if len(large) >= 2 else None
    result = {"config": asdict(cfg), "widths": list(expansive_widths(gcfg)), "m": num_measurements(gcfg),
              "eta": eta, "beta": list(cfg.betas), "msd_measured": msd.tolist(), "msd_quadratic_ula": pred.tolist(),
              "msd_quadratic_continuous": pred_ct.tolist(), "ratio_measured_over_ula": (msd / pred).tolist(),
              "loglog_slope_all": slope, "loglog_slope_beta_ge_1e3": slope_large, "slope_quadratic_model": -1.0,
              "seconds": round(time.time() - t0, 1)}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(cfg.betas, msd.numpy(), "o-", label=f"measured (slope {slope:.2f})")
    ax.loglog(cfg.betas, pred.numpy(), "k--", label="quadratic model, ULA-corrected (slope −1)")
    ax.loglog(cfg.betas, pred_ct.numpy(), "k:", label="quadratic model, η → 0")
    ax.axhline((1 + rho_d(cfg.depth)) ** 2, color="r", lw=0.6, label="‖−ρ_d z* − z*‖²")
    ax.set_xlabel("β")
    ax.set_ylabel("stationary E‖z − z*‖²")
    ax.set_title(f"d = {cfg.depth}, k = {cfg.k}, widths {result['widths']}, m = {result['m']}", fontsize=9)
    ax.legend(fontsize=7)
    return save_result(out, "concentration", result, fig)
