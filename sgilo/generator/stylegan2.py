"""StyleGAN-2 generator (Karras et al., CVPR 2020, "Analyzing and Improving the Image Quality of StyleGAN").

A re-implementation of the mapping and synthesis networks with the NVlabs `stylegan2-ada-pytorch` parameter names, so an
NVlabs ``G_ema`` state dict maps one-to-one (``mapping.fc{i}.*``, ``mapping.w_avg``, ``synthesis.b{res}.{const,conv0,
conv1,torgb}.*``). Only the 'skip' output architecture and unconditional models (c_dim = 0) are supported, which is what
every public face checkpoint uses.

Modulated convolutions use the non-fused form (scale inputs by the style, shared-weight convolution, scale outputs by the
demodulation coefficients), which is mathematically identical to the fused grouped form (Karras et al. 2020, Eq. 1-3)
and lets one batched convolution serve the whole batch.

The synthesis network can be cut before any block: see `head`/`tail` and `IntermediateState` in `sgilo.generator.split`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgilo.utils.shapes import assert_shape

SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------
# Architecture hyper-parameters; defaults are the NVlabs FFHQ config-f values.


@dataclass(frozen=True)
class GeneratorConfig:
    z_dim: int = 512                   # Input latent (Z) dimensionality.
    w_dim: int = 512                   # Intermediate latent (W) dimensionality.
    img_resolution: int = 1024         # Output resolution, a power of two in 16..1024.
    img_channels: int = 3              # Number of output colour channels.
    channel_base: int = 32768          # Channels at resolution r: min(channel_base // r, channel_max).
    channel_max: int = 512             # Maximum number of channels in any layer.
    mapping_layers: int = 8            # Number of fully-connected layers in the mapping network.
    mapping_lr_multiplier: float = 0.01  # Learning-rate multiplier of the mapping network (equalised lr).
    w_avg_beta: float = 0.995          # Decay of the tracked average of W during training.
    conv_clamp: float | None = None    # Clamp activations to +-conv_clamp (NVlabs ADA models use 256).

    def __post_init__(self) -> None:
        r = self.img_resolution
        if r < 16 or r > 1024 or r & (r - 1):
            raise ValueError(f"img_resolution must be a power of two in 16..1024, got {r}")

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    def channels(self, res: int) -> int:
        """Channel count at resolution ``res``: min(channel_base / res, channel_max)."""
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        """Number of w+ rows: one per conv layer plus the last toRGB (2 per block)."""
        return 2 * len(self.block_resolutions)

    @property
    def noise_resolutions(self) -> list[int]:
        """Resolution of each per-layer noise input in layer order (b4.conv1, b8.conv0, b8.conv1, ...)."""
        return [4] + [r for r in self.block_resolutions[1:] for _ in range(2)]

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------
# Pixel-norm of the input latent: z / sqrt(mean(z^2) + eps).


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ----------------------------------------------------------------------------
# Bias + activation with the StyleGAN gain: lrelu(x + b) * sqrt(2), optionally clamped.


def bias_act(x: Tensor, b: Tensor, act: str, clamp: float | None = None) -> Tensor:
    x = x + b.reshape(1, -1, *([1] * (x.ndim - 2))).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2) * SQRT2
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}, expected 'lrelu' or 'linear'")
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# ----------------------------------------------------------------------------
# Per-(sample, channel) scaling x ⊙ s in x's memory format. For a channels-last x the product is taken on its NHWC view,
# where s broadcasts along the contiguous dimension: on CPUs the NCHW-shaped broadcast [B, C, 1, 1] over a channels-last
# tensor measured 2× slower than the NHWC one (4.3 vs 2.2 ms at [32, 32, 64, 64], 2 threads).


def _channels_last(x: Tensor) -> bool:
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def scale_channels(x: Tensor, s: Tensor) -> Tensor:
    """Shapes: x [B, C, H, W], s [B, C] → [B, C, H, W]."""
    s = s.to(x.dtype)
    if _channels_last(x):
        return (x.permute(0, 2, 3, 1) * s[:, None, None, :]).permute(0, 3, 1, 2)
    return x * s[:, :, None, None]


# ----------------------------------------------------------------------------
# The modulated conv's epilogue, lrelu(x ⊙ d + g·noise + b) · √2 (then the optional clamp), in three passes over x:
# √2 is folded into the coefficients (leaky ReLU is positively homogeneous), demodulation and bias are one addcmul.


def demod_noise_bias_lrelu(x: Tensor, d: Tensor, noise: Tensor | None, strength: Tensor, bias: Tensor,
                           clamp: float | None = None) -> Tensor:
    """Shapes: x [B, C, H, W], d [B, C], noise [B|1, 1, H, W] or None, strength [], bias [C] → [B, C, H, W]."""
    cl, dt = _channels_last(x), x.dtype
    xv = x.permute(0, 2, 3, 1) if cl else x
    dv = (d * SQRT2).to(dt)
    dv = dv[:, None, None, :] if cl else dv[:, :, None, None]
    bv = (bias * SQRT2).to(dt)
    y = torch.addcmul(bv if cl else bv[:, None, None], xv, dv)
    if noise is not None:
        n = noise.to(dt) * (strength * SQRT2).to(dt)
        y = y.add_(n.permute(0, 2, 3, 1) if cl else n)
    y = F.leaky_relu_(y, 0.2)
    if clamp is not None:
        y = y.clamp(-clamp, clamp)                                    # out of place: lrelu_ saved y
    return y.permute(0, 3, 1, 2) if cl else y


# ----------------------------------------------------------------------------
# 2-D FIR filter from a 1-D tap list: outer product normalised to sum 1 (NVlabs `setup_filter`).


def make_fir(taps: tuple[float, ...] = (1, 3, 3, 1)) -> Tensor:
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


# ----------------------------------------------------------------------------
# Upsample-FIR-downsample (upfirdn2d, reference semantics): zero-insertion, pad, true convolution, gain.


def upfirdn2d(x: Tensor, f: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> Tensor:
    """Shapes: x [B, C, H, W], f [fh, fw]; pad = (x0, x1, y0, y1). Returns [B, C, H', W']."""
    B, C, H, W = x.shape
    if up > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(B, C, H * up, W * up)                           # [B, C, H*up, W*up]
    x = F.pad(x, list(pad))
    w = (f * gain).flip([0, 1]).to(x.dtype)[None, None].repeat(C, 1, 1, 1)  # [C, 1, fh, fw]
    x = F.conv2d(x, w, groups=C)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


# ----------------------------------------------------------------------------
# Equalised-learning-rate fully connected layer (NVlabs names: weight, bias).


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_multiplier: float = 1.0,
                 activation: str = "linear") -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, self.activation)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.activation}"


# ----------------------------------------------------------------------------
# Mapping network f: z -> w (8-layer MLP, Karras et al. 2019 Sec. 2), broadcast to w+ with truncation.


class MappingNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.w_dim, cfg.num_ws
        self.w_avg_beta = cfg.w_avg_beta
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            layer = FullyConnectedLayer(dims[i], dims[i + 1], activation="lrelu", lr_multiplier=cfg.mapping_lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.num_layers = cfg.mapping_layers
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z: Tensor, truncation_psi: float = 1.0, update_w_avg: bool = False,
                broadcast: bool = True) -> Tensor:
        """Shapes: z [B, z_dim] -> w+ [B, num_ws, w_dim] (or w [B, w_dim] when broadcast=False)."""
        assert_shape(z, [None, self.z_dim], "z")
        x = normalize_2nd_moment(z.float())
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1.0:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)           # w_avg + psi (w - w_avg)
        if broadcast:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)                  # [B, num_ws, w_dim]
        return x


# ----------------------------------------------------------------------------
# Modulated 3x3 conv + noise + bias/act (Karras et al. 2020, Eq. 1-3); optional 2x upsampling.


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.register_buffer("resample_filter", make_fir())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        """Shapes: x [B, Cin, r/up, r/up], w [B, w_dim], noise [B or 1, 1, r, r] or None -> [B, Cout, r, r]."""
        styles = self.affine(w)                                            # [B, Cin]
        weight = self.weight.to(x.dtype)
        # Σ_{i,k} (w_oik s_i)² = Σ_i s_i² Σ_k w_oik²: one [B, Cin] x [Cin, Cout] product instead of a [B, O, I, 3, 3] tensor.
        w2 = self.weight.float().square().sum([2, 3])                      # [Cout, Cin]
        dcoefs = (styles.float().square() @ w2.t() + 1e-8).rsqrt()         # [B, Cout]  (Eq. 3)
        x = scale_channels(x, styles)                                      # (Eq. 1) on the activations
        if self.up == 1:
            x = F.conv2d(x, weight, padding=1)
        else:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)   # [B, Cout, 2r+1, 2r+1]
            x = upfirdn2d(x, self.resample_filter, pad=(1, 1, 1, 1), gain=4.0)  # [B, Cout, 2r, 2r]
        return demod_noise_bias_lrelu(x, dcoefs, noise, self.noise_strength, self.bias, self.conv_clamp)

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, res={self.resolution}, up={self.up}"


# ----------------------------------------------------------------------------
# Modulated 1x1 conv to RGB, no demodulation.


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.conv_clamp = in_channels, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain                         # [B, Cin]
        x = F.conv2d(scale_channels(x, styles), self.weight.to(x.dtype))
        return bias_act(x, self.bias, "linear", self.conv_clamp)


# ----------------------------------------------------------------------------
# One resolution block (skip architecture): [conv0 (up)], conv1, toRGB; RGB skip image accumulated.


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1
        self.register_buffer("resample_filter", make_fir())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noises: list[Tensor | None]) -> tuple[Tensor, Tensor]:
        """Shapes: x [B, Cin, r/2, r/2] (None for the 4x4 block), img [B, 3, r/2, r/2] or None,
        ws [B, num_conv + 1, w_dim], noises: num_conv maps [B|1, 1, r, r] or None. Returns (x [B, Cout, r, r], img [B, 3, r, r])."""
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).to(ws.dtype if x is None else x.dtype)
            x = x.contiguous(memory_format=torch.channels_last)             # NHWC: faster oneDNN/cuDNN convs
            x = self.conv1(x, ws[:, 0], noises[0])
        else:
            x = self.conv0(x, ws[:, 0], noises[0])
            x = self.conv1(x, ws[:, 1], noises[1])
        if img is not None:
            img = upfirdn2d(img, self.resample_filter, up=2, pad=(2, 1, 2, 1), gain=4.0)   # [B, 3, r, r]
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else img + y.to(img.dtype)
        return x, img


# ----------------------------------------------------------------------------
# The synthesis network g: w+ -> image, as a sequence of blocks that `sgilo.generator.split` can cut.


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = cfg.num_ws
        self.w_dim = cfg.w_dim
        for res in self.block_resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(in_ch, cfg.channels(res), cfg.w_dim, res, cfg.img_channels, cfg.conv_clamp)
            setattr(self, f"b{res}", block)

    @property
    def num_blocks(self) -> int:
        return len(self.block_resolutions)

    def block(self, k: int) -> SynthesisBlock:
        return getattr(self, f"b{self.block_resolutions[k]}")

    def block_ws(self, ws: Tensor, k: int) -> Tensor:
        """w+ rows used by block k: rows 2k-1 .. 2k+1 (2k-1 shared with block k-1's toRGB); block 0 uses rows 0, 1."""
        start = max(2 * k - 1, 0)
        return ws[:, start:start + self.block(k).num_conv + 1]

    @staticmethod
    def noise_index(k: int) -> int:
        """Index of block k's first noise input in the flat per-layer noise list."""
        return max(2 * k - 1, 0)

    def block_noises(self, noises: list[Tensor | None], k: int) -> list[Tensor | None]:
        i = self.noise_index(k)
        return noises[i:i + self.block(k).num_conv]

    def noise_layers(self) -> list[SynthesisLayer]:
        """The synthesis layers that take a noise input, in flat noise-list order."""
        return [layer for k in range(self.num_blocks) for layer in
                ([self.block(k).conv0] if self.block(k).num_conv == 2 else []) + [self.block(k).conv1]]

    def make_noises(self, batch: int, mode: str = "random", generator: torch.Generator | None = None,
                    device: torch.device | None = None) -> list[Tensor | None]:
        """Per-layer noise maps [B, 1, r, r] (mode 'random'), the stored constants (mode 'const') or None (mode 'none')."""
        layers = self.noise_layers()
        if mode == "none":
            return [None] * len(layers)
        if mode == "const":
            return [layer.noise_const.reshape(1, 1, layer.resolution, layer.resolution).expand(batch, -1, -1, -1).clone()
                    for layer in layers]
        if mode == "random":
            dev = device if device is not None else self.b4.const.device
            return [torch.randn([batch, 1, layer.resolution, layer.resolution], generator=generator, device=dev)
                    for layer in layers]
        raise ValueError(f"noise mode must be 'random', 'const' or 'none', got {mode!r}")

    def run_blocks(self, ws: Tensor, x: Tensor | None, img: Tensor | None, noises: list[Tensor | None],
                   start: int, stop: int) -> tuple[Tensor | None, Tensor | None]:
        """Apply blocks start..stop-1 to (x, img). Shapes as in SynthesisBlock.forward."""
        for k in range(start, stop):
            x, img = self.block(k)(x, img, self.block_ws(ws, k), self.block_noises(noises, k))
        return x, img

    def forward(self, ws: Tensor, noise_mode: str = "const", noises: list[Tensor | None] | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Shapes: ws [B, num_ws, w_dim] -> image [B, img_channels, R, R] in about [-1, 1]."""
        assert_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        if noises is None:
            noises = self.make_noises(ws.shape[0], noise_mode, generator, ws.device)
        _, img = self.run_blocks(ws, None, None, noises, 0, self.num_blocks)
        return img


# ----------------------------------------------------------------------------
# Full generator G = g ∘ f, NVlabs layout (`mapping`, `synthesis`).


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or GeneratorConfig()
        self.z_dim, self.w_dim = self.cfg.z_dim, self.cfg.w_dim
        self.img_resolution, self.img_channels = self.cfg.img_resolution, self.cfg.img_channels
        self.mapping = MappingNetwork(self.cfg)
        self.synthesis = SynthesisNetwork(self.cfg)
        self.num_ws = self.cfg.num_ws

    def forward(self, z: Tensor, truncation_psi: float = 1.0, noise_mode: str = "const",
                generator: torch.Generator | None = None) -> Tensor:
        """Shapes: z [B, z_dim] -> image [B, C, R, R]."""
        ws = self.mapping(z, truncation_psi=truncation_psi)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator)

    def freeze(self) -> Generator:
        """Freeze for use as a prior: eval mode, no weight gradients (docs/original-code.md#bug-18)."""
        return self.eval().requires_grad_(False)

    def num_parameters(self, part: str = "all") -> int:
        module = {"all": self, "mapping": self.mapping, "synthesis": self.synthesis}[part]
        return int(sum(np.prod(p.shape) for p in module.parameters()))

    def extra_repr(self) -> str:
        c = self.cfg
        return f"res={c.img_resolution}, z_dim={c.z_dim}, w_dim={c.w_dim}, num_ws={c.num_ws}"
