"""One registry of the generative solvers: name → (solve function, config class).

Every solver has the same signature (CSGM, Bora et al. 2017; ILO, Daras et al. 2021; SGILO, Daras et al. 2022):

    solve(y, operator, G, fit=None, *, priors=None, config=..., generator=None, seeds=None, init=None) -> Result

Shapes: y [B, ...] (the operator's measurement shape); Result.x_hat [B, C, H, W]. ``priors`` maps 'z' / 'h{k}' to
score models (used by SGILO only), ``seeds`` is one seed per image, ``init`` saved `Latents` to continue from.
Application code (`sgilo.app`) looks solvers up here and never dispatches by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sgilo.solvers import csgm, ilo, sgilo


@dataclass(frozen=True)
class SolverEntry:
    name: str
    solve: Callable          # the common signature above
    config_class: type       # frozen dataclass of the solver's hyper-parameters
    samples: bool            # True when the solver returns K posterior samples (Result.samples)


SOLVERS: dict[str, SolverEntry] = {
    "csgm": SolverEntry("csgm", csgm.solve, csgm.CSGMConfig, samples=False),
    "ilo": SolverEntry("ilo", ilo.solve, ilo.ILOConfig, samples=False),
    "sgilo": SolverEntry("sgilo", sgilo.solve, sgilo.SGILOConfig, samples=True),
}


def get_solver(name: str) -> SolverEntry:
    """The registry entry of ``name``; one clear line listing the known names otherwise."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; expected one of {sorted(SOLVERS)}")
    return SOLVERS[name]
