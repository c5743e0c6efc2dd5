"""StyleGAN-2 residual discriminator (Karras et al., CVPR 2020, Fig. 7b) with minibatch standard deviation.

Used only for training generators; its parameter names follow the NVlabs layout (b{res}.fromrgb / conv0 / conv1 /
skip, b4.mbstd / conv / fc / out) but we never need to load NVlabs discriminators.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgilo.generator.stylegan2 import FullyConnectedLayer, bias_act, make_fir, upfirdn2d


# ----------------------------------------------------------------------------
# Equalised-lr conv with optional FIR-filtered 2x downsampling (blur, then strided conv).


class Conv2dLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1) -> None:
        super().__init__()
        self.activation, self.down, self.kernel_size = activation, down, kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.register_buffer("resample_filter", make_fir())

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down > 1:
            # Blur so that the strided conv is anti-aliased; padding keeps the output at exactly r/2.
            p = (4 - 2) + (self.kernel_size - 1)
            x = upfirdn2d(x, self.resample_filter, pad=((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel_size // 2)
        if self.bias is None:
            return x * gain if gain != 1 else x
        x = bias_act(x, self.bias, self.activation)
        return x * gain if gain != 1 else x


# ----------------------------------------------------------------------------
# One residual block: conv0 (3x3), conv1 (3x3, down 2) + skip (1x1, down 2), summed with gain sqrt(1/2).


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int, first: bool) -> None:
        super().__init__()
        self.first = first
        if first:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu")
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor) -> Tensor:
        if self.first:
            x = self.fromrgb(x)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


# ----------------------------------------------------------------------------
# Minibatch standard deviation layer (Karras et al. 2018, Sec. 3), group size 4, one feature.


class MinibatchStdLayer(nn.Module):
    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        G = min(self.group_size, N) if N % min(self.group_size, N) == 0 else 1
        F_ = self.num_channels
        y = x.float().reshape(G, -1, F_, C // F_, H, W)                  # [G, N/G, F, C/F, H, W]
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()              # [N/G, F, C/F, H, W]
        y = y.mean([2, 3, 4]).reshape(-1, F_, 1, 1).repeat(G, 1, H, W)    # [N, F, H, W]
        return torch.cat([x, y.to(x.dtype)], 1)


# ----------------------------------------------------------------------------
# Discriminator D: image [B, C, R, R] -> logit [B, 1].


class Discriminator(nn.Module):
    def __init__(self, img_resolution: int, img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512,
                 mbstd_group_size: int = 4) -> None:
        super().__init__()
        self.img_resolution = img_resolution
        res_log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(res_log2, 2, -1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
        for i, res in enumerate(self.block_resolutions):
            block = DiscriminatorBlock(ch[res] if i else 0, ch[res], ch[res // 2], img_channels, first=(i == 0))
            setattr(self, f"b{res}", block)
        self.mbstd = MinibatchStdLayer(mbstd_group_size)
        self.conv = Conv2dLayer(ch[4] + 1, ch[4], 3, activation="lrelu")
        self.fc = FullyConnectedLayer(ch[4] * 16, ch[4], activation="lrelu")
        self.out = FullyConnectedLayer(ch[4], 1)

    def forward(self, img: Tensor) -> Tensor:
        x = img
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        x = self.conv(self.mbstd(x))                                        # [B, C4, 4, 4]
        x = self.fc(x.flatten(1).float())
        return self.out(x)                                                   # [B, 1]
