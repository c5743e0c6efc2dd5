"""Labelled figure sheets: images with column titles, and per-pixel std maps with a colour bar in image units.

Every sheet the commands write (`solve`, `demo`, `restore`, `calibrate`, bench summaries) goes through
`save_sheet`, so every std map carries its colour bar and every column its label.
Images are [3, H, W] (or [1, H, W]) tensors in [-1, 1]; std maps are [H, W] or [C, H, W] tensors in the same units
(pixel values in [-1, 1]; a std of 0.1 is 5 % of the full range), averaged over channels for display.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sgilo.checkpoints import atomic_write


@dataclass(frozen=True)
class Panel:
    """One cell of a sheet: an image in [-1, 1] ([C, H, W]) or a std map ([H, W] / [C, H, W], kind='std')."""
    image: Tensor
    label: str = ""
    kind: str = "image"          # 'image' or 'std'

    def __post_init__(self) -> None:
        if self.kind not in ("image", "std"):
            raise ValueError(f"panel kind must be 'image' or 'std', got {self.kind!r}")
        if self.image.ndim not in (2, 3):
            raise ValueError(f"panel {self.label!r}: expected an image [C, H, W] or a map [H, W], got shape "
                             f"{tuple(self.image.shape)}")


def _as_display(p: Panel):
    x = p.image.detach().float().cpu()
    if p.kind == "std":
        return (x.mean(0) if x.ndim == 3 else x).numpy()
    if x.ndim == 2:
        x = x[None]
    x = ((x.clamp(-1, 1) + 1) / 2)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def save_sheet(path: str | os.PathLike, rows: list[list[Panel]], title: str | None = None, dpi: int = 110,
               vmax: float | None = None) -> Path:
    """Write a grid of labelled panels to ``path`` (PNG, atomically). Std panels share one colour scale (0 … vmax,
    default: the largest std shown) and each gets a colour bar labelled 'std (pixel units, range [-1, 1])'."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows or not any(rows):
        raise ValueError("save_sheet: expected at least one panel")
    ncol = max(len(r) for r in rows)
    stds = [float(p.image.detach().float().max()) for r in rows for p in r if p.kind == "std"]
    top = vmax if vmax is not None else (max(stds) if stds else 1.0)
    top = top if top > 0 else 1.0
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.9 * ncol + 0.4, 2.05 * len(rows) + (0.3 if title else 0)),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncol):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            p = row[j]
            img = _as_display(p)
            if p.kind == "std":
                im = ax.imshow(img, cmap="magma", vmin=0.0, vmax=top, interpolation="nearest")
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                cb.ax.tick_params(labelsize=6)
                cb.set_label("std (pixel units)", fontsize=6)
            else:
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(p.label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return path


def std_of(samples: Tensor) -> Tensor:
    """Per-pixel sample std [C, H, W] of samples [K, C, H, W] (0 for K = 1)."""
    if samples.ndim != 4:
        raise ValueError(f"expected samples [K, C, H, W], got shape {tuple(samples.shape)}")
    return samples.std(0, correction=1) if samples.shape[0] > 1 else torch.zeros_like(samples[0])
