"""Equal generator-evaluation budgets for the benchmark's generative solvers (CSGM, Bora et al. 2017; ILO, Daras et
al. 2021; SGILO, Daras et al. 2022).

The budget is counted as the solvers count it (`sgilo.solvers.rounds`, module docstring, "NFE"): generator-tail
evaluations per image, summed over the K restarts/chains, the rounds, the curvature estimates and the final render.
Per restart/chain (one row) of a run with steps s_0 … s_{R−1}:

    nfe_row = Σ_k s_k + 1 + c · (2·iters + 1)

with c the number of curvature estimates (SGILO with ``curvature`` set in ``langevin`` mode: one per round; else 0),
and nfe = K · nfe_row. `with_budget` inverts this: for a budget N and K it sets the restarts/chains to K and the total
steps to S = ⌊N / K⌋ − 1 − c·(2·iters + 1), split over the rounds in the proportions of the config's own
steps (largest remainder), so that every solver spends K·⌊N/K⌋ ≤ N evaluations per image (equal for all solvers).
"""

from __future__ import annotations

from dataclasses import replace

from sgilo.solvers.csgm import CSGMConfig
from sgilo.solvers.ilo import ILOConfig
from sgilo.solvers.sgilo import SGILOConfig


# ----------------------------------------------------------------------------
# Rows (K), steps per round, and evaluations per curvature estimate of a config.


def rows(config) -> int:
    if isinstance(config, SGILOConfig):
        return config.chains
    if isinstance(config, (CSGMConfig, ILOConfig)):
        return config.restarts
    raise ValueError(f"no generator budget for config {type(config).__name__}; expected a CSGM, ILO or SGILO config")


def round_steps(config) -> tuple[int, ...]:
    return (config.steps,) if isinstance(config, CSGMConfig) else tuple(config.steps)


def curvature_cost(config) -> int:
    """Evaluations per row of one curvature estimate (0 when the config makes none): 1 gradient forward, 1 VJP primal,
    ``iters`` JVPs and ``iters − 1`` reverse passes (`sgilo.solvers.curvature.preconditioned_curvature`)."""
    if not isinstance(config, SGILOConfig) or config.mode != "langevin" or config.curvature is None:
        return 0
    return 2 * config.curvature.iters + 1


# ----------------------------------------------------------------------------
# The NFE per image a config will spend: K · (Σ_k s_k + 1 + R · curvature_cost).


def planned_nfe(config) -> int:
    steps = round_steps(config)
    return rows(config) * (sum(steps) + 1 + len(steps) * curvature_cost(config))


# ----------------------------------------------------------------------------
# Split a total of S steps over rounds in proportions w_k (largest remainder; every round ≥ 1 step).


def split_steps(total: int, weights: tuple[int, ...]) -> tuple[int, ...]:
    W = sum(weights)
    exact = [total * w / W for w in weights]
    steps = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda k: (steps[k] - exact[k], k))
    for k in order[:total - sum(steps)]:
        steps[k] += 1
    return tuple(steps)


# ----------------------------------------------------------------------------
# A config with K restarts/chains and the steps that spend the budget N per image.


def with_budget(config, budget: int, K: int):
    """``config`` with restarts/chains = K and its per-round steps scaled (same proportions) so that
    `planned_nfe` = K · ⌊budget / K⌋. One clear line when the budget cannot hold one step per round."""
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an integer number of generator evaluations >= 1, got {budget!r}")
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"chains/restarts K must be an integer >= 1, got {K!r}")
    weights = round_steps(config)
    total = budget // K - 1 - len(weights) * curvature_cost(config)
    if total < len(weights):
        need = K * (1 + len(weights) * (1 + curvature_cost(config)))
        raise ValueError(f"budget {budget} is too small for {type(config).__name__} with K = {K} and {len(weights)} "
                         f"round(s): it needs at least {need} generator evaluations per image")
    steps = split_steps(total, weights)
    if isinstance(config, CSGMConfig):
        return replace(config, steps=steps[0], restarts=K)
    if isinstance(config, ILOConfig):
        return replace(config, steps=steps, restarts=K)
    return replace(config, steps=steps, chains=K)
