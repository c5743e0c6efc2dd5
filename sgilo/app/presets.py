"""Named solver presets: the papers' defaults, and values tuned for the bundled 64×64 UTKFace model on `train/` images.

* ``paper``: the dataclass defaults — CSGM as in Bora et al. 2017, ILO as in its config (ℓ1 balls off), SGILO's
  ``langevin`` mode with our 64-px default step.
* ``utkface64``: tuned with `sgilo bench-tune` on the first 4 `train/` faces (never `test/`), task inpaint-random with
  5 % observed pixels, 4 chains, bf16 autocast of the generator tail (then; now ``auto``). The commands and their tables are in
  ``docs/tuning.md``. Findings that set the values:
  - ILO without ℓ1 balls over-fits sparse measurements (PSNR 11.9 dB); an ℓ1 ball of radius 300 around the previous
    round's h_k for rounds k ≥ 1 gave the best of {30, 100, 300, 1000, 3000} (18.3 dB). Re-tuned at equal budget
    (issue 15; 300 evaluations, 3 restarts, 3 %/1 % masks and 1 % CS): GeoCross 0.01 costs ≈ 5 dB on sparse masks,
    so it is off; with it off, radius 30 beats 300 on three of four sparse tasks.
  - SGILO's Langevin step η (z and noise maps): 1e-5 → 17.6 dB, 3e-5 → 19.1, 1e-4 → 20.2, 3e-4 → 20.9, 1e-3 → 21.4,
    2e-3 → 21.5, 3e-3 → 21.4 (one round of 200 steps, no learned prior); 1e-2 diverges (11.6 dB). CSGM: 17.5 dB.
  - A second round on h₁ with its prior and a smaller step for h_k (η_h = 1e-4; the features' per-element spread is
    ≈ 0.03-0.06, so the prior's stiffness is ≈ 1/σ² ≈ 300-1000) adds ≈ 0.1 dB: 21.6 dB, 90 % coverage 0.90.
  - A third round on h₂ lowers PSNR (20.4 dB with η_h = 1e-4, 21.2 with 2e-5): the h₂ prior is near-Gaussian at
    t_h = 0.01 (see docs/models.md), so it does not keep the 8×8 features on the generator's range. Rounds: k = 0, 1.
  - The learned z prior and the exact N(0, I) score of z give the same PSNR (21.4 vs 21.5 dB); t_h ∈ {0.01, 0.1, 0.3}
    changes it by < 0.25 dB. Defaults: the learned priors, t_h = 0.01 (the reference's hot time).
  - Those steps diverge on operators that observe most of the image (inpaint-box, colorize: −165 / −173 dB on the
    held-out benchmark), so SGILO runs with the curvature step control (`sgilo.solvers.curvature`); its bound
    κ_z = 30 for round 0 was the best or within 0.2 dB of the best of {3, 10, 30, 100, ∞} on 4 train/ faces of each of
    six tasks except denoising (100 better by 0.7 dB); κ_h = 1 (ULA-stable) once h_k moves.
  - The bundled h priors are PCA Gaussians of the synthetic latents (docs/models.md) and h_k's steps are
    preconditioned by their covariance (``precondition=True``; η_h is then in units of that covariance). At equal
    budget (300 evaluations, K = 3, 4 train/ faces, inpaint-random 3 %) η_h ∈ {1e-3, 1e-2, 1e-1, 1} gave 19.27 /
    19.38 / 19.32 / 19.19 dB against 19.32 for transformer priors with unpreconditioned steps: η_h = 1e-2. With it h₁ moves 13 % of its
    norm; without the burn-in a third round on h₂ lowers PSNR (19.19 vs 19.38 inpaint, 19.29 vs 19.82 CS 1 %).
    Score time t_h = 0.05 instead of 0.01: the same PSNR on train/ (19.32 vs 19.38 inpaint 3 %, 19.82 vs 19.82 CS 1 %),
    and there the PCA priors' held-out ε-error is 59 % (h₁) and 32 % (h₂) below the per-feature Gaussian's, against
    38 % and 3 % at 0.01 (h₂'s rank-1024 residual variance swamps σ(0.01)² = 0.002). An annealed score time
    (``t_schedule`` from 0.1–1.0 down to 0.01–0.05 over each round) beat the fixed t_h on no more than one of the
    four sparse tasks on 8 train/ faces (docs/tuning.md), so t_h stays fixed.
  - Burn-in: with 80 % of every round's steps as Adam steps on the same potential before the chain samples
    (``burn_in=0.8``) SGILO rose on 8 train/ faces at 300 evaluations (K = 3, mean of K) from 19.64 / 17.97 / 20.18 /
    19.80 to 20.32 / 18.18 / 20.92 / 20.57 dB (inpaint 3 %, inpaint 1 %, CS Gaussian 1 %, CS circulant 1 %; CSGM
    20.38 / 18.11 / 21.19 / 20.62); 0.6 and 0.9 were within 0.15 dB of 0.8. After a burn-in the round-0 bound
    κ_z = 30 diverged on 1 % CS, κ_z = 3 lost 0.6 dB to κ_z = 1: κ_z = 1.
  - CSGM protocol m = 1000 (σ = 0.01), 4 train/ faces, bench 'default' steps: 25.49 dB with the burn-in, CSGM 24.29,
    ILO 25.48. With the likelihood at the operator's σ = 0.01 instead of the floor 0.05 (all solvers'
    `effective_sigma`), SGILO rose by 0.9–1.2 dB at m = 1000 … 10000 (4 train/ faces, budget 300).
  - Depth, with the burn-in: a round on h₂ (rounds (200, 100, 100) instead of (200, 100), same 300 evaluations, K = 3,
    8 train/ faces) gave 20.39 / 18.42 / 20.87 / 20.63 dB against 20.32 / 18.18 / 20.92 / 20.57 on the four sparse
    tasks, and at the CSGM protocol's m = 5000 (4 train/ faces, bench 'default' steps) 28.11 against 26.33 (ILO 27.02);
    with it the PCA h₂ prior beat the per-feature Gaussian by +0.41 ± 0.38 dB at inpaint 1 % and +0.22 ± 0.17 at CS
    circulant 1 % (−0.05 and −0.01 on the other two). Rounds k = 0, 1, 2. On 128 train/ faces the h₂ round gave
    +0.00 / +0.11 / −0.00 / −0.06 dB; (200, 100, 50) and (200, 100, 200) did no better (docs/tuning.md).
  - Noise maps: trainable for blocks k..k+2 in round k (``noise_lookahead=2``, ILO's variables) instead of block k
    only: m = 5000 at 300 evaluations 26.58 against 25.55 dB (4 train/ faces; ILO 28.72), the sparse tasks within
    0.1 dB (20.30 / 18.46 / 20.79 against 20.39 / 18.42 / 20.87). A burn-in of 0.95 added 0.8 dB more at m = 5000 but
    leaves 5 % of the steps to sample with; it is not used.
  - Precision ``auto``: bf16 autocast where it is native (AMX / AVX-512 BF16 CPUs, CUDA), else fp32 (the values were
    tuned in bf16 on an AMX CPU; emulated bf16 on an AVX2 CPU is 7–10× slower than fp32).

`sgilo solve` uses ``utkface64`` for the bundled model and ``paper`` for any other model (``--preset`` overrides);
`sgilo bench` builds its 'default' and 'quick' presets from these.
"""

