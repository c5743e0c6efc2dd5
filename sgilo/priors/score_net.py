"""Score network of SGILO's latent priors: a transformer over latent tokens with a time embedding (Daras et al.,
ICML 2022; original: ``sgilo:score/models.py``), predicting the noise ε of x_t = α(t) x_0 + σ(t) ε (Ho et al. 2020).

Tokens: for z [B, L, D] one token per w+ row (L tokens of D features); for h [B, C, r, r] one token per spatial
position (r² tokens of C features). Fixes of the original ViT (docs/original-code.md#bug-15):

* the time embedding is a real d_model-wide vector (Gaussian Fourier features of t → MLP) added to every channel of
  every token, and re-injected before each block through a per-block linear map — the reference added one scalar per
  token to all 1024 channels;
* attention width is d_model split over ``heads`` heads (the reference hard-coded one 64-wide head under a 1024-wide
  residual stream);
* a final LayerNorm before the output projection (absent in the reference); the output layer starts at zero;
* sized for CPU training (d_model 128, depth 4: ≈ 0.9 M parameters, < 2 MB in fp16) instead of 70 M; h maps at
  8×8 and above can use p×p patch tokens (``patch``) to cut the token count by p².

The network sees normalised latents (see `sgilo.priors.scaling`) and returns its output F_θ(u, t) in the same units.
The prior wrapper `sgilo.priors.score.LatentPrior` turns it into ε̂ (optionally with the Gaussian skip σ(t)·u, kept
there as EDM keeps c_skip in its preconditioner) and ε̂ into a score, in exactly one place each.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# Architecture hyper-parameters (stored in the prior's checkpoint).


@dataclass(frozen=True)
class ScoreNetConfig:
    kind: str = "z"                      # 'z' (rows [L, D]) or 'h' (feature maps [C, r, r]).
    latent_shape: tuple = (10, 512)      # Latent shape without batch: (L, D) for z, (C, r, r) for h.
    d_model: int = 128                   # Width of the residual stream.
    depth: int = 4                       # Number of transformer blocks.
    heads: int = 4                       # Attention heads (head width d_model / heads).
    mlp_ratio: int = 4                   # MLP hidden width / d_model.
    fourier_scale: float = 16.0          # Std of the frozen Gaussian Fourier frequencies (Song et al. 2021, App. H).
    patch: int = 1                       # h only: p×p patches become one token of C·p² features (r²/p² tokens).

    def __post_init__(self) -> None:
        object.__setattr__(self, "latent_shape", tuple(int(s) for s in self.latent_shape))
        want = {"z": 2, "h": 3}.get(self.kind)
        if want is None or len(self.latent_shape) != want:
            raise ValueError(f"kind 'z' needs latent_shape (L, D) and 'h' needs (C, r, r); got kind={self.kind!r}, "
                             f"latent_shape={self.latent_shape}")
        if self.patch < 1 or (self.patch > 1 and (self.kind != "h" or self.latent_shape[1] % self.patch)):
            raise ValueError(f"patch must be 1, or divide r for kind 'h'; got patch={self.patch} for {self.kind!r} "
                             f"{self.latent_shape}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by heads {self.heads}")

    @property
    def num_tokens(self) -> int:
        return self.latent_shape[0] if self.kind == "z" else (self.latent_shape[1] // self.patch) ** 2

    @property
    def token_dim(self) -> int:
        return self.latent_shape[1] if self.kind == "z" else self.latent_shape[0] * self.patch ** 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latent_shape"] = list(self.latent_shape)
        return d


# ----------------------------------------------------------------------------
# Gaussian Fourier features of t then a 2-layer MLP → [B, d_model] (Tancik et al. 2020; Song et al. 2021).


class TimeEmbedding(nn.Module):
    def __init__(self, d_model: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(d_model // 2) * scale)
        self.mlp = nn.Sequential(nn.Linear(2 * (d_model // 2), d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: Tensor) -> Tensor:
        arg = 2 * math.pi * t[:, None].float() * self.freqs[None]                 # [B, d/2]
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=1))                 # [B, d]


# ----------------------------------------------------------------------------
# Pre-LN transformer block with multi-head self-attention and a GELU MLP; time injected additively.


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.time = nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        B, T, d = x.shape
        x = x + self.time(temb)[:, None]                                          # [B, T, d]
        q, k, v = self.qkv(self.norm1(x)).reshape(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)                               # [B, heads, T, d/heads]
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.norm2(x))


# ----------------------------------------------------------------------------
# The ε-prediction network F_θ(u_t, t) over latent tokens.


class LatentScoreNet(nn.Module):
    """F_θ(u, t): ε_θ without the prior's Gaussian skip (`sgilo.priors.score.LatentPrior.eps`).

    Shapes: u [B, *latent_shape], t [B] (float, in [0, 1]) → [B, *latent_shape].
    """

    def __init__(self, cfg: ScoreNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.inp = nn.Linear(cfg.token_dim, d)
        self.pos = nn.Parameter(torch.randn(1, cfg.num_tokens, d) * 0.02)
        self.temb = TimeEmbedding(d, cfg.fourier_scale)
        self.blocks = nn.ModuleList([Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.token_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def to_tokens(self, u: Tensor) -> Tensor:
        if self.cfg.kind == "z":
            return u                                                              # [B, L, D]
        B, C, r, _ = u.shape
        p, n = self.cfg.patch, r // self.cfg.patch
        u = u.reshape(B, C, n, p, n, p).permute(0, 2, 4, 1, 3, 5)                 # [B, n, n, C, p, p]
        return u.reshape(B, n * n, C * p * p)                                     # [B, (r/p)², C p²]

    def from_tokens(self, x: Tensor) -> Tensor:
        if self.cfg.kind == "z":
            return x
        C, r, _ = self.cfg.latent_shape
        p, n = self.cfg.patch, r // self.cfg.patch
        x = x.reshape(x.shape[0], n, n, C, p, p).permute(0, 3, 1, 4, 2, 5)        # [B, C, n, p, n, p]
        return x.reshape(x.shape[0], C, r, r)                                     # [B, C, r, r]

    def forward(self, u: Tensor, t: Tensor) -> Tensor:
        assert_shape(u, [None, *self.cfg.latent_shape], "u")
        assert_shape(t, [u.shape[0]], "t")
        temb = self.temb(t)                                                       # [B, d]
        x = self.inp(self.to_tokens(u)) + self.pos + temb[:, None]                # [B, T, d]
        for block in self.blocks:
            x = block(x, temb)
        return self.from_tokens(self.out(self.norm(x)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
