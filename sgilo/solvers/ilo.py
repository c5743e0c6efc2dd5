"""ILO — Intermediate Layer Optimization (Daras et al., ICML 2021), the MAP baseline of SGILO (Daras et al., ICML 2022).

Round k = 0 … R−1 minimises f(G_tail,k(w(z), h_k)) over (z, h_k, noise maps of blocks k … k+2) with Adam, the ILO
learning-rate schedule (warm-up 5 %, cosine decay over the last 75 %, ilo:ilo_stylegan.py), spherical projection of
z rows and noise maps onto their round-start radii (PULSE.py) and optional ℓ1-ball expansion constraints around the
round-start values with one radius per round (ilo:utils.py; off by default, as in ILO). Round k+1 starts from
`advance` of the optimised state: the split is exact, so the image does not jump between rounds (the original code
dropped the skip image, docs/original-code.md#bug-1).
The data term is the Gaussian likelihood of `sgilo.solvers.objective` (Adam is scale-invariant, so σ only matters
relative to the optional LPIPS term). ILO used mse + LPIPS + GeoCross: GeoCross (weight 0.01, ILO's default) acts on
the w+ rows read by blocks ≥ k in every round (`sgilo.solvers.rounds.geocross_penalty`); ILO's own slice hit the batch
dimension, so it only acted in round 0 (docs/original-code.md#bug-5).

Round 0 optimises exactly CSGM's variables under CSGM's constraints (`sgilo.solvers.csgm`: z and the noise maps of
blocks 0 … 2, sphere-projected). R random restarts (``restarts``, ours; ILO ran one) run as one batch: ``Result.x_hat``
is per image the restart with the lowest final measurement loss, ``Result.outputs`` [R, B, C, H, W] holds all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sgilo.generator.latents import GaussianizedW
from sgilo.generator.stylegan2 import Generator
from sgilo.operators.base import LinearOperator
from sgilo.solvers.langevin import check_positive
from sgilo.solvers.result import Latents, Result
from sgilo.solvers.rounds import (Constraints, Iterate, Problem, check_precision, check_steps, geocross_penalty,
                                  init_iterate, make_problem, render, restarts_result, run_rounds, start_iterate)
from sgilo.solvers.schedules import ilo_lr, round_radii


# ----------------------------------------------------------------------------
# ILO hyper-parameters; defaults are ilo:configs/config.yaml unless noted.


@dataclass(frozen=True)
class ILOConfig:
    steps: tuple[int, ...] = (50, 50, 25, 25)   # Adam steps per round; rounds k = 0..len-1 (ILO default).
    restarts: int = 1                           # Random restarts R; the lowest measurement loss wins (ILO: 1).
    lr: float = 0.1                             # Peak Adam learning rate (ILO lr[k] = 0.1).
    rampup: float = 0.05                        # Linear warm-up fraction of each round.
    rampdown: float = 0.75                      # Cosine decay over the last fraction of each round.
    noise_lookahead: int = 2                    # Noise maps of blocks k..k+2 are trainable (ILO: #0..#4+2k).
    project: bool = True                        # Spherical projection of z rows and trainable noise maps.
    l1_radius_z: tuple[float, ...] | None = None      # Per-round ℓ1 radii for z − z_start (ILO: off; [100, 1000, 6000]).
    l1_radius_h: tuple[float, ...] | None = None      # Per-round ℓ1 radii for h_k − h_start (ILO: off).
    l1_radius_noise: tuple[float, ...] | None = None  # Per-round ℓ1 radii for each noise map (ILO: off).
    init: str = "randn"                         # z init: 'randn' (ILO) or 'ones' (sgilo reference).
    carry_skip: bool = True                     # Exact split (False reproduces the reference's dropped skip image).
    sigma_min: float = 0.05                     # Likelihood σ of noiseless operators (σ = 0; ours).
    precision: str = "fp32"                 # Generator tail in 'fp32' or 'bf16' autocast (f, updates fp32).
    lpips_weight: float = 0.0                   # LPIPS weight (ILO pe = 1); needs `perceptual`.
    geocross: float = 0.01                      # GeoCross weight on w+ rows, relative to the MSE term (ILO: 0.01).
    seed: int = 0                               # Base seed of the per-row random streams.
    progress: bool = False                      # tqdm bar per round.
    perceptual: Callable | None = field(default=None, compare=False, repr=False)  # LPIPS(x, y) -> [B], local weights.

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_positive(self.lr, "learning rate lr")
        if not isinstance(self.restarts, int) or self.restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1, got {self.restarts!r}")
        round_radii(self, len(self.steps))                               # one ℓ1 radius per round, or None


# ----------------------------------------------------------------------------
# One Adam step on f (with LR schedule), then ℓ1 balls and spheres; shared with SGILO's reference mode.


def adam_step_factory(problem: Problem, it: Iterate, steps: int, lr: Callable[[int], float], cons: Constraints,
                      penalty: Callable[[Iterate], Tensor] | None = None,
                      after: Callable[[Iterate], None] | None = None) -> Callable[[int], tuple[Tensor, Tensor]]:
    opt = torch.optim.Adam(list(it.params().values()), lr=lr(0))

    def step(i: int) -> tuple[Tensor, Tensor]:
        for g in opt.param_groups:
            g["lr"] = lr(i)
        opt.zero_grad(set_to_none=True)
        x = render(problem, it)
        f = problem.fidelity(x)                                           # [N]
        loss = f if penalty is None else f + penalty(it)
        loss.sum().backward()                                             # sum: rows stay independent of batch size
        opt.step()
        if after is not None:
            after(it)
        cons.apply(it)
        return x.detach(), f.detach()

    return step


# ----------------------------------------------------------------------------
# Solve y = A G(z) + noise by ILO.


def solve(y: Tensor, operator: LinearOperator, G: Generator, fit: GaussianizedW | None = None, *,
          priors: Mapping | None = None, config: ILOConfig = ILOConfig(),  # noqa: B008
          generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
          init: Latents | None = None) -> Result:
    """ILO reconstruction (point estimate, best of R restarts; every restart's image in ``outputs``).

    Args: priors — unused (ILO's constraints are its ℓ1 balls), accepted for the common solver signature;
    seeds — one seed per image (its random stream then depends on that seed only, not on the batch);
    init — saved `Latents` to continue from (rounds before its layer k are skipped).
    Shapes: y [B, ...] measurement; returns Result with x_hat [B, C, H, W], outputs [R, B, C, H, W], z [B, L, D],
    samples/std None; diagnostics['final_data_term'] [R][B].
    """
    c = config
    problem = make_problem(y, operator, G, fit, c.restarts, c.seed, c.sigma_min, generator, c.progress, c.perceptual,
                           c.lpips_weight, seeds, c.precision)
    steps = check_steps(tuple(c.steps), problem.synthesis)
    radii = round_radii(c, len(steps))
    penalty = geocross_penalty(problem, c.geocross)

    def make_step(it: Iterate, k: int):
        cons = Constraints.at(it, c.project, radii[0][k], radii[1][k], radii[2][k])
        return adam_step_factory(problem, it, steps[k], lambda i: ilo_lr(i, steps[k], c.lr, c.rampup, c.rampdown), cons,
                                 penalty)

    start = init_iterate(problem, c.init) if init is None else start_iterate(problem, init, len(steps))
    it, seconds, stopped = run_rounds(problem, start, steps, make_step, c.noise_lookahead,
                                      c.carry_skip, "ilo", f"lower the learning rate lr (now {c.lr})")
    return restarts_result(problem, it, c, seconds, stopped)
