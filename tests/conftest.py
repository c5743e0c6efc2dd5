"""Shared fixtures: a tiny random StyleGAN-2 built in-process (no downloads), RNGs."""

from __future__ import annotations

import pytest
import torch

from sgilo.generator import Generator, GeneratorConfig

torch.set_num_threads(1)


def tiny_config(res: int = 32, **kw) -> GeneratorConfig:
    base = dict(img_resolution=res, z_dim=32, w_dim=32, channel_base=512, channel_max=32, mapping_layers=2)
    base.update(kw)
    return GeneratorConfig(**base)


def make_tiny_generator(res: int = 32, seed: int = 0, **kw) -> Generator:
    torch.manual_seed(seed)
    G = Generator(tiny_config(res, **kw))
    with torch.no_grad():  # non-zero noise strengths and w_avg so every parameter matters
        for i, layer in enumerate(G.synthesis.noise_layers()):
            layer.noise_strength.fill_(0.05 * (i + 1))
        G.mapping.w_avg.normal_()
    return G.freeze()


@pytest.fixture
def tiny_generator() -> Generator:
    return make_tiny_generator(32)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
