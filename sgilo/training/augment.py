"""Differentiable augmentation for data-efficient GAN training (DiffAugment, Zhao et al., NeurIPS 2020).

The same random colour / translation / cutout transforms are applied to real and generated images before the
discriminator, and gradients flow through them to the generator. Policy 'color,translation,cutout' as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


# ----------------------------------------------------------------------------
# Colour: brightness ±0.5, saturation ×[0, 2], contrast ×[0.5, 1.5] (on images in [-1, 1]).


def rand_color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    B = x.shape[0]
    r = torch.rand([B, 3, 1, 1, 1], generator=generator, device=x.device, dtype=torch.float32).to(x.dtype)
    x = x + (r[:, 0] - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (r[:, 1] * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (r[:, 2] + 0.5) + mean


# ----------------------------------------------------------------------------
# Translation by up to 1/8 of the image size, zero-filled (done with integer gathers, differentiable in x).


def rand_translation(x: Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> Tensor:
    B, C, H, W = x.shape
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, [B, 1, 1], generator=generator, device=x.device)
    ty = torch.randint(-sw, sw + 1, [B, 1, 1], generator=generator, device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(B, device=x.device), torch.arange(H, device=x.device),
                                torch.arange(W, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, H + 1)
    gy = torch.clamp(gy + ty + 1, 0, W + 1)
    xp = F.pad(x, [1, 1, 1, 1])
    return xp.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------
# Cutout: zero a random square of half the image size.


def rand_cutout(x: Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    B, C, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    ox = torch.randint(0, H + (1 - ch % 2), [B, 1, 1], generator=generator, device=x.device)
    oy = torch.randint(0, W + (1 - cw % 2), [B, 1, 1], generator=generator, device=x.device)
    gx = torch.arange(ch, device=x.device).reshape(1, -1, 1) + ox - ch // 2
    gy = torch.arange(cw, device=x.device).reshape(1, 1, -1) + oy - cw // 2
    mask = torch.ones(B, H, W, device=x.device, dtype=x.dtype)
    gb = torch.arange(B, device=x.device).reshape(-1, 1, 1).expand(B, ch, cw)
    mask[gb, gx.clamp(0, H - 1).expand(B, ch, cw), gy.clamp(0, W - 1).expand(B, ch, cw)] = 0
    return x * mask.unsqueeze(1)


# ----------------------------------------------------------------------------
# Apply a comma-separated policy.


def diff_augment(x: Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None) -> Tensor:
    for name in [p for p in policy.split(",") if p]:
        if name == "color":
            x = rand_color(x, generator)
        elif name == "translation":
            x = rand_translation(x, generator=generator)
        elif name == "cutout":
            x = rand_cutout(x, generator=generator)
        else:
            raise ValueError(f"unknown DiffAugment op {name!r}, expected color, translation or cutout")
    return x
