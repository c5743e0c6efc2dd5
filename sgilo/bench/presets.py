"""Fixed task and solver presets of the benchmark of SGILO (Daras et al., ICML 2022) against ILO (Daras et al., ICML
2021), CSGM (Bora et al., ICML 2017) and the classical Lasso baselines of the CSGM paper.

Task presets have fixed names; their parameters are written into every results line and into the summary. Geometry
that depends on the image size (the centre box, the ratio for a fixed m) is resolved by `preset_params` for the
actual image shape, so the same names work on the 64×64 bundled model and on tiny test generators.

Solver presets are typed frozen `SolverPreset`s (a config per solver, batch, image count, provenance). Bench solvers
(`BENCH_SOLVERS`) are the registry's solvers plus named variants — the ablations of SGILO and the all-noise-maps
CSGM — each with the variables it optimises and its constraints, written into the summary.

Tuning of step sizes, temperatures and step counts is done on `train/` images only (`sgilo.bench.lasso.tune_lambda`
for the Lasso λ; `sgilo bench-tune` for the generative solvers, whose tuned values live in `sgilo.app.presets`);
`SOLVER_PRESETS[...].tuning` says where each preset's values come from. With ``--budget`` the step counts and K are
replaced by equal-budget ones (`sgilo.bench.budget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from sgilo.bench.lasso import LassoConfig
from sgilo.solvers.csgm import CSGMConfig
from sgilo.solvers.ilo import ILOConfig
from sgilo.app.presets import PRESETS
from sgilo.solvers.schedules import with_rounds
from sgilo.solvers.sgilo import CurvatureControl, SGILOConfig


# ----------------------------------------------------------------------------
# One task preset: the operator name of `sgilo.bench.tasks` and its keyword arguments.


@dataclass(frozen=True)
class TaskPreset:
    task: str                                    # operator name for `make_operator`
    params: dict = field(default_factory=dict)   # observed / factor / ratio / sigma / box ...
    m: int | None = None                         # fixed measurement count (CSGM protocol); ratio = m / n
    box_fraction: float | None = None            # centred box of this fraction of H and W (inpaint-box)


CSGM_MEASUREMENTS = (20, 50, 100, 200, 500, 1000, 2500, 5000, 10000)  # Bora et al. 2017, Fig. 3 (celebA, n = 12288)
CSGM_NOISE_STD = 0.01                                                # Bora et al. 2017, Sec. 6.1

TASK_PRESETS: dict[str, TaskPreset] = {
    "inpaint-random-10": TaskPreset("inpaint-random", {"observed": 0.10}),
    "inpaint-random-3": TaskPreset("inpaint-random", {"observed": 0.03}),
    "inpaint-random-1": TaskPreset("inpaint-random", {"observed": 0.01}),
    "inpaint-box": TaskPreset("inpaint-box", {}, box_fraction=0.5),          # centre 32×32 of 64×64
    "superres-x4": TaskPreset("superres", {"factor": 4}),
    "superres-x8": TaskPreset("superres", {"factor": 8}),
    "cs-gaussian-5": TaskPreset("cs-gaussian", {"ratio": 0.05}),
    "cs-gaussian-1": TaskPreset("cs-gaussian", {"ratio": 0.01}),
    "cs-circulant-5": TaskPreset("cs-circulant", {"ratio": 0.05}),
    "cs-circulant-1": TaskPreset("cs-circulant", {"ratio": 0.01}),
    "denoise-0.2": TaskPreset("denoise", {"sigma": 0.2}),
    "colorize": TaskPreset("colorize", {}),
    "full": TaskPreset("inpaint-random", {"observed": 1.0}),                 # every pixel: a solver's range ceiling
    **{f"csgm-m{m}": TaskPreset("cs-gaussian", {"sigma": CSGM_NOISE_STD}, m=m) for m in CSGM_MEASUREMENTS},
}

TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "main": tuple(n for n in TASK_PRESETS if not n.startswith("csgm-m") and n != "full"),
    "sparse": ("inpaint-random-3", "inpaint-random-1", "cs-gaussian-1", "cs-circulant-1"),
    "csgm-protocol": tuple(f"csgm-m{m}" for m in CSGM_MEASUREMENTS),
    "quick": ("inpaint-random-3", "superres-x8", "cs-gaussian-1"),
}
TASK_GROUPS["all"] = TASK_GROUPS["main"] + TASK_GROUPS["csgm-protocol"]


# ----------------------------------------------------------------------------
# Expand a comma list of preset and group names into preset names (order kept, duplicates dropped).


def expand_tasks(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for name in names:
        if name in TASK_GROUPS:
            out += TASK_GROUPS[name]
        elif name in TASK_PRESETS:
            out.append(name)
        else:
            raise ValueError(f"unknown task preset {name!r}; expected one of {sorted(TASK_PRESETS)} or a group "
                             f"{sorted(TASK_GROUPS)}")
    return tuple(dict.fromkeys(out))


# ----------------------------------------------------------------------------
# Keyword arguments of `sgilo.bench.tasks.make_operator` for a preset at image shape (C, H, W).


def preset_params(name: str, image_shape: tuple[int, int, int]) -> dict:
    """Returns e.g. {"ratio": 20/12288, "sigma": 0.01} (so m = round(ratio·n) = 20) or {"box": (16, 16, 48, 48)}."""
    if name not in TASK_PRESETS:
        raise ValueError(f"unknown task preset {name!r}; expected one of {sorted(TASK_PRESETS)}")
    preset = TASK_PRESETS[name]
    C, H, W = image_shape
    params = dict(preset.params)
    if preset.m is not None:
        n = C * H * W
        if preset.m > n:
            raise ValueError(f"task {name!r} needs m = {preset.m} measurements but images have only n = {n} values")
        params["ratio"] = preset.m / n
    if preset.box_fraction is not None:
        bh, bw = round(H * preset.box_fraction), round(W * preset.box_fraction)
        y0, x0 = (H - bh) // 2, (W - bw) // 2
        params["box"] = (x0, y0, x0 + bw, y0 + bh)
    return params


# ----------------------------------------------------------------------------
# Bench solvers: a registry solver (or a Lasso baseline), how its config and priors derive from the preset, and what it
# optimises under which constraints (stated in the summary).


def _sgilo_z(c: SGILOConfig) -> SGILOConfig:
    """Round k = 0 only, with all of SGILO's steps."""
    return with_rounds(c, (sum(c.steps),))


