"""Fixed task and solver presets of the benchmark of SGILO (Daras et al., ICML 2022) against ILO (Daras et al., ICML
2021), CSGM (Bora et al., ICML 2017) and the classical Lasso baselines of the CSGM paper.

Task presets have fixed names; their parameters are written into every results line and into the summary. Geometry
that depends on the image size (the centre box, the ratio for a fixed m) is resolved by `preset_params` for the
actual image shape, so the same names work on the 64×64 bundled model and on tiny test generators.

Solver presets are a dict of frozen solver configs (style guide rule 12). Tuning of step sizes, temperatures and step
counts is done on `train/` images only (`sgilo.bench.lasso.tune_lambda` for the Lasso λ; `sgilo bench-tune` for the
generative solvers, whose tuned values live in `sgilo.app.presets`); `SOLVER_PRESETS[...]["tuning"]` says where
each preset's values come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sgilo.bench.lasso import LassoConfig
from sgilo.solvers.csgm import CSGMConfig
from sgilo.solvers.ilo import ILOConfig
from sgilo.app.presets import PRESETS
from sgilo.solvers.sgilo import SGILOConfig


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
    **{f"csgm-m{m}": TaskPreset("cs-gaussian", {"sigma": CSGM_NOISE_STD}, m=m) for m in CSGM_MEASUREMENTS},
}

TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "main": tuple(n for n in TASK_PRESETS if not n.startswith("csgm-m")),
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
# Solver presets: configs per solver, the default image batch, and where the values come from.

_TUNED = PRESETS["utkface64"]


def _solver_preset_as_is(name: str, tuning: str) -> dict:
    """A bench preset that runs `sgilo.app.presets` PRESETS[name] unchanged, with default Lasso configs, batch 8
    and 64 images."""
    return {**PRESETS[name], "lasso-dct": LassoConfig(basis="dct"), "lasso-wavelet": LassoConfig(basis="wavelet"),
            "batch": 8, "n_images": 64, "tuning": tuning}


SOLVER_PRESETS: dict[str, dict] = {
    # The values tuned on train/ for the bundled model (`sgilo.app.presets`, docs/tuning.md) with fewer steps, so
    # that the default run (64 images × 12 tasks × 3 solvers) fits 2 hours on a 2-core AVX2 CPU without native bf16
    # (fp32; ~30 ms per generator row-step per core): CSGM 100 steps, 1 restart (paper: 500, 2); ILO rounds
    # (30, 30, 15, 15) (paper: 50, 50, 25, 25); SGILO 3 chains × rounds (100, 50) (tuned: 4 × (200, 100)). The SGILO
    # budget was set by time: a first run with 3 × (60, 30) went at a pace of 72 min for the whole grid, leaving room for
    # 5/3 of the SGILO steps. On 4 train/ faces 3 × (60, 30) gave 19.19 dB against 19.80 for 4 × (150, 50)
    # (inpaint-random 3 %), and 19.52 against 20.00 (cs-gaussian 1 %) (docs/tuning.md).
    "default": {
        "csgm": replace(_TUNED["csgm"], steps=100, restarts=1),
        "ilo": replace(_TUNED["ilo"], steps=(30, 30, 15, 15)),
        "sgilo": replace(_TUNED["sgilo"], chains=3, steps=(100, 50)),
        "lasso-dct": LassoConfig(basis="dct"),
        "lasso-wavelet": LassoConfig(basis="wavelet"),
        "batch": 8,
        "n_images": 64,
        "tuning": "sgilo.app.presets 'utkface64': tuned on 4 train/ faces, inpaint-random 5% (docs/tuning.md), "
                  "curvature bound kappa_z = 30 tuned on 4 train/ faces x 6 tasks; for time: CSGM 100 steps, "
                  "1 restart (paper: 500, 2), ILO (30, 30, 15, 15) (paper: 50, 50, 25, 25), SGILO 3 chains x "
                  "(100, 50) (tuned: 4 x (200, 100))",
    },
    # The 'default' settings with about 1/2 of the steps (SGILO 3/10), on 8 images.
    "quick": {
        "csgm": replace(_TUNED["csgm"], steps=50, restarts=1),
        "ilo": replace(_TUNED["ilo"], steps=(20, 20, 10, 10)),
        "sgilo": replace(_TUNED["sgilo"], chains=3, steps=(30, 15)),
        "lasso-dct": LassoConfig(basis="dct", iters=100),
        "lasso-wavelet": LassoConfig(basis="wavelet", iters=100),
        "batch": 8,
        "n_images": 8,
        "tuning": "the 'default' values with step counts scaled down for time only",
    },
    # The full tuned budgets of `sgilo.app.presets` 'utkface64' (CSGM 500 steps × 2 restarts, ILO (50, 50, 25, 25),
    # SGILO 4 chains × (200, 100)): about 2.5× the 'default' run's time; for follow-up runs on a few tasks.
    "tuned": _solver_preset_as_is("utkface64", "sgilo.app.presets 'utkface64' at full budget: tuned on 4 train/ "
                                               "faces (docs/tuning.md)"),
    # The papers' defaults (`sgilo.app.presets` 'paper'), for other generators.
    "paper": _solver_preset_as_is("paper", "paper defaults; not tuned"),
    # Pipeline check only (tests, smoke runs): a few steps, numbers are meaningless.
    "smoke": {
        "csgm": CSGMConfig(steps=3, restarts=1),
        "ilo": ILOConfig(steps=(2, 2)),
        "sgilo": SGILOConfig(chains=2, steps=(2, 2)),
        "lasso-dct": LassoConfig(basis="dct", iters=10, lambdas=(1e-3, 1e-2)),
        "lasso-wavelet": LassoConfig(basis="wavelet", iters=10, lambdas=(1e-3, 1e-2)),
        "batch": 2,
        "n_images": 2,
        "tuning": "none (smoke test)",
    },
}

SOLVERS = ("csgm", "ilo", "sgilo", "lasso-dct", "lasso-wavelet")
