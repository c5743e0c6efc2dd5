"""Data fidelity for the solvers of SGILO (Daras et al., ICML 2022), ILO (Daras et al., ICML 2021) and CSGM (Bora et al.,
ICML 2017): a proper Gaussian negative log-likelihood instead of the reference's unscaled MSE.

    f(x) = ‖A x − y‖² / (2 σ_eff²) + w_lpips · LPIPS(A†A x, A†y),      σ_eff = σ if σ > 0 else σ_min

σ is the operator's noise std, and the likelihood follows it whenever the operator declares one (Bayes). For
noiseless problems (σ = 0) the likelihood is a delta and Langevin dynamics would need a zero step size, so σ_min
(default 0.05 in [-1, 1] units, roughly the representation error of a 64×64 StyleGAN-2 on held-out faces) stands in
as the model-mismatch noise level. Flooring every σ at σ_min instead (σ_eff = max(σ, σ_min)) under-weighted the data
25-fold in the CSGM protocol (σ = 0.01) and cost SGILO about 1 dB at m ≥ 1000 there (docs/tuning.md). Unlike the
original code (docs/original-code.md#bug-8) the image is not clamped before A, so saturated pixels keep their
gradient. The optional perceptual term compares pseudo-inverse images A†A x̂ and A†y (the original's masked "fill"
target was not detached, docs/original-code.md#bug-9; here nothing from the iterate enters the target), and needs a
user-supplied LPIPS callable built from local weights (never downloaded).

GeoCross (Menon et al. 2020, PULSE.py) is the optional regulariser of ILO and the SGILO reference: the
mean squared geodesic angle between the w+ rows of one sample, which pulls the rows of w+ towards a single w.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sgilo.operators.base import LinearOperator

GEOCROSS_SCALE = 512 / 8                 # PULSE's constant (its w_dim 512 over 8), kept so weights transfer
GEOCROSS_EPS = 1e-9                      # ILO/PULSE ε (the sgilo reference used 1e-12)


# ----------------------------------------------------------------------------
# The effective noise level: the operator's σ, or σ_min for a noiseless operator.


def effective_sigma(sigma: float, sigma_min: float) -> float:
    if not (sigma_min > 0 and sigma_min < float("inf")):
        raise ValueError(f"sigma_min must be a finite number > 0, got {sigma_min!r}")
    return float(sigma) if sigma > 0 else float(sigma_min)


# ----------------------------------------------------------------------------
# f(x) per sample for a batch of K chains of B images laid out chain-major (row c·B + b).


class DataFidelity:
    """Per-sample data term f(x) = ‖A x − y‖² / (2 σ_eff²) [+ w · LPIPS].

    Shapes: y [B, ...] (the operator's measurement shape); x [K·B, C, H, W] with any K ≥ 1; returns [K·B].
    The operator is applied chain by chain to slices of B rows, so operators whose buffers carry a batch of B (one mask
    per image) work unchanged.
    """

    def __init__(self, operator: LinearOperator, y: Tensor, sigma_min: float = 0.05,
                 perceptual: Callable[[Tensor, Tensor], Tensor] | None = None, perceptual_weight: float = 0.0) -> None:
        if not isinstance(y, torch.Tensor) or y.ndim < 1:
            raise ValueError(f"y must be a batched measurement tensor, got {type(y).__name__}")
        if perceptual_weight > 0 and perceptual is None:
            raise ValueError("lpips_weight > 0 needs an LPIPS callable built from local weights; none was given")
        self.operator, self.y = operator, y.detach()
        self.sigma = effective_sigma(operator.sigma, sigma_min)
        self.perceptual, self.perceptual_weight = perceptual, float(perceptual_weight)
        self._y_dagger = operator.A_dagger(self.y).detach() if perceptual_weight > 0 else None

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    @property
    def measurements(self) -> int:
        """m, the measurements per image."""
        return self.y[0].numel()

    @property
    def mse_scale(self) -> float:
        """m / (2σ_eff²), m = measurements per image: f = mse_scale · mean((A x − y)²), so a weight w given relative
        to the reference's mean-squared-error term (weight 1) is w · mse_scale in our likelihood units."""
        return self.measurements / (2 * self.sigma**2)

    def _chunks(self, x: Tensor) -> list[Tensor]:
        if x.shape[0] % self.batch:
            raise ValueError(f"x has {x.shape[0]} rows, expected a multiple of the measurement batch {self.batch}")
        return list(x.split(self.batch))

    def residual_sq(self, x: Tensor) -> Tensor:
        """‖A x − y‖² per row. Shapes: x [K·B, C, H, W] → [K·B]."""
        out = [(self.operator.A(xc) - self.y).flatten(1).square().sum(1) for xc in self._chunks(x)]
        return torch.cat(out)

    def relative_residual(self, x: Tensor) -> Tensor:
        """‖A x − y‖ / ‖y‖ per row (the measurement residual reported by the metrics)."""
        ny = self.y.flatten(1).norm(dim=1).clamp_min(1e-12).repeat(x.shape[0] // self.batch)
        return self.residual_sq(x).sqrt() / ny

    def normal_product(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """The Hessian of the Gaussian term applied to image-space directions: (AᵀA v / σ², ‖A v‖² / σ² per row).

        Shapes: v [K·B, C, H, W] → ([K·B, C, H, W], [K·B]). Used by the curvature step control (`curvature.py`)."""
        av = [self.operator.A(vc) for vc in self._chunks(v)]
        ata = torch.cat([self.operator.A_adjoint(a) for a in av]) / self.sigma**2
        quad = torch.cat([a.flatten(1).square().sum(1) for a in av]) / self.sigma**2
        return ata, quad

    def __call__(self, x: Tensor) -> Tensor:
        f = self.residual_sq(x) / (2 * self.sigma**2)
        if self.perceptual_weight > 0:
            pairs = [(self.operator.A_dagger(self.operator.A(xc)), self._y_dagger) for xc in self._chunks(x)]
            lp = torch.cat([self.perceptual(a, b).reshape(-1) for a, b in pairs])
            f = f + self.perceptual_weight * lp
        return f


# ----------------------------------------------------------------------------
# GeoCross (PULSE, Menon et al. 2020; sgilo:utils.py): (512/8) · mean_{i,j} θ_ij² over all ordered row pairs
# (i = j too).


def geocross(w: Tensor, eps: float = GEOCROSS_EPS) -> Tensor:
    """θ_ij = 2·atan2(sqrt(‖w_i − w_j‖² + ε), sqrt(‖w_i + w_j‖² + ε)) for the rows w_i of one sample.

    Shapes: w [N, L, D] (w+ rows) → [N], one value per sample (PULSE sums over the batch, the sgilo reference averages;
    per-row values keep samples independent). With L = 1 the value is the constant θ_11² ≈ 0.
    """
    if w.ndim != 3:
        raise ValueError(f"geocross expects w+ rows [N, L, D], got shape {tuple(w.shape)}")
    a = ((w[:, None] - w[:, :, None]).square().sum(-1) + eps).sqrt()      # [N, L, L]
    b = ((w[:, None] + w[:, :, None]).square().sum(-1) + eps).sqrt()
    return GEOCROSS_SCALE * (2 * torch.atan2(a, b)).square().mean((1, 2))