def _sgilo_h1(c: SGILOConfig) -> SGILOConfig:
    """Rounds k = 0, 1 only (no round on h₂ or deeper), in the proportions of SGILO's first two rounds (with
    ``--budget`` scaled to the same total; without it, the first two rounds' steps)."""
    if len(c.steps) < 2:
        raise ValueError(f"sgilo-h1 needs a preset with at least 2 SGILO rounds, got steps {c.steps}")
    return with_rounds(c, c.steps[:2])


def _sgilo_noburn(c: SGILOConfig) -> SGILOConfig:
    """No burn-in; the default κ_z = 30 (docs/tuning.md: tuned for chains that start at random, not at a mode)."""
    curvature = None if c.curvature is None else replace(c.curvature, kappa_z=CurvatureControl().kappa_z)
    return replace(c, burn_in=0.0, curvature=curvature)


@dataclass(frozen=True)
class BenchSolver:
    name: str                                    # bench name (results, summary)
    base: str                                    # registry solver name (`sgilo.solvers.registry`) or 'lasso'
    variables: str                               # what it optimises / samples, under which constraints
    config: Callable = staticmethod(lambda c: c)  # base config of the preset → this solver's config
    priors: str = "learned"                      # 'learned', 'gauss' (per-feature Gaussians), 'pca' (skips), 'none'


