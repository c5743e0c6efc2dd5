"""Learning-rate schedules and ℓ1-ball constraints of ILO (Daras et al., ICML 2021), as used by ILO and SGILO.

Original: ilo:ilo_stylegan.py (warm-up + cosine schedule) and ilo:utils.py (ℓ1-ball expansion around the previous
round's solution). Fixed bugs (docs/original-code.md#bug-14): the LR is not zero at the first step, radii lists must
have one entry per round (the original raised IndexError in round 4), and the ℓ1 step comes before the sphere step
so z stays on its sphere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor


# ----------------------------------------------------------------------------
# ILO learning rate: lr(t) = lr · min(1, t/rampup) · (½ − ½ cos(π · min(1, (1 − t)/rampdown))), t = (i + ½)/steps.


def ilo_lr(i: int, steps: int, lr: float, rampup: float = 0.05, rampdown: float = 0.75) -> float:
    """LR at step ``i`` of ``steps`` (ilo:ilo_stylegan.py). Evaluated at mid-step t = (i + ½)/steps so neither end
    is exactly 0."""
    t = (i + 0.5) / steps
    ramp_up = min(1.0, t / rampup) if rampup > 0 else 1.0
    ramp_down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / rampdown)) if rampdown > 0 else 1.0
    return lr * ramp_up * ramp_down


# ----------------------------------------------------------------------------
# Euclidean projection onto the ℓ1 ball of radius ε, per sample (Duchi et al., ICML 2008, Fig. 1).


def project_l1_ball(x: Tensor, radius: float) -> Tensor:
    """argmin_{‖v‖₁ ≤ ε} ‖v − x‖₂ for each row of ``x`` (all dims ≥ 1 flattened). Shapes: x [N, ...] → same."""
    if not radius > 0:
        raise ValueError(f"l1 radius must be > 0, got {radius!r}")
    v = x.flatten(1)                                                      # [N, n]
    mu = v.abs().sort(dim=1, descending=True).values                      # [N, n]
    c = mu.cumsum(1)
    j = torch.arange(1, v.shape[1] + 1, device=x.device, dtype=x.dtype)
    rho = ((mu * j) > (c - radius)).to(x.dtype).mul(j).argmax(1, keepdim=True)  # 0-based index of the last true entry
    theta = ((c.gather(1, rho) - radius) / (rho + 1).to(x.dtype)).clamp_min(0)  # [N, 1]
    inside = v.abs().sum(1, keepdim=True) <= radius
    out = torch.where(inside, v, v.sign() * (v.abs() - theta).clamp_min(0))
    return out.reshape(x.shape)


# ----------------------------------------------------------------------------
# x ← x₀ + Π_{ℓ1, ε}(x − x₀): the ILO expansion constraint around the round-start value x₀ (ilo:utils.py).


def l1_expand(x: Tensor, x0: Tensor, radius: float) -> Tensor:
    return x0 + project_l1_ball(x - x0, radius)


# ----------------------------------------------------------------------------
# Check a per-round value list has one entry per round.


def per_round(values: Sequence[float] | None, rounds: int, name: str) -> list[float | None]:
    if values is None:
        return [None] * rounds
    if len(values) != rounds:
        raise ValueError(f"{name}: expected one value per round ({rounds}), got {len(values)}: {list(values)}")
    return [float(v) for v in values]


# ----------------------------------------------------------------------------
# A per-round tuple for n rounds: cut, or extended by repeating its last value.


def resize_rounds(values: Sequence, n: int) -> tuple:
    values = tuple(values)
    return values[:n] if len(values) >= n else values + (values[-1],) * (n - len(values))


ROUND_TUPLES = ("l1_radius_z", "l1_radius_h", "l1_radius_noise")   # per-round fields of ILOConfig and SGILOConfig


def round_radii(config, rounds: int) -> list[list[float | None]]:
    """The ℓ1 radii of ``config`` for z, h_k and the noise maps (ROUND_TUPLES), one value per round (None: no ball);
    one clear line when a tuple does not have ``rounds`` entries."""
    return [per_round(getattr(config, f), rounds, f) for f in ROUND_TUPLES]


def with_rounds(config, steps: Sequence[int]):
    """``config`` (an `ILOConfig` or `SGILOConfig`) with these per-round ``steps`` and its per-round tuples (ℓ1 radii,
    SGILO's ``reference.tau_h``) cut or extended (last value) to len(steps) rounds."""
    n = len(steps)
    fields = {f: resize_rounds(getattr(config, f), n) for f in ROUND_TUPLES if getattr(config, f) is not None}
    ref = getattr(config, "reference", None)
    if ref is not None and ref.tau_h is not None:
        fields["reference"] = replace(ref, tau_h=resize_rounds(ref.tau_h, n))
    return replace(config, steps=tuple(steps), **fields)
