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
# Before/after pairs of the hot start from the all-ones z (reference §1.4 initialisation).


@torch.no_grad()
def naturalize_pairs(G: Generator, fit: GaussianizedW, prior: LatentPrior, n: int,
                     generator: torch.Generator | None, **hot_kwargs) -> tuple[Tensor, Tensor]:
    """Start from z = 1 (or h_k of z = 1), hot-start it with the prior; returns (before, after) images [n, C, R, R]."""
    device = G.synthesis.b4.const.device
    base_z = torch.ones([n, G.num_ws, G.w_dim], device=device)
    start = base_z if prior.kind == "z" else head(G.synthesis, fit(base_z), prior.layer, noise_mode="const").h
    after = prior.to(device).hot_start(start, generator=generator, **hot_kwargs)
    return decode(G, fit, prior, start, base_z), decode(G, fit, prior, after, base_z)