BENCH_SOLVERS: dict[str, BenchSolver] = {s.name: s for s in (
    BenchSolver("csgm", "csgm", "z (Gaussianised w+) and the noise maps of blocks 0-2 (= ILO round 0), Adam; z rows "
                "and noise maps sphere-projected to their start radii"),
    BenchSolver("csgm-noise", "csgm", "z and every noise map of every block, Adam; no projection (former bench CSGM)",
                lambda c: replace(c, noise_lookahead=99, project=False)),
    BenchSolver("ilo", "ilo", "round k: z rows read by blocks >= k, h_k and the noise maps of blocks k..k+2, Adam; "
                "z rows and noise maps sphere-projected, h_k in an l1 ball around its round start (rounds >= 1)"),
    BenchSolver("sgilo", "sgilo", "round k: Langevin on z rows read by blocks >= k, h_k and the noise maps of the "
                "preset's blocks (bundled: k..k+2, as ILO), "
                "after a burn-in (Adam on the same potential for the preset's fraction of the steps); the loaded score "
                "priors for h_k (bundled: PCA Gaussians, steps preconditioned by their covariance) and z (none "
                "bundled: the exact N(0, I) score); z rows and noise maps sphere-projected"),
    BenchSolver("sgilo-noburn", "sgilo", "as sgilo without the burn-in: Langevin from the start, with the round-0 "
                "curvature bound kappa_z = 30 tuned for that", _sgilo_noburn),
    BenchSolver("sgilo-gauss", "sgilo", "as sgilo, with the exact N(0, I) score for z and a per-feature Gaussian score "
                "for h_k (mean and variance of the prior's normalisation statistics)", priors="gauss"),
    BenchSolver("sgilo-pca", "sgilo", "as sgilo, each learned prior replaced by its Gaussian part (the PCA Gaussian "
                "skip of a structured prior, the per-feature one otherwise), without the network", priors="pca"),
    BenchSolver("sgilo-noprior", "sgilo", "as sgilo with prior weight lam = 0: the likelihood alone (flat prior on "
                "h_k; z and the noise maps stay sphere-projected; h_k steps still preconditioned by the priors' "
                "covariance): the ablation of the prior itself", lambda c: replace(c, lam=0.0)),
    BenchSolver("sgilo-map", "sgilo", "as sgilo with beta = inf (no injected noise: projected gradient MAP)",
                lambda c: replace(c, beta=math.inf)),
    BenchSolver("sgilo-h1", "sgilo", "as sgilo, rounds k = 0, 1 only (no round on h_2): the ablation of depth",
                _sgilo_h1),
    BenchSolver("sgilo-z", "sgilo", "as sgilo, round k = 0 only (z and the noise maps of block 0), learned z prior",
                _sgilo_z),
    BenchSolver("lasso-dct", "lasso", "DCT coefficients, l1 penalty (FISTA)"),
    BenchSolver("lasso-wavelet", "lasso", "Daubechies wavelet coefficients, l1 penalty (FISTA)"),
)}

SOLVERS = tuple(BENCH_SOLVERS)
GENERATIVE = tuple(n for n, s in BENCH_SOLVERS.items() if s.base != "lasso")


# ----------------------------------------------------------------------------
# Solver presets: configs per base solver, the default image batch, and where the values come from.


@dataclass(frozen=True)
class SolverPreset:
    configs: Mapping[str, object]                # 'csgm' / 'ilo' / 'sgilo' / 'lasso-dct' / 'lasso-wavelet' → config
    batch: int                                   # images per solver call
    n_images: int                                # images of the split
    tuning: str                                  # where the values come from

    def __post_init__(self) -> None:
        missing = [s for s in ("csgm", "ilo", "sgilo", "lasso-dct", "lasso-wavelet") if s not in self.configs]
        if missing:
            raise ValueError(f"solver preset lacks configs for {missing}")
        object.__setattr__(self, "configs", MappingProxyType(dict(self.configs)))

    def config(self, solver: str):
        """The config of bench solver ``solver`` (a variant's derived from its base solver's)."""
        s = BENCH_SOLVERS[solver]
        return s.config(self.configs[solver if s.base == "lasso" else s.base])


_TUNED = PRESETS["utkface64"]
_LASSO = {"lasso-dct": LassoConfig(basis="dct"), "lasso-wavelet": LassoConfig(basis="wavelet")}


def _solver_preset_as_is(name: str, tuning: str) -> SolverPreset:
    """A bench preset that runs `sgilo.app.presets` PRESETS[name] unchanged, with default Lasso configs, batch 8
    and 64 images."""
    return SolverPreset({**PRESETS[name], **_LASSO}, batch=8, n_images=64, tuning=tuning)


