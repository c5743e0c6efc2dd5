"""Decoding prior samples through the generator: new latents from a SGILO prior (Daras et al., ICML 2022) become
images via the StyleGAN-2 tail, and the hot start "naturalises" an off-manifold latent (the reference's all-ones z).

A z-prior's sample is decoded as G(GaussianizedW(z)). An h-prior at split layer k replaces h_k in the state of a
Gaussian z (its w+ rows, constant noise and accumulated skip image) and runs the tail from block k.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgilo.generator import GaussianizedW, Generator, head, tail
from sgilo.priors.score import LatentPrior


# ----------------------------------------------------------------------------
# Latent → image for a prior's kind: z → G(fit(z)); h_k → tail_k(state of z with h_k replaced).


@torch.no_grad()
def decode(G: Generator, fit: GaussianizedW, prior: LatentPrior, latent: Tensor, base_z: Tensor) -> Tensor:
    """Shapes: latent [B, *prior.latent_shape], base_z [B, L, D] (w+ rows for an h latent) → image [B, C, R, R]."""
    if prior.kind == "z":
        return G.synthesis(fit(latent), noise_mode="const")
    state = head(G.synthesis, fit(base_z), prior.layer, noise_mode="const")
    state.h = latent
    return tail(G.synthesis, state)


# ----------------------------------------------------------------------------
# Draw n latents from the prior (PC sampler by default) and decode them.


@torch.no_grad()
def sample_images(G: Generator, fit: GaussianizedW, prior: LatentPrior, n: int, generator: torch.Generator | None,
                  **sampler_kwargs) -> Tensor:
    """Returns images [n, C, R, R] in about [-1, 1]; ``sampler_kwargs`` go to `LatentPrior.sample`."""
    device = G.synthesis.b4.const.device
    base_z = torch.randn([n, G.num_ws, G.w_dim], generator=generator, device=device)
    latent = prior.to(device).sample(n, generator, device, **sampler_kwargs)
    return decode(G, fit, prior, latent, base_z)


# ----------------------------------------------------------------------------
# Before/after pairs of the hot start from an off-manifold latent: the all-ones z (the original's initialisation), or
# a random latent with Gaussian noise of `noise` × the prior's per-feature std added.


@torch.no_grad()
def naturalize_pairs(G: Generator, fit: GaussianizedW, prior: LatentPrior, n: int,
                     generator: torch.Generator | None, start: str = "ones", noise: float = 3.0,
                     **hot_kwargs) -> tuple[Tensor, Tensor]:
    """Hot-start an off-manifold latent with the prior; returns (before, after) images [n, C, R, R].

    ``start='ones'``: z = 1 (or h_k of z = 1), as the reference initialises; ``start='noisy'``: z ~ N(0, I) (or its
    h_k) plus ``noise`` · scale · ξ, with scale the per-feature std of the prior's training latents.
    """
    device = G.synthesis.b4.const.device
    if start not in ("ones", "noisy"):
        raise ValueError(f"naturalize start must be 'ones' or 'noisy', got {start!r}")
    if start == "ones":
        base_z = torch.ones([n, G.num_ws, G.w_dim], device=device)
    else:
        base_z = torch.randn([n, G.num_ws, G.w_dim], generator=generator, device=device)
    latent = base_z if prior.kind == "z" else head(G.synthesis, fit(base_z), prior.layer, noise_mode="const").h
    if start == "noisy":
        xi = torch.randn(latent.shape, generator=generator, device=device)
        latent = latent + noise * prior.scaler.scale.to(device) * xi
    after = prior.to(device).hot_start(latent, generator=generator, **hot_kwargs)
    return decode(G, fit, prior, latent, base_z), decode(G, fit, prior, after, base_z)
