"""CSGM — compressed sensing with generative models (Bora et al., ICML 2017), a baseline of SGILO (Daras et al., 2022).

Minimises f(G(w(z), n)) + (λ_z/2)‖z‖² over the Gaussianised w+ code z [B, L, D] and the noise maps n of the first
blocks 0 … ``noise_lookahead`` through the whole generator with Adam at a constant learning rate (Bora et al. 2017,
Eq. 2 with the ridge on z), z rows and the free noise maps projected after every step onto the spheres of their start
radii. These are exactly the variables and constraints of the first round of the ILO/PULSE code (ILO, Daras et al.
2021, ilo:ilo_stylegan.py round 0 with noise maps #0 … #4 of blocks 0 … 2 free; PULSE, Menon et al. 2020, spherical
optimiser), so ILO's round 0 *is* this CSGM (ILO adds its learning-rate schedule and GeoCross). With the likelihood f
of `sgilo.solvers.objective` and λ_z = 1 this is the MAP estimate under z ~ N(0, I) (on the sphere the ridge is
constant). ``noise_lookahead`` ≥ num_blocks − 1 with ``project=False`` is the bench variant ``csgm-noise`` (every
noise map, unprojected: it can fit almost any image).

R random restarts run as one batch. ``Result.x_hat`` is, per image, the restart with the lowest measurement loss f
(Bora et al. 2017, Sec. 6); ``Result.outputs`` [R, B, C, H, W] holds every restart's image (benchmarks average them);
``Result.samples`` stays None (restarts are not posterior samples). Optional GeoCross on the w+ rows (PULSE; off).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sgilo.generator.latents import GaussianizedW
from sgilo.generator.stylegan2 import Generator
from sgilo.operators.base import LinearOperator
from sgilo.solvers.ilo import adam_step_factory
from sgilo.solvers.langevin import check_positive
from sgilo.solvers.result import Latents, Result
from sgilo.solvers.rounds import (Constraints, Iterate, add_penalties, check_precision, check_steps, geocross_penalty,
                                  init_iterate, make_problem, restarts_result, run_rounds, start_iterate)


# ----------------------------------------------------------------------------
# CSGM hyper-parameters (Bora et al. 2017, CelebA: Adam lr 0.1, 500 steps, 2 restarts).


@dataclass(frozen=True)
class CSGMConfig:
    steps: int = 500                  # Adam steps.
    lr: float = 0.1                   # Adam learning rate (constant).
    restarts: int = 2                 # Random restarts; the lowest measurement loss wins per image.
    ridge: float = 1.0                # λ_z of (λ_z/2)‖z‖² (1 = the z ~ N(0, I) prior; Bora et al. use a small λ).
    noise_lookahead: int = 2          # Noise maps of blocks 0..lookahead are free (ILO round 0: 2; -1: none).
    project: bool = True              # Spherical projection of z rows / free noise maps (ILO/PULSE round 0).
    sigma_min: float = 0.05           # Likelihood σ of noiseless operators (σ = 0).
    precision: str = "fp32"       # Generator tail in 'fp32' or 'bf16' autocast (f, updates fp32).
    lpips_weight: float = 0.0         # Optional LPIPS weight; needs `perceptual`.
    geocross: float = 0.0             # GeoCross weight on w+ rows, relative to the MSE term (CSGM: none).
    seed: int = 0                     # Base seed of the per-row random streams.
    progress: bool = False            # tqdm bar.
    perceptual: Callable | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_positive(self.lr, "learning rate lr")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.restarts, int) or self.restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1, got {self.restarts!r}")
        if not isinstance(self.noise_lookahead, int) or self.noise_lookahead < -1:
            raise ValueError(f"noise_lookahead must be an integer >= -1, got {self.noise_lookahead!r}")


# ----------------------------------------------------------------------------
# Solve y = A G(z) + noise by CSGM.


def solve(y: Tensor, operator: LinearOperator, G: Generator, fit: GaussianizedW | None = None, *,
          priors: Mapping | None = None, config: CSGMConfig = CSGMConfig(),  # noqa: B008
          generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
          init: Latents | None = None) -> Result:
    """CSGM reconstruction (point estimate, best of R restarts; every restart's image in ``outputs``).

    Args: priors — unused (CSGM's prior is the N(0, I) of z), accepted for the common solver signature;
    seeds — one seed per image (restart r of image b then uses the stream (seeds[b], r), whatever the batch);
    init — saved `Latents`; B saved rows are tiled over the R restarts (which are then identical: use R = 1).
    Shapes: y [B, ...]; returns Result with x_hat [B, C, H, W], outputs [R, B, C, H, W], z [B, L, D];
    traces['data'] is [T, R, B]; diagnostics['final_data_term'] [R][B].
    """
    c = config
    problem = make_problem(y, operator, G, fit, c.restarts, c.seed, c.sigma_min, generator, c.progress, c.perceptual,
                           c.lpips_weight, seeds, c.precision)
    check_steps((c.steps,), problem.synthesis)
    lookahead = c.noise_lookahead
    ridge = (lambda it: 0.5 * c.ridge * it.z.flatten(1).square().sum(1)) if c.ridge > 0 else None
    penalty = add_penalties(ridge, geocross_penalty(problem, c.geocross))

    def make_step(it: Iterate, k: int):
        return adam_step_factory(problem, it, c.steps, lambda i: c.lr, Constraints.at(it, c.project), penalty)

    start = init_iterate(problem) if init is None else start_iterate(problem, init, 1)
    it, seconds, stopped = run_rounds(problem, start, (c.steps,), make_step, lookahead, True, "csgm",
                                      f"lower the learning rate lr (now {c.lr})")
    return restarts_result(problem, it, c, seconds, stopped)
