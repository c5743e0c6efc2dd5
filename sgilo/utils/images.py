"""Image I/O for SGILO (Daras et al., ICML 2022): PNG/JPEG ↔ tensors in [-1, 1], masks, grids.

(Measurement previews are `LinearOperator.to_image`: each operator knows how to show its own measurement.)

Conventions: images are float tensors in [-1, 1] (−1 = black, 1 = white). Saving always maps the FIXED range
[-1, 1] → [0, 255] (values outside are clipped) — never a per-image min–max stretch, which would hide the brightness
and contrast errors a reconstruction makes. Loading centre-crops to a square and resizes (bicubic) to the model's
resolution, logging one line when it does. Transparency (RGBA, LA, palette with transparency) is composited on white.
All writes are atomic (`sgilo.checkpoints.atomic_write`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from sgilo.checkpoints import atomic_write

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# Open an image file or fail with one line.


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: expected an image file (PNG, JPEG, …), could not read it ({type(e).__name__})") \
            from None
    return img


# ----------------------------------------------------------------------------
# Any mode → RGB, compositing transparency on white.


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


# ----------------------------------------------------------------------------
# Load an image as [1, 3, R, R] in [-1, 1].


def load_image(path: str | os.PathLike, resolution: int) -> Tensor:
    """Read PNG/JPEG (any size, greyscale → 3 channels, alpha composited on white), centre-crop, resize.

    Shapes: returns [1, 3, R, R] float32 in [-1, 1].
    """
    if not (isinstance(resolution, int) and resolution >= 1):
        raise ValueError(f"resolution: expected a positive integer, got {resolution!r}")
    img = _to_rgb(_open(path))
    W, H = img.size
    side = min(W, H)
    if (W, H) != (resolution, resolution):
        left, top = (W - side) // 2, (H - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.BICUBIC)
        log.info("%s: %dx%d image centre-cropped to %dx%d and resized to %dx%d", path, W, H, side, side,
                 resolution, resolution)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0  # [R, R, 3]
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()  # [1, 3, R, R]


# ----------------------------------------------------------------------------
# Load an inpainting mask: white = observed (1), black = missing (0).


def load_mask(path: str | os.PathLike, shape: tuple[int, int]) -> Tensor:
    """Read a mask image of exactly `shape` = (H, W) pixels; grey ≥ 128 → 1 (observed), else 0.

    Shapes: returns [1, 1, H, W] float32 in {0, 1}. A wrong size is an error (masks are never resized).
    """
    img = _open(path)
    H, W = int(shape[0]), int(shape[1])
    if img.size != (W, H):
        raise ValueError(f"{path}: wrong mask size: expected {W}x{H} pixels (W x H), got {img.size[0]}x{img.size[1]}")
    grey = np.asarray(_to_rgb(img).convert("L"), dtype=np.uint8)
    return torch.from_numpy((grey >= 128).astype(np.float32))[None, None]  # [1, 1, H, W]


# ----------------------------------------------------------------------------
# [-1, 1] → uint8 with the fixed range (clip, then round).


def to_uint8(x: Tensor) -> Tensor:
    """u = round(clip((x + 1) / 2, 0, 1) · 255). Any shape; returns uint8 on the CPU."""
    return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)


# ----------------------------------------------------------------------------
# Save one image [C, H, W] or [1, C, H, W] (C ∈ {1, 3}) atomically; the format follows the file extension.


def save_image(x: Tensor, path: str | os.PathLike) -> None:
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"save_image: expected [C, H, W] or [1, C, H, W] with C in (1, 3), got {tuple(x.shape)}")
    arr = to_uint8(x).permute(1, 2, 0).numpy()  # [H, W, C]
    img = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr))  # L or RGB
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: expected an image file extension such as .png or .jpg, got {Path(path).suffix!r}")
    atomic_write(path, lambda p: img.save(p, format=fmt))


# ----------------------------------------------------------------------------
# Tile N images into a grid with `pad` white pixels between them and save it.


def save_image_grid(x: Tensor, path: str | os.PathLike, nrow: int | None = None, pad: int = 2) -> None:
    """Shapes: x [N, C, H, W] in [-1, 1]; `nrow` images per row (default ⌈√N⌉, never more than N). One image is
    saved as itself, without a border, so it can be fed back as an input image."""
    if x.ndim != 4:
        raise ValueError(f"save_image_grid: expected [N, C, H, W], got {tuple(x.shape)}")
    N, C, H, W = x.shape
    if N == 1:
        save_image(x[0].clamp(-1, 1), path)
        return
    ncol = min(nrow or math.ceil(math.sqrt(N)), N)
    rows = math.ceil(N / ncol)
    grid = x.new_ones(C, rows * (H + pad) + pad, ncol * (W + pad) + pad)  # [C, H', W'] white background
    for i in range(N):
        r, c = divmod(i, ncol)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[:, top:top + H, left:left + W] = x[i].clamp(-1, 1)
    save_image(grid, path)
