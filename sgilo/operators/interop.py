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
# σ of a deepinv noise model: 0 for none / ZeroNoise, the scalar `sigma` of a Gaussian model; refuse anything else.


def _physics_sigma(physics) -> float:
    """SGILO's likelihood is Gaussian (Daras et al. 2022, Eq. 2), so only Gaussian or absent noise can be adapted.

    A Poisson (``gain``), Poisson–Gaussian, uniform, ... model would otherwise be read as noiseless (σ = 0) or as
    Gaussian, silently: it raises one line instead.
    """
    noise = getattr(physics, "noise_model", None)
    if noise is None or type(noise).__name__ == "ZeroNoise":
        return 0.0
    sigma, kind = getattr(noise, "sigma", None), type(noise).__name__
    if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
        sigma = sigma.item()
    if not isinstance(sigma, (int, float)) or hasattr(noise, "gain"):
        raise ValueError(f"deepinv physics noise model: expected Gaussian noise with one scalar sigma (or ZeroNoise), "
                         f"got {kind}; build the sgilo operator with PoissonNoise or GaussianNoise instead")
    return float(sigma)


# ----------------------------------------------------------------------------
# A LinearOperator that forwards to a deepinv-style physics object.


class PhysicsAdapter(LinearOperator):
    """Wrap `physics` (A, A_adjoint, optionally A_dagger, and a Gaussian or absent `noise_model`).

    Noise: `measure` adds σ·ε with *our* generator, σ read from the physics' Gaussian noise model (so results depend
    on the seed as everywhere in sgilo). Any other noise model is refused (see `_physics_sigma`).
    """

    def __init__(self, physics) -> None:
        sigma = _physics_sigma(physics)
        super().__init__(GaussianNoise(sigma) if sigma > 0 else NoiseModel())
        if isinstance(physics, nn.Module):
            self.physics = physics  # registered: moves with .to()
        else:
            object.__setattr__(self, "physics", physics)

    def A(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.physics.A_adjoint(y)

    def A_dagger(self, y: Tensor) -> Tensor:
        fn = getattr(self.physics, "A_dagger", None)
        return fn(y) if callable(fn) else self.A_adjoint(y)


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
