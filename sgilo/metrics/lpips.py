"""LPIPS perceptual distance (Zhang et al., CVPR 2018) with a VGG-16 backbone, from LOCAL weights only.

The reference (SGILO/ILO, Daras et al.) used LPIPS-VGG as a loss term and downloaded its weights at run time; here
nothing is ever downloaded: the user passes a `.safetensors` file (`--lpips-weights PATH`) with this layout:

* ``features.{i}.weight`` [C_out, C_in, 3, 3] and ``features.{i}.bias`` [C_out] for the 13 convolutions of VGG-16,
  i ∈ {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28} (torchvision's `vgg16().features` indices, so a converted
  torchvision state dict works as is);
* ``lin{k}.weight`` [1, C_k, 1, 1], k = 0..4, the non-negative linear calibration weights applied to the five taps
  relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the `lpips` package's ``lin{k}.model.1.weight``).

Channel widths are read from the file (the standard 64-128-256-512-512, or narrower for tests).
d(x, x') = Σ_k mean_{h,w} Σ_c w_kc (f̂_k(x) − f̂_k(x'))², f̂ = features normalised to unit length over channels,
after the input scaling (x − shift) / scale of the original implementation.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgilo.checkpoints import read_safetensors
from sgilo.errors import CheckpointKeyError
from sgilo.utils.shapes import assert_shape

VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_BLOCKS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


# ----------------------------------------------------------------------------
# LPIPS-VGG as a module built from a state dict with the documented layout.


class LPIPS(nn.Module):
    """Learned perceptual distance. Shapes: x, x' [B, 3, H, W] in [-1, 1] → [B] (H, W ≥ 16)."""

    def __init__(self, weights: str | os.PathLike | None) -> None:
        super().__init__()
        if weights is None:
            raise ValueError("LPIPS needs local VGG-16 + linear weights: pass --lpips-weights PATH.safetensors "
                             "(layout in sgilo/metrics/lpips.py); nothing is downloaded")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weights not found: {path}")
        sd = read_safetensors(path, "LPIPS weights file")[0]
        expected = {f"features.{i}.{p}" for i in VGG16_CONVS for p in ("weight", "bias")}
        expected |= {f"lin{k}.weight" for k in range(5)}
        missing, extra = sorted(expected - sd.keys()), sorted(sd.keys() - expected)
        if missing or extra:
            bad = f"missing key {missing[0]!r}" if missing else f"unexpected key {extra[0]!r}"
            raise CheckpointKeyError(f"{path}: not an LPIPS-VGG weight file: {bad}")
        self.convs = nn.ModuleDict()
        for i in VGG16_CONVS:
            w = sd[f"features.{i}.weight"].float()
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(sd[f"features.{i}.bias"].float())
            self.convs[str(i)] = conv
        for k in range(5):
            self.register_buffer(f"lin{k}", sd[f"lin{k}.weight"].float())  # [1, C_k, 1, 1]
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None])
        self.eval().requires_grad_(False)

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five unit-normalised feature maps relu1_2 … relu5_3."""
        h = (x - self.shift) / self.scale
        out = []
        for b, block in enumerate(VGG16_BLOCKS):
            if b > 0:
                h = F.max_pool2d(h, 2)
            for i in block:
                h = F.relu(self.convs[str(i)](h))
            out.append(h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        assert_shape(x, [None, 3, None, None], "x")
        assert_shape(ref, list(x.shape), "ref")
        d = x.new_zeros(x.shape[0])
        for k, (a, b) in enumerate(zip(self.taps(x), self.taps(ref), strict=True)):
            d = d + ((a - b).square() * getattr(self, f"lin{k}")).sum(1).mean((1, 2))
        return d