SOLVER_PRESETS: dict[str, SolverPreset] = {
    # The values tuned on train/ for the bundled model (`sgilo.app.presets`, docs/tuning.md) with fewer steps, so
    # that the default run (64 images × 12 tasks × 3 solvers) fits 2 hours on a 2-core AVX2 CPU without native bf16
    # (fp32; ~30 ms per generator row-step per core): CSGM 100 steps, 1 restart (paper: 500, 2); ILO rounds
    # (30, 30, 15, 15) (paper: 50, 50, 25, 25); SGILO 3 chains × rounds (100, 50, 50) (tuned: 4 × (200, 100, 100)). The SGILO
    # budget was set by time: a first run with 3 × (60, 30) went at a pace of 72 min for the whole grid, leaving room for
    # 5/3 of the SGILO steps. On 4 train/ faces 3 × (60, 30) gave 19.19 dB against 19.80 for 4 × (150, 50)
    # (inpaint-random 3 %), and 19.52 against 20.00 (cs-gaussian 1 %) (docs/tuning.md).
    # With --budget N the step counts are replaced by equal-budget ones (`sgilo.bench.budget`) in these proportions
    # (ILO 2:2:1:1: the best split on the sparse masks at budget 300 on train/ faces; on 1 % CS 4:1:1 or one round is
    # ≈ 0.2 dB better, docs/tuning.md).
    "default": SolverPreset(
        {"csgm": replace(_TUNED["csgm"], steps=100, restarts=1),
         "ilo": replace(_TUNED["ilo"], steps=(30, 30, 15, 15)),
         "sgilo": replace(_TUNED["sgilo"], chains=3, steps=(100, 50, 50)),
         **_LASSO},
        batch=8, n_images=64,
        tuning="sgilo.app.presets 'utkface64': tuned on 4 train/ faces, inpaint-random 5% (docs/tuning.md), "
               "curvature bound kappa_z = 30 tuned on 4 train/ faces x 6 tasks; ILO GeoCross 0 and l1 radius 30 "
               "tuned at equal budget (300, K = 3) on 4 train/ faces x 4 sparse tasks; SGILO burn-in 0.8 and rounds "
               "k = 0, 1, 2 chosen at equal budget on 8 train/ faces x 4 sparse tasks and 4 x CSGM protocol; for "
               "time: CSGM 100 steps, 1 restart (paper: 500, 2), ILO (30, 30, 15, 15) (paper: 50, 50, 25, 25), "
               "SGILO 3 chains x (100, 50, 50) (tuned: 4 x (200, 100, 100))"),
    # The 'default' settings with about 1/2 of the steps (SGILO 3/10), on 8 images.
    "quick": SolverPreset(
        {"csgm": replace(_TUNED["csgm"], steps=50, restarts=1),
         "ilo": replace(_TUNED["ilo"], steps=(20, 20, 10, 10)),
         "sgilo": replace(_TUNED["sgilo"], chains=3, steps=(30, 15, 15)),
         "lasso-dct": LassoConfig(basis="dct", iters=100),
         "lasso-wavelet": LassoConfig(basis="wavelet", iters=100)},
        batch=8, n_images=8, tuning="the 'default' values with step counts scaled down for time only"),
    # The full tuned budgets of `sgilo.app.presets` 'utkface64' (CSGM 500 steps × 2 restarts, ILO (50, 50, 25, 25),
    # SGILO 4 chains × (200, 100, 100)): about 2.5× the 'default' run's time; for follow-up runs on a few tasks.
    "tuned": _solver_preset_as_is("utkface64", "sgilo.app.presets 'utkface64' at full budget: tuned on 4 train/ "
                                               "faces (docs/tuning.md)"),
    # The papers' defaults (`sgilo.app.presets` 'paper'), for other generators.
    "paper": _solver_preset_as_is("paper", "paper defaults; not tuned"),
    # Pipeline check only (tests, smoke runs): a few steps, numbers are meaningless.
    "smoke": SolverPreset(
        {"csgm": CSGMConfig(steps=3, restarts=1),
         "ilo": ILOConfig(steps=(2, 2)),
         "sgilo": SGILOConfig(chains=2, steps=(2, 2), eta=1e-6),   # the default 3e-5 is unstable on tiny generators
         "lasso-dct": LassoConfig(basis="dct", iters=10, lambdas=(1e-3, 1e-2)),
         "lasso-wavelet": LassoConfig(basis="wavelet", iters=10, lambdas=(1e-3, 1e-2))},
        batch=2, n_images=2, tuning="none (smoke test)"),
}
