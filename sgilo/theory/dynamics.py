"""Gradient descent, HV gradient descent with the negation check, and Langevin dynamics on random ReLU problems.

Daras et al., "Score-Guided Intermediate Layer Optimization" (ICML 2022), analyse the (unadjusted) Langevin algorithm

    z ← z − η ∇f(z) + sqrt(2η/β) ξ,   ξ ~ N(0, I_k),                                  (Langevin, stationary ∝ e^{−βf})

for f(z) = ½‖A G(z) − A G(z*)‖². The baselines are plain gradient descent (ξ = 0) and the descent scheme of
Huang, Hand, Heckel & Voroninski (2018, Alg. 1), which before each step replaces z by −z when f(−z) < f(z)
("negation check"), to leave the basin of the spurious critical point −ρ_d z*.

The talk-slide helper ``sgilo:presentations/derivative_proxy.py`` drew its noise as ``np.random.normal(x0.shape)`` (the
shape used as the *mean*: one sample of mean 2 broadcast to all coordinates); here ξ is a standard normal vector per
chain and coordinate.

All methods run S problems × C chains in one batched loop; chains may mix methods via per-chain temperature 1/β
(0 for descent) and per-chain negation flags.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sgilo.theory.generators import RandomReLUProblem
from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# Output of a run: final iterates and the recorded trajectories of ‖z − z*‖ and f(z).


@dataclass
class Trace:
    """``z`` [S, C, k] final iterates; ``steps`` [T]; ``dist`` and ``loss`` [T, S, C] at the recorded steps."""

    z: Tensor
    steps: Tensor
    dist: Tensor
    loss: Tensor


# ----------------------------------------------------------------------------
# Standard normal noise, one torch.Generator per problem seed (so results do not depend on the batch of seeds).


def stacked_randn(shape: Sequence[int], like: Tensor,
                  generator: torch.Generator | Sequence[torch.Generator] | None) -> Tensor:
    """N(0, I) of ``shape`` [S, ...]; ``generator`` is None, one generator, or a sequence of S generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(*shape, generator=generator, dtype=like.dtype, device=like.device)
    if len(generator) != shape[0]:
        raise ValueError(f"generator: expected {shape[0]} generators (one per problem), got {len(generator)}")
    return torch.stack([torch.randn(*shape[1:], generator=g, dtype=like.dtype, device=like.device)
                        for g in generator])


# ----------------------------------------------------------------------------
# HV negation check (Huang et al. 2018, Alg. 1): z ← −z where f(−z) < f(z), only on flagged chains.


def negation_check(problem: RandomReLUProblem, z: Tensor, flags: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flip z [S, C, k] to −z where ``flags`` [S, C] is set and f(−z) < f(z); return (z, f(z), ∇f(z)).

    z and −z go through the network as one batch of 2C chains (one pass instead of three).
    """
    C = z.shape[1]
    f2, g2 = problem.loss_and_grad(torch.cat([z, -z], dim=1))  # [S, 2C], [S, 2C, k]
    flip = flags & (f2[:, C:] < f2[:, :C])  # [S, C]
    pick = flip[..., None]
    return (torch.where(pick, -z, z), torch.where(flip, f2[:, C:], f2[:, :C]),
            torch.where(pick, g2[:, C:], g2[:, :C]))


# ----------------------------------------------------------------------------
# The shared batched loop: z ← z − η∇f(z) + sqrt(2η T_c) ξ with per-chain temperature T_c = 1/β_c.


def run_chains(problem: RandomReLUProblem, z0: Tensor, *, eta: float, steps: int,
               temperature: Tensor | float = 0.0, negation: Tensor | bool = False, record_every: int = 0,
               generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Trace:
    """Run ``steps`` iterations from ``z0`` [S, C, k]; ``temperature`` (1/β) and ``negation`` broadcast to [S, C].

    ``record_every`` > 0 records ‖z − z*‖ and f(z) at steps 0, r, 2r, …, and always at the last step.
    """
    S, k = problem.n_seeds, problem.k
    assert_shape(z0, [S, None, k], "z0")
    C = z0.shape[1]
    temp = torch.as_tensor(temperature, dtype=z0.dtype, device=z0.device).expand(S, C)
    flags = torch.as_tensor(negation, dtype=torch.bool, device=z0.device).expand(S, C)
    noise_scale = torch.sqrt(2.0 * eta * temp)[..., None]  # [S, C, 1]
    noisy, any_neg = bool((temp > 0).any()), bool(flags.any())
    z, rec_t, rec_d, rec_f = z0.clone(), [], [], []
    for t in range(steps + 1):
        if any_neg:
            z, f, g = negation_check(problem, z, flags)
        else:
            f, g = problem.loss_and_grad(z)
        if record_every > 0 and (t % record_every == 0 or t == steps):
            rec_t.append(t)
            rec_d.append((z - problem.z_star[:, None, :]).norm(dim=-1))
            rec_f.append(f)
        if t == steps:
            break
        z = z - eta * g  # (gradient step)
        if noisy:
            z = z + noise_scale * stacked_randn((S, C, k), z, generator)  # (Langevin noise)
    empty = torch.zeros(0, S, C, dtype=z.dtype)
    return Trace(z=z, steps=torch.tensor(rec_t, dtype=torch.long),
                 dist=torch.stack(rec_d) if rec_d else empty, loss=torch.stack(rec_f) if rec_f else empty)


# ----------------------------------------------------------------------------
# Plain gradient descent z ← z − η∇f(z).


def gradient_descent(problem: RandomReLUProblem, z0: Tensor, *, eta: float, steps: int,
                     negation: bool = False, record_every: int = 0) -> Trace:
    """GD (optionally with the HV negation check) from ``z0`` [S, C, k]; deterministic."""
    return run_chains(problem, z0, eta=eta, steps=steps, negation=negation, record_every=record_every)


# ----------------------------------------------------------------------------
# Langevin z ← z − η∇f(z) + sqrt(2η/β) ξ.


def langevin(problem: RandomReLUProblem, z0: Tensor, *, eta: float, beta: float, steps: int,
             record_every: int = 0,
             generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Trace:
    """Unadjusted Langevin at inverse temperature ``beta`` from ``z0`` [S, C, k]."""
    if not beta > 0 or math.isinf(beta):
        raise ValueError(f"beta: expected a finite positive inverse temperature, got {beta}")
    return run_chains(problem, z0, eta=eta, steps=steps, temperature=1.0 / beta, record_every=record_every,
                      generator=generator)


# ----------------------------------------------------------------------------
# Per-seed generators for the noise (EDM StackedRandomGenerator idea).


def seed_generators(seeds: Sequence[int], offset: int = 0) -> list[torch.Generator]:
    """One torch.Generator per seed, seeded with ``seed + offset`` (offset separates noise from problem draws)."""
    return [torch.Generator().manual_seed(int(s) + offset) for s in seeds]
