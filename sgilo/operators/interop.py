"""deepinv interoperability for SGILO (Daras et al., ICML 2022): use any `deepinv.physics.Physics` as an operator.

deepinv's `Physics` has the same contract as ours (`A`, `A_adjoint`, optional `A_dagger`, a `noise_model`); the adapter
only forwards calls. deepinv is an optional extra and is never imported here: any object with callable `A` and
`A_adjoint` is accepted (duck typing), so the adapter is exercised without deepinv installed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sgilo.operators.base import GaussianNoise, LinearOperator, NoiseModel


# ----------------------------------------------------------------------------
# Read σ from a deepinv noise model (GaussianNoise has a float or 0-d tensor `sigma`); None if it has none.


def _physics_sigma(physics) -> float | None:
    noise = getattr(physics, "noise_model", None)
    sigma = getattr(noise, "sigma", None)
    if sigma is None:
        return None
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != 1:
            return None
        sigma = sigma.item()
    return float(sigma)


# ----------------------------------------------------------------------------
# A LinearOperator that forwards to a deepinv-style physics object.


class PhysicsAdapter(LinearOperator):
    """Wrap `physics` (A, A_adjoint, optionally A_dagger and noise_model with a scalar `sigma`).

    Noise: when the physics' noise model exposes a scalar σ, `measure` adds σ·ε with *our* generator (so results depend
    on the seed as everywhere in sgilo); otherwise it calls `physics(x)` (deepinv's own, possibly stochastic, forward).
    """

    def __init__(self, physics) -> None:
        sigma = _physics_sigma(physics)
        super().__init__(GaussianNoise(sigma) if sigma is not None else NoiseModel())
        if isinstance(physics, nn.Module):
            self.physics = physics  # registered: moves with .to()
        else:
            object.__setattr__(self, "physics", physics)
        self._has_sigma = sigma is not None

    def A(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.physics.A_adjoint(y)

    def A_dagger(self, y: Tensor) -> Tensor:
        fn = getattr(self.physics, "A_dagger", None)
        return fn(y) if callable(fn) else self.A_adjoint(y)

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self._has_sigma or getattr(self.physics, "noise_model", None) is None:
            return self.noise(self.A(x), generator=generator)
        return self.physics(x)


# ----------------------------------------------------------------------------
# Accept a LinearOperator as is, adapt a Physics-like object, reject anything else in one line.


def as_operator(obj) -> LinearOperator:
    """Return `obj` if it is a LinearOperator, a `PhysicsAdapter(obj)` if it has callable A and A_adjoint."""
    if isinstance(obj, LinearOperator):
        return obj
    if callable(getattr(obj, "A", None)) and callable(getattr(obj, "A_adjoint", None)):
        return PhysicsAdapter(obj)
    raise TypeError(f"expected a sgilo LinearOperator or a deepinv Physics (with A and A_adjoint), "
                    f"got {type(obj).__name__}")
