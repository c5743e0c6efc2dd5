"""Inpainting operators for SGILO (Daras et al., ICML 2022) and ILO (Daras et al., ICML 2021): y = M ⊙ x.

The mask M ∈ {0, 1}^{H×W} (1 = observed) is shared across channels and across the batch. The measurement keeps the
image shape [B, C, H, W] with zeros in the holes. The reference produced masks offline (ILO `prepare_image.py`: a
bounding box, or Bernoulli pixel removal) and re-detected them as pure-black pixels (``ilo:ilo_stylegan.py``), which
fails on lossy files and on genuinely black pixels; here the mask is an explicit buffer. The random mask keeps *exactly*
max(1, round(p·H·W)) pixels drawn without replacement (not Bernoulli), so p = 0.001 still observes something.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgilo.operators.base import LinearOperator, NoiseModel, as_rgb, check_image


# ----------------------------------------------------------------------------
# y = M ⊙ x with a fixed {0, 1} mask shared across channels.


class Inpainting(LinearOperator):
    """A(x) = M ⊙ x, Aᵀ = A† = A (an orthogonal projection).

    Shapes: mask [H, W] (or [1, 1, H, W]); x [B, C, H, W]; y [B, C, H, W] with zeros where M = 0.
    """

    def __init__(self, mask: Tensor, noise: NoiseModel | None = None) -> None:
        super().__init__(noise)
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask: expected a torch.Tensor, got {type(mask).__name__}")
        if mask.ndim == 4 and mask.shape[:2] == (1, 1):
            mask = mask[0, 0]
        if mask.ndim != 2:
            raise ValueError(f"mask: expected shape [H, W] or [1, 1, H, W], got {tuple(mask.shape)}")
        values = mask.unique()
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(f"mask: expected values in {{0, 1}}, got {values[:5].tolist()}")
        if not bool(mask.any()):
            raise ValueError("mask: expected at least one observed pixel (value 1), got none")
        self.register_buffer("mask", mask.to(torch.float32)[None, None].clone())  # [1, 1, H, W]

    @property
    def image_hw(self) -> tuple[int, int]:
        return tuple(self.mask.shape[-2:])

    @property
    def observed_fraction(self) -> float:
        return float(self.mask.mean())

    def A(self, x: Tensor) -> Tensor:
        check_image(x, None)
        if tuple(x.shape[-2:]) != self.image_hw:
            raise ValueError(f"x: expected spatial size {self.image_hw}, got {tuple(x.shape[-2:])}")
        return x * self.mask.to(x.dtype)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.A(y)

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y = M ⊙ noise(M ⊙ x): noise in the holes is never observed, so the holes stay exactly 0."""
        return self.A(self.noise(self.A(x), generator=generator))

    def to_image(self, y: Tensor, image_shape: tuple[int, int, int]) -> Tensor:
        """Observed pixels, missing ones mid-grey (0). Shapes: y [B, C, H, W] → [B, 3, H, W]."""
        return as_rgb(torch.where(self.mask.to(y.dtype) > 0, y, torch.zeros_like(y)))

    def get_config(self) -> dict:
        return {"mask_shape": list(self.image_hw)}

    @classmethod
    def from_config(cls, cfg: dict) -> Inpainting:
        return cls(torch.ones(*cfg["mask_shape"]))

    # ------------------------------------------------------------------------
    # Constructors: a rectangular hole, a random pixel subset, a user mask image.

    @classmethod
    def box(cls, image_hw: tuple[int, int], box: tuple[int, int, int, int] | None = None,
            noise: NoiseModel | None = None) -> Inpainting:
        """Hole = columns x0:x1, rows y0:y1 (half-open, pixels); default the centred half-size box."""
        H, W = int(image_hw[0]), int(image_hw[1])
        x0, y0, x1, y1 = default_box(H, W) if box is None else tuple(int(v) for v in box)
        if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            raise ValueError(f"box: expected 0 <= x0 < x1 <= {W} and 0 <= y0 < y1 <= {H} (x0,y0,x1,y1), "
                             f"got {(x0, y0, x1, y1)}")
        if (x1 - x0) * (y1 - y0) == H * W:
            raise ValueError(f"box: the hole {(x0, y0, x1, y1)} covers the whole {W}x{H} image; nothing is observed")
        mask = torch.ones(H, W)
        mask[y0:y1, x0:x1] = 0
        return cls(mask, noise)

    @classmethod
    def random(cls, image_hw: tuple[int, int], p: float, seed: int, noise: NoiseModel | None = None) -> Inpainting:
        """Keep exactly max(1, round(p·H·W)) pixels chosen uniformly without replacement (seeded)."""
        H, W = int(image_hw[0]), int(image_hw[1])
        if not (0 < p <= 1):
            raise ValueError(f"observed fraction p: expected 0 < p <= 1, got {p!r}")
        n_keep = max(1, round(p * H * W))
        g = torch.Generator().manual_seed(int(seed))
        keep = torch.randperm(H * W, generator=g)[:n_keep]
        mask = torch.zeros(H * W)
        mask[keep] = 1
        return cls(mask.reshape(H, W), noise)  # [H, W]

    @classmethod
    def from_image(cls, path: str, image_hw: tuple[int, int], noise: NoiseModel | None = None) -> Inpainting:
        """Mask image of exactly H×W pixels: white (≥ 128 grey) = observed, black = missing."""
        from sgilo.utils.images import load_mask
        return cls(load_mask(path, image_hw)[0, 0], noise)


# ----------------------------------------------------------------------------
# The default hole: the centred box of half the height and width (centre 32×32 of a 64×64 image).


def default_box(H: int, W: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the centred half-size box."""
    h, w = max(1, H // 2), max(1, W // 2)
    y0, x0 = (H - h) // 2, (W - w) // 2
    return x0, y0, x0 + w, y0 + h
