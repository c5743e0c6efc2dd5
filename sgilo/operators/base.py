"""Forward-operator contract (deepinv's `Physics`): y = N(A(x)) with a linear A, its adjoint and a separate noise model.

Operators for the inverse problems of SGILO (Daras et al., ICML 2022) and ILO (Daras et al., ICML 2021). Every operator
is an `nn.Module` holding its random state (masks, matrices, signs) as buffers created from an explicit seed, so it
moves with `.to()` and saves/loads with the result (`sgilo.operators.io`). `get_config()` returns the JSON-able
constructor arguments; `from_config(cfg)` rebuilds an operator of the same shapes whose buffers `load_state_dict` fills.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sgilo.utils.shapes import append_dims


# ----------------------------------------------------------------------------
# Noise models: applied after A, never inside it.


class NoiseModel(nn.Module):
    """Identity noise (σ = 0)."""

    sigma: float = 0.0

    def forward(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return y


class GaussianNoise(NoiseModel):
    """y + σ·ε, ε ~ N(0, I)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not (sigma >= 0 and sigma < float("inf")):
            raise ValueError(f"noise sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)

    def forward(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return y + self.sigma * noise


# ----------------------------------------------------------------------------
# Poisson (shot) noise on [-1, 1] values: photon counts N ~ Poisson(gain · (v + 1) / 2), y = 2 N / gain − 1.


class PoissonNoise(NoiseModel):
    """Shot noise with `gain` photons at full scale; values below −1 are treated as zero intensity.

    `sigma` is the Gaussian-equivalent std at mid-grey (v = 0): Var(y) = 2 (v + 1) / gain, so σ = √(2 / gain).
    Sampling goes through `torch.poisson`, which takes the `generator`.
    """

    def __init__(self, gain: float) -> None:
        super().__init__()
        if not (gain > 0 and gain < float("inf")):
            raise ValueError(f"Poisson gain must be a finite number > 0, got {gain!r}")
        self.gain = float(gain)
        self.sigma = (2.0 / self.gain) ** 0.5

    def forward(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        rate = (self.gain * (y + 1) / 2).clamp_min(0)
        counts = torch.poisson(rate, generator=generator)
        return 2 * counts / self.gain - 1


# ----------------------------------------------------------------------------
# Noise model <-> JSON-able dict, for saving operators with their results.


def noise_to_config(noise: NoiseModel) -> dict:
    """{"kind": "none"} | {"kind": "gaussian", "sigma": σ} | {"kind": "poisson", "gain": g}."""
    if isinstance(noise, GaussianNoise):
        return {"kind": "gaussian", "sigma": noise.sigma}
    if isinstance(noise, PoissonNoise):
        return {"kind": "poisson", "gain": noise.gain}
    if type(noise) is NoiseModel:
        return {"kind": "none"}
    raise TypeError(f"cannot serialise noise model {type(noise).__name__}; expected NoiseModel, GaussianNoise or "
                    f"PoissonNoise")


def noise_from_config(cfg: dict) -> NoiseModel:
    """Inverse of `noise_to_config`."""
    kind = cfg.get("kind")
    if kind == "none":
        return NoiseModel()
    if kind == "gaussian":
        return GaussianNoise(cfg["sigma"])
    if kind == "poisson":
        return PoissonNoise(cfg["gain"])
    raise ValueError(f"unknown noise kind {kind!r}, expected 'none', 'gaussian' or 'poisson'")


# ----------------------------------------------------------------------------
# Linear operator base class.


class LinearOperator(nn.Module):
    """A linear forward operator A with adjoint Aᵀ and a noise model.

    Subclasses implement `A` and `A_adjoint` (and `A_dagger` where cheap). Shapes: x [B, C, H, W] image in [-1, 1];
    y: operator-specific measurement shape, batched on dim 0.
    """

    def __init__(self, noise: NoiseModel | None = None) -> None:
        super().__init__()
        self.noise = noise if noise is not None else NoiseModel()

    @property
    def sigma(self) -> float:
        """Measurement noise standard deviation (0 for noiseless)."""
        return float(getattr(self.noise, "sigma", 0.0))

    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def A_dagger(self, y: Tensor) -> Tensor:
        """Pseudo-inverse; the default is the adjoint (exact for operators with orthonormal rows)."""
        return self.A_adjoint(y)

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y = noise(A(x))."""
        return self.noise(self.A(x), generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def to_image(self, y: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
        """Render a measurement as an image in [-1, 1] for figures (subclasses override where they know better).

        Image-shaped y (denoise, deblur, colorization): y itself. A smaller image with an integer factor
        (super-resolution): nearest-neighbour upsampling. Anything else (vector measurements): A†y min–max normalised
        per image — the one place a stretch is used, since A†y has no natural range.

        Shapes: y [B, ...] → [B, 3, H, W] (1-channel results are replicated to 3).
        """
        _, H, W = image_shape
        h, w = (tuple(y.shape[-2:]) if y.ndim == 4 else (0, 0))
        if (h, w) == (H, W):
            img = y
        elif h and w and H % h == 0 and W % w == 0 and H // h == W // w:
            img = y.repeat_interleave(H // h, dim=-2).repeat_interleave(W // w, dim=-1)
        else:
            img = self.A_dagger(y)
            lo = img.flatten(1).min(1).values.reshape(-1, 1, 1, 1)
            hi = img.flatten(1).max(1).values.reshape(-1, 1, 1, 1)
            img = (img - lo) / (hi - lo).clamp_min(1e-12) * 2 - 1
        return as_rgb(img)

    def get_config(self) -> dict:
        """JSON-able constructor arguments (tensors excluded; they are buffers in the state dict)."""
        return {}

    @classmethod
    def from_config(cls, cfg: dict) -> LinearOperator:
        """An operator of the same shapes; its buffers are then overwritten by `load_state_dict`."""
        return cls(**cfg)


# ----------------------------------------------------------------------------
# An image batch for display: 1 channel replicated to 3, clipped to [-1, 1].


def as_rgb(img: Tensor) -> Tensor:
    """Shapes: [B, 1 or 3, H, W] → [B, 3, H, W]."""
    return (img.expand(-1, 3, -1, -1) if img.shape[1] == 1 else img).clamp(-1, 1)


# ----------------------------------------------------------------------------
# Check an image batch against the operator's (C, H, W) and return it unchanged.


def check_image(x: Tensor, image_shape: tuple[int, int, int] | None, name: str = "x") -> Tensor:
    """Shapes: x [B, C, H, W]; `image_shape` (C, H, W) or None for any size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if image_shape is None:
        if x.ndim != 4:
            raise ValueError(f"{name}: expected 4 dimensions [B, C, H, W], got shape {tuple(x.shape)}")
        return x
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name}: expected shape [B, {', '.join(map(str, image_shape))}], got {tuple(x.shape)}")
    return x


# ----------------------------------------------------------------------------
# Validate a (C, H, W) image shape given by the user.


def as_image_shape(image_shape) -> tuple[int, int, int]:
    """(C, H, W) of positive ints, or one ValueError line."""
    try:
        shape = tuple(int(s) for s in image_shape)
    except TypeError:
        raise ValueError(f"image_shape: expected (C, H, W), got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape: expected (C, H, W) of positive sizes, got {image_shape!r}")
    return shape


# ----------------------------------------------------------------------------
# ‖A‖₂² = λ_max(AᵀA) by power iteration on B random images (max over the batch, for per-image operators).


@torch.no_grad()
def spectral_norm_sq(operator: LinearOperator, image_shape: tuple[int, ...], batch: int = 1, iters: int = 30,
                     generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> float:
    """Largest eigenvalue of AᵀA (the Lipschitz constant of ∇½‖Ax − y‖²), from below; converges geometrically.

    Shapes: image_shape (C, H, W); ``batch`` = the operator's image batch when its buffers carry one per image.
    """
    v = torch.randn([batch, *image_shape], generator=generator, dtype=dtype).to(device)
    norm = v.flatten(1).norm(dim=1)
    for _ in range(iters):
        v = operator.A_adjoint(operator.A(v / append_dims(norm, v.ndim)))
        norm = v.flatten(1).norm(dim=1)
    return float(norm.max())