from __future__ import annotations

from sgilo.solvers.csgm import CSGMConfig
from sgilo.solvers.ilo import ILOConfig
from sgilo.solvers.sgilo import CurvatureControl, SGILOConfig

BIG = 1e9   # "no ℓ1 ball" for rounds where a radius is required positionally (round 0 has no h_k)

PRESETS: dict[str, dict] = {
    "paper": {"csgm": CSGMConfig(), "ilo": ILOConfig(), "sgilo": SGILOConfig()},
    "utkface64": {
        "csgm": CSGMConfig(precision="auto"),
        "ilo": ILOConfig(l1_radius_h=(BIG, 30.0, 30.0, 30.0), geocross=0.0, precision="auto"),   # docs/tuning.md
        "sgilo": SGILOConfig(eta=2e-3, eta_h=1e-2, precondition=True, t_h=0.05, steps=(200, 100, 100), chains=4,
                             noise_lookahead=2, burn_in=0.8, curvature=CurvatureControl(kappa_z=1.0), precision="auto"),
    },
}


def preset_config(name: str, solver: str):
    """The frozen config of ``solver`` in preset ``name``; one clear line for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown solver preset {name!r}; expected one of {sorted(PRESETS)}")
    if solver not in PRESETS[name]:
        raise ValueError(f"unknown solver {solver!r}; expected one of {sorted(PRESETS[name])}")
    return PRESETS[name][solver]


def default_preset(model: str) -> str:
    """'utkface64' for the bundled model, else 'paper' (tuned values do not transfer across generators)."""
    return "utkface64" if model == "default" else "paper"


def resolve_preset(name: str, model: str) -> str:
    """``--preset`` of `sgilo solve`: 'auto' (→ `default_preset(model)`) or a name of PRESETS; one line otherwise."""
    if name == "auto":
        return default_preset(model)
    if name not in PRESETS:
        raise ValueError(f"unknown --preset {name!r}; expected one of {['auto', *sorted(PRESETS)]}")
    return name
