"""`sgilo bench-speed`: the cost of one SGILO Langevin step (Daras et al., ICML 2022, Eq. 5) against what the hardware
can do, measured in the same run.

For batch sizes B and chain counts K (N = K·B rows) one step of round k (z, h_k and the trainable noise maps) — the
solver's own `sgilo.solvers.sgilo.sgilo_step`, with its per-variable steps, penalties and projection — is timed
in three parts — generator (tail forward + backward to the leaves), score network (all prior scores), everything else
(update, projection, bookkeeping) — in fp32 and under bf16 autocast. Achieved FLOP/s uses the FLOPs counted by
`torch.utils.flop_counter` for one step (convolutions, matmuls, attention) and is compared with the practical peak: the
best throughput of a plain 3×3 convolution microbenchmark at a few shapes, fp32 and bf16, timed in this run. A naive
step written as the original code does (generator weights not frozen, so weight gradients are computed; the score
wrappers and the sampler's random streams re-created every step; docs/original-code.md#bug-18) gives the ratio
naive/ours.

CPU timings are only meaningful on cores nobody else uses: when other processes keep the cores busy, the OpenMP
threads of every operator wait for each other at each barrier and a step can take 50× longer (measured: the bundled
model at B = K = 1 on 2 busy cores, 3.6 s/step with 2 threads for fp32 and bf16 alike, 0.05 s with 1 thread).
`machine_load` records the 1-minute load average before the run; speed.md says when the run was oversubscribed.
``threads`` sets torch's intra-op threads for the run (None: leave them).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sgilo.checkpoints import atomic_write_text
from sgilo.solvers.rounds import native_bf16, resolve_precision

log = logging.getLogger("sgilo.bench")
BUNDLED_ARCH = dict(img_resolution=64, channel_base=2048, channel_max=128, z_dim=256, w_dim=256, mapping_layers=4)


# ----------------------------------------------------------------------------
# What to time.


@dataclass(frozen=True)
class SpeedConfig:
    batches: tuple[int, ...] = (1, 8, 32)          # images B
    chains: tuple[int, ...] = (1, 4, 16)           # chains K
    dtypes: tuple[str, ...] = ("fp32", "bf16")     # fp32, bf16 autocast
    steps: int = 5                                 # timed steps per setting (median reported)
    warmup: int = 2                                # untimed steps first
    round_k: int = 1                               # SGILO round timed (z, h_k, noise maps of block k)
    naive: bool = True                             # also time the reference-style step (fp32)
    conv_shapes: tuple[tuple[int, int, int], ...] = ((32, 128, 8), (32, 128, 16), (16, 128, 32), (16, 64, 64))
    emulated_bf16_rows: int = 4                    # without native bf16: time bf16 only where B·K ≤ this, 1 step
    curvature: bool = True                         # also time one curvature step-control estimate (fp32)
    seed: int = 0
    threads: int | None = None                     # torch intra-op threads for the run (None: torch's setting)


QUICK = SpeedConfig(batches=(1, 8), chains=(1, 4), steps=2, warmup=1, conv_shapes=((32, 128, 8), (16, 128, 16)))


# ----------------------------------------------------------------------------
# Wait for queued device work so wall-clock times are honest.


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------
# Autocast context for 'bf16', nothing for 'fp32'.


def precision(dtype: str, device: torch.device):
    from sgilo.solvers.rounds import autocast_for
    return autocast_for(dtype, device.type)


# ----------------------------------------------------------------------------
# An untrained prior of the right shape (the cost of a score evaluation does not depend on the weights).


def random_prior(shape: tuple[int, ...], layer: int, device: torch.device):
    from sgilo.priors import VPSDE, LatentPrior, LatentScaler, LatentScoreNet, ScoreNetConfig

    net = LatentScoreNet(ScoreNetConfig(kind="z" if layer == 0 else "h", latent_shape=shape))
    prior = LatentPrior(net, VPSDE(), LatentScaler(shape), layer=layer)
    return prior.eval().requires_grad_(False).to(device)


# ----------------------------------------------------------------------------
# The bundled generator and priors when present, else random ones of the bundled architecture (said in `source`).


def speed_models(device: torch.device, round_k: int, seed: int = 0):
    from sgilo.generator import (Generator, GeneratorConfig, bundled_available, fit_gaussianized_w, h_shape,
                                 load_generator)
    from sgilo.priors.io import load_prior

    if bundled_available():
        G, fit = load_generator("default", device=device)
        source = "bundled generator 'default'"
    else:
        torch.manual_seed(seed)
        G = Generator(GeneratorConfig(**BUNDLED_ARCH)).freeze().to(device)
        fit = None
        source = "random weights of the bundled architecture (the bundled generator is not in this checkout)"
    if fit is None:
        fit = fit_gaussianized_w(G.mapping, 10_000, generator=torch.Generator(device=device).manual_seed(seed))
    priors, notes = {}, []
    for name, shape, layer in (("z", (G.synthesis.num_ws, G.synthesis.w_dim), 0),
                               (f"h{round_k}", h_shape(G.synthesis, round_k), round_k)):
        try:
            priors[name] = load_prior(name, device=device)
            notes.append(f"{name}: bundled")
        except FileNotFoundError:
            if name == "z":                                               # as the solver: the exact N(0, I) score
                notes.append("z: the exact N(0, I) score -z (no bundled z prior, as in the solver)")
                continue
            priors[name] = random_prior(tuple(shape), layer, device)
            notes.append(f"{name}: random weights (no bundled prior)")
    return G, fit, priors, source, notes


# ----------------------------------------------------------------------------
# A round-k iterate for B images × K chains on a 5% random-inpainting problem, the generator tail in `dtype`.


def setup_round(G, fit, B: int, K: int, k: int, device: torch.device, seed: int, dtype: str = "fp32"):
    from sgilo.operators.inpainting import Inpainting
    from sgilo.solvers.rounds import Constraints, begin_round, init_iterate, make_problem
    from sgilo.solvers.sgilo import SGILOConfig

    res = G.cfg.img_resolution
    op = Inpainting.random((res, res), 0.05, seed).to(device)
    x = torch.rand([B, G.cfg.img_channels, res, res], generator=torch.Generator().manual_seed(seed)).to(device) * 2 - 1
    c = SGILOConfig(chains=K, steps=(1,) * (k + 1), seed=seed, precision=dtype)
    problem = make_problem(op.A(x), op, G, fit, K, seed, c.sigma_min, None, False, precision=dtype)
    it = begin_round(problem, init_iterate(problem), k, c.noise_lookahead, c.carry_skip)
    return problem, it, c, Constraints.at(it, c.project)


# ----------------------------------------------------------------------------
# One step of the solver itself (`sgilo.solvers.sgilo.sgilo_step`: η_v per variable, penalties, Π), timed in parts.


def timed_step(problem, it, c, priors, cons, device: torch.device) -> tuple[float, float, float]:
    """Seconds of (generator forward + backward, prior scores, update + projection) of one `sgilo_step`."""
    from sgilo.solvers.rounds import geocross_penalty
    from sgilo.solvers.sgilo import sgilo_step, step_sizes

    marks: list[float] = []

    def timer(part: str) -> None:
        sync(device)
        marks.append(time.perf_counter())

    sync(device)
    t0 = time.perf_counter()
    sgilo_step(problem, it, step_sizes(it, c), priors, c, penalty=geocross_penalty(problem, c.geocross_weight),
               constraints=cons, timer=timer)
    return marks[0] - t0, marks[1] - marks[0], marks[2] - marks[1]


# ----------------------------------------------------------------------------
# The reference-style step: unfrozen generator (weight gradients), score wrappers and random streams re-created.


def naive_step(problem, it, c, priors, G_train, device: torch.device) -> float:
    from sgilo.priors import LatentPrior
    from sgilo.solvers.langevin import langevin_step
    from sgilo.solvers.rng import StackedGenerator
    from sgilo.solvers.rounds import active_rows, render
    from sgilo.solvers.sgilo import variable_scores

    sync(device)
    t0 = time.perf_counter()
    fresh = {n: LatentPrior(p.net, type(p.sde)(**p.sde.to_dict()), p.scaler, p.layer, gaussian_skip=p.gaussian_skip,
                            structured=p.structured, kind=p.kind)
             for n, p in priors.items()}
    gens = StackedGenerator(problem.gens.seed, problem.chains, problem.batch, device)
    prob = replace(problem, synthesis=G_train.synthesis, gens=gens)
    f = prob.fidelity(render(prob, it))
    f.sum().backward()                                                    # grads of every generator weight too
    scores = variable_scores(it, fresh, c.t_h)
    with torch.no_grad():
        for n, p in it.params().items():
            p.copy_(langevin_step(p.detach(), p.grad, scores[n], c.eta, c.lam, c.beta, gens,
                                  mask=active_rows(prob.synthesis, it.k, it.z) if n == "z" else None))
            p.grad = None
    G_train.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------
# FLOPs of one step's generator part and score part (counted once per setting, fp32).


def count_flops(problem, it, c, priors) -> tuple[int, int]:
    from sgilo.solvers.rounds import render
    from sgilo.solvers.sgilo import variable_scores

    with FlopCounterMode(display=False) as gen_counter:
        problem.fidelity(render(problem, it)).sum().backward()        # (autograd.grad on leaves breaks the counter)
    for p in it.params().values():
        p.grad = None
    with FlopCounterMode(display=False) as score_counter:
        variable_scores(it, priors, c.t_h)
    return int(gen_counter.get_total_flops()), int(score_counter.get_total_flops())


# ----------------------------------------------------------------------------
# Practical peak: best FLOP/s of a plain 3×3 convolution (2·N·C²·9·R² FLOPs) at the given (N, C, R) shapes.


def conv_peak(shapes, dtype: str, device: torch.device, reps: int = 3) -> dict:
    best = {"flops_per_s": 0.0, "shape": None}
    for N, C, R in shapes:
        x = torch.randn(N, C, R, R, device=device)
        w = torch.randn(C, C, 3, 3, device=device)
        flops = 2 * N * C * C * 9 * R * R
        with precision(dtype, device):
            F.conv2d(x, w, padding=1)
            times = []
            for _ in range(reps):
                sync(device)
                t0 = time.perf_counter()
                F.conv2d(x, w, padding=1)
                sync(device)
                times.append(time.perf_counter() - t0)
        rate = flops / min(times)
        if rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "shape": [N, C, R]}
    return best


# ----------------------------------------------------------------------------
# Seconds of one curvature step-control estimate at the round start (`sgilo.solvers.sgilo.curvature_control`).


def curvature_seconds(problem, it, c, priors, device: torch.device) -> float:
    from sgilo.solvers.sgilo import CurvatureControl, curvature_control, step_sizes

    sync(device)
    t0 = time.perf_counter()
    curvature_control(problem, it, step_sizes(it, c), replace(c, curvature=c.curvature or CurvatureControl()), priors)
    sync(device)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------
# Time one (B, K, dtype) setting: median seconds of each part, FLOP/s, and the naive ratio (fp32 only).


def time_setting(models, B: int, K: int, dtype: str, cfg: SpeedConfig, device: torch.device, G_train) -> dict:
    """Without native bf16 (`sgilo.solvers.rounds.native_bf16`) bf16 autocast is emulated and tens of times slower:
    such settings get 1 warm-up and 1 timed step (`run_speed` keeps only the small ones)."""
    G, fit, priors = models
    if dtype == "bf16" and not native_bf16(device):
        cfg = replace(cfg, warmup=1, steps=1)
    problem, it, c, cons = setup_round(G, fit, B, K, cfg.round_k, device, cfg.seed, dtype)
    parts = []
    for i in range(cfg.warmup + cfg.steps):
        t = timed_step(problem, it, c, priors, cons, device)
        if i >= cfg.warmup:
            parts.append(t)
    gen, score, other = (statistics.median(p[j] for p in parts) for j in range(3))
    total = gen + score + other
    flops_gen, flops_score = count_flops(problem, it, c, priors)
    row = {"batch": B, "chains": K, "rows": B * K, "dtype": dtype, "seconds_per_step": total, "generator_s": gen,
           "score_s": score, "other_s": other, "generator_score_share": (gen + score) / total,
           "flops_per_step": flops_gen + flops_score, "achieved_flops_per_s": (flops_gen + flops_score) / total}
    if cfg.curvature and dtype == "fp32":
        row["curvature_s"] = curvature_seconds(problem, it, c, priors, device)
        row["curvature_over_step"] = row["curvature_s"] / total
    if cfg.naive and dtype == "fp32":
        naive = [naive_step(problem, it, c, priors, G_train, device) for _ in range(cfg.warmup + cfg.steps)]
        row["naive_seconds_per_step"] = statistics.median(naive[cfg.warmup:])
        row["naive_over_ours"] = row["naive_seconds_per_step"] / total
    return row


# ----------------------------------------------------------------------------
# The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows.


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------
# Is the CPU shared? 1-minute load average (other processes, taken before our timing) against the usable CPUs.


def machine_load(threads: int) -> dict:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    busy = load is not None and load + threads > cpus + 0.5
    return {"cpus": cpus, "load1": load, "threads": threads, "oversubscribed": busy}


def load_line(m: dict) -> str:
    head = (f"the CPU was busy during bench-speed (1-min load {m['load1']:.1f} from other processes on {m['cpus']} "
            f"CPUs, {m['threads']} thread{'s' if m['threads'] > 1 else ''}): ")
    if m["threads"] > 1:
        return head + ("the threads wait for each other and every time here is inflated, up to 50×; rerun on an idle "
                       "machine or with OMP_NUM_THREADS=1")
    return head + "the times include waiting for the CPU; rerun on an idle machine for exact numbers"


# ----------------------------------------------------------------------------
# Run the whole grid; writes speed.json and speed.md under `out` and returns the report.


def run_speed(cfg: SpeedConfig, out: str | Path, device: torch.device | str, models=None) -> dict:
    """`models` = (G, fit, priors with 'z' and f'h{round_k}') replaces the bundled/random models (tests)."""
    device = torch.device(device)
    if cfg.threads is not None and (not isinstance(cfg.threads, int) or cfg.threads < 1):
        raise ValueError(f"bench-speed threads: expected an integer >= 1, got {cfg.threads!r}")
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_speed(cfg, out, device, models)
    finally:
        torch.set_num_threads(threads_before)


def _run_speed(cfg: SpeedConfig, out: str | Path, device: torch.device, models) -> dict:
    import copy

    load = machine_load(torch.get_num_threads()) if device.type == "cpu" else None
    if load and load["oversubscribed"]:
        log.warning(load_line(load))
    if models is None:
        G, fit, priors, source, notes = speed_models(device, cfg.round_k, cfg.seed)
    else:
        (G, fit, priors), source, notes = models, "given by the caller", []
    G_train = copy.deepcopy(G).requires_grad_(True) if cfg.naive else None
    native = native_bf16(device)
    peak = {d: conv_peak(cfg.conv_shapes, d, device) for d in cfg.dtypes}
    grid = [(B, K, d) for B in cfg.batches for K in cfg.chains for d in cfg.dtypes
            if native or d != "bf16" or B * K <= cfg.emulated_bf16_rows]
    rows = [time_setting((G, fit, priors), B, K, d, cfg, device, G_train) for B, K, d in grid]
    best_peak = max(p["flops_per_s"] for p in peak.values())
    for r in rows:
        r["fraction_of_peak"] = r["achieved_flops_per_s"] / best_peak
        r["fraction_of_same_dtype_peak"] = r["achieved_flops_per_s"] / peak[r["dtype"]]["flops_per_s"]
    report = {"device": str(device), "cpu": cpu_name(), "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native,
              "auto_precision": resolve_precision("auto", device),
              "threads": torch.get_num_threads(), "machine_load": load, "generator": source,
              "generator_config": G.cfg.to_dict(),
              "priors": notes, "round_k": cfg.round_k, "config": asdict(cfg), "peak": peak, "rows": rows,
              "headline": headline(rows)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "speed.json", json.dumps(report, indent=1))
    atomic_write_text(out / "speed.md", speed_markdown(report))
    return report


# ----------------------------------------------------------------------------
# Headline numbers: smallest generator+score share, bf16 speed-up and naive/ours ratio (medians over settings).


def headline(rows: list[dict]) -> dict:
    by = {(r["batch"], r["chains"], r["dtype"]): r for r in rows}
    speedups = [by[(b, k, "fp32")]["seconds_per_step"] / r["seconds_per_step"]
                for (b, k, d), r in by.items() if d == "bf16" and (b, k, "fp32") in by]
    naive = [r["naive_over_ours"] for r in rows if "naive_over_ours" in r]
    curv = [r["curvature_over_step"] for r in rows if "curvature_over_step" in r]
    med = (lambda v: statistics.median(v) if v else math.nan)
    return {"min_generator_score_share": min(r["generator_score_share"] for r in rows),
            "median_bf16_speedup": med(speedups), "min_bf16_speedup": min(speedups) if speedups else math.nan,
            "max_bf16_speedup": max(speedups) if speedups else math.nan,
            "median_naive_over_ours": med(naive), "median_curvature_over_step": med(curv)}


# ----------------------------------------------------------------------------
# speed.md: setting, split, share, FLOP/s against the measured peak, naive ratio.


def speed_markdown(rep: dict) -> str:
    h = rep["headline"]
    bf16 = ("native" if rep["native_bf16"] else "emulated (no AMX / AVX-512 BF16 / CUDA): bf16 timed only at "
            f"B·K ≤ {rep['config']['emulated_bf16_rows']}, 1 step")
    lines = [f"Device: {rep['device']} ({rep['cpu']}, {rep['cpu_capability']}, {rep['threads']} threads, torch "
             f"{rep['torch']}). bf16: {bf16}; `precision='auto'` uses {rep['auto_precision']} here. "
             f"Generator: {rep['generator']}. Priors: {', '.join(rep['priors']) or '–'}. Round k = {rep['round_k']}.",
             *(["", f"**Warning: {load_line(rep['machine_load'])}.**"]
               if (rep.get("machine_load") or {}).get("oversubscribed") else []),
             "", "Practical peak (best 3×3 conv): " + ", ".join(
                 f"{d} {p['flops_per_s'] / 1e9:.1f} GFLOP/s at [N, C, R] = {p['shape']}"
                 for d, p in rep["peak"].items()),
             "", f"Headline: generator+score share ≥ {h['min_generator_score_share']:.1%}; bf16/fp32 speed-up median "
             f"{h['median_bf16_speedup']:.2f}× (min {h['min_bf16_speedup']:.2f}×, max {h['max_bf16_speedup']:.2f}×); "
             f"naive/ours median {h['median_naive_over_ours']:.2f}×; one curvature estimate (once per round) costs "
             f"{h['median_curvature_over_step']:.1f} steps (median).", "",
             "| B | K | dtype | s/step | generator | score | other | G+score share | GFLOP/s | % of peak "
             "| naive/ours | curvature/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        naive = f"{r['naive_over_ours']:.2f}" if "naive_over_ours" in r else "–"
        curv = f"{r['curvature_over_step']:.1f}" if "curvature_over_step" in r else "–"
        lines.append(f"| {r['batch']} | {r['chains']} | {r['dtype']} | {r['seconds_per_step']:.4f} | "
                     f"{r['generator_s']:.4f} | {r['score_s']:.4f} | {r['other_s']:.4f} | "
                     f"{r['generator_score_share']:.1%} | {r['achieved_flops_per_s'] / 1e9:.2f} | "
                     f"{r['fraction_of_peak']:.1%} | {naive} | {curv} |")
    return "\n".join(lines) + "\n"
