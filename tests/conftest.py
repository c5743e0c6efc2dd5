"""Shared fixtures: a tiny random StyleGAN-2 built in-process (no downloads), RNGs."""

from __future__ import annotations

import pytest
import torch

from sgilo.generator import Generator, GeneratorConfig, fit_gaussianized_w
from sgilo.operators.base import GaussianNoise, LinearOperator

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


# ----------------------------------------------------------------------------
# Shared stand-ins for solver tests: a pixel-mask operator, a masked problem on the tiny generator, files for the CLI.


class MaskOperator(LinearOperator):
    """A x = m ⊙ x with a fixed {0,1} mask (self-adjoint), optional Gaussian noise."""

    def __init__(self, mask: torch.Tensor, sigma: float = 0.0) -> None:
        super().__init__(GaussianNoise(sigma) if sigma > 0 else None)
        self.register_buffer("mask", mask)

    def A(self, x):
        return x * self.mask

    def A_adjoint(self, y):
        return y * self.mask


def masked_problem(G):
    """(fit, op, y, x): 2 images of G scaled into [-1, 1], 30 % of pixels observed, noise σ = 0.05."""
    fit = fit_gaussianized_w(G.mapping, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = G(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1)))
        x = x / x.abs().amax()                                              # into [-1, 1]
    op = MaskOperator((torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2)) < 0.3).float(), sigma=0.05)
    y = op.measure(x, generator=torch.Generator().manual_seed(3))
    return fit, op, y, x


def write_lpips_weights(path, widths=(4, 4, 4, 4, 4)):
    """A random LPIPS weights file in the documented VGG-16 layout (narrow widths), for tests."""
    from safetensors.torch import save_file

    from sgilo.metrics.lpips import VGG16_BLOCKS
    g = torch.Generator().manual_seed(0)
    sd, c_in = {}, 3
    for width, block in zip(widths, VGG16_BLOCKS, strict=True):
        for i in block:
            sd[f"features.{i}.weight"] = torch.randn(width, c_in, 3, 3, generator=g) * (2 / (9 * c_in)) ** 0.5
            sd[f"features.{i}.bias"] = torch.zeros(width)
            c_in = width
    for k, width in enumerate(widths):
        sd[f"lin{k}.weight"] = torch.rand(1, width, 1, 1, generator=g)
    save_file(sd, str(path))
    return path


def write_solve_files(tmp_path, G):
    """A saved tiny generator (tmp_path/gen) and one of its images (tmp_path/img.png) for `sgilo solve` tests."""
    from sgilo.generator import save_generator
    from sgilo.utils.images import save_image
    save_generator(tmp_path / "gen", G, fit_gaussianized_w(G.mapping, 2000, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        x = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)))
    save_image((x / x.abs().amax())[0], tmp_path / "img.png")
    return tmp_path
