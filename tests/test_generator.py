"""StyleGAN-2 generator (Karras et al. 2020): config, mapping/truncation, noise modes, frozen use as a prior, bf16
autocast, Gaussianised w+ (PULSE/ILO) and the spherical projection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_generator, tiny_config

from sgilo.generator import (Generator, GeneratorConfig, GaussianizedW, fit_gaussianized_w, project_to_sphere,
                             sphere_radius)


def test_config_channels_and_layout():
    cfg = GeneratorConfig()                                             # NVlabs FFHQ config-f
    assert cfg.block_resolutions == [4, 8, 16, 32, 64, 128, 256, 512, 1024] and cfg.num_ws == 18
    assert [cfg.channels(r) for r in (4, 64, 128, 1024)] == [512, 512, 256, 32]
    assert cfg.noise_resolutions == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024]
    for bad in (8, 48, 2048):
        with pytest.raises(ValueError, match=f"got {bad}"):
            GeneratorConfig(img_resolution=bad)


@pytest.mark.parametrize("res", [16, 32, 128])
def test_forward_shapes(res):
    G = make_tiny_generator(res)
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0))
    img = G(z)
    assert img.shape == (3, 3, res, res) and torch.isfinite(img).all()
    assert len(G.synthesis.make_noises(3)) == len(G.cfg.noise_resolutions) == G.num_ws - 1
    with pytest.raises(ValueError, match="z"):
        G(torch.randn(3, G.z_dim + 1))


def test_truncation_and_broadcast(tiny_generator):
    G, z = tiny_generator, torch.randn(4, 32)
    ws = G.mapping(z)
    assert ws.shape == (4, G.num_ws, G.w_dim) and torch.equal(ws[:, 0], ws[:, -1])
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.0), G.mapping.w_avg.expand(4, G.num_ws, -1))
    w = G.mapping(z, broadcast=False)
    expected = G.mapping.w_avg + 0.5 * (w - G.mapping.w_avg)
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.5, broadcast=False), expected)


def test_noise_modes(tiny_generator):
    G, z = tiny_generator, torch.randn(2, 32)
    a = G(z, noise_mode="random", generator=torch.Generator().manual_seed(7))
    b = G(z, noise_mode="random", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(G(z, noise_mode="const"), G(z, noise_mode="none"))
    with pytest.raises(ValueError, match="noise mode"):
        G(z, noise_mode="bogus")


def test_frozen_prior_passes_gradients_to_latents_only(tiny_generator):
    G = tiny_generator
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    ws = G.mapping(torch.randn(2, 32)).detach().requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert all(p.grad is None for p in G.parameters())
    assert G.num_parameters() == G.num_parameters("mapping") + G.num_parameters("synthesis")


def test_bf16_autocast_close_to_fp32():
    G = make_tiny_generator(32)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    ref = G(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = G(z)
    assert torch.isfinite(out).all()
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.05, f"bf16 relative error {rel:.3g}"


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    G = make_tiny_generator(64)
    z = torch.randn(2, G.z_dim)
    ref = G(z)
    out = G.to("cuda")(z.to("cuda")).cpu()
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)


# ----------------------------------------------------------------------------
# Gaussianised w+ and spherical projection.


def test_gaussianized_w_fit_and_inverse():
    G = make_tiny_generator(32)
    g = torch.Generator().manual_seed(0)
    fit = fit_gaussianized_w(G.mapping, num_samples=4000, batch=1500, generator=g)
    v = F.leaky_relu(G.mapping(torch.randn(4000, 32, generator=g), broadcast=False), 5.0)
    torch.testing.assert_close(fit.mu, v.mean(0), atol=0.1 * v.std(0).max().item(), rtol=0)
    torch.testing.assert_close(fit.sigma, v.std(0), atol=0, rtol=0.1)
    z = torch.randn(3, G.num_ws, G.w_dim, generator=g)
    w = fit(z)
    assert w.shape == z.shape
    torch.testing.assert_close(fit.inverse(w), z, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="w_dim"):
        GaussianizedW(torch.zeros(4), torch.ones(5))


@pytest.mark.parametrize("shape", [(2, 6, 32), (2, 1, 8, 8)])
def test_sphere_projection_keeps_radii(shape):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(*shape, generator=g)
    radius = sphere_radius(x0)
    assert radius.shape == (*shape[:2], *[1] * (len(shape) - 2))
    x = 3.0 * x0 + torch.randn(*shape, generator=g)
    y = project_to_sphere(x, radius)
    torch.testing.assert_close(sphere_radius(y), radius, atol=1e-5, rtol=1e-5)
    cos = (y * x).sum(list(range(2, len(shape)))) / (sphere_radius(y) * sphere_radius(x)).flatten(1)
    torch.testing.assert_close(cos, torch.ones_like(cos))            # direction unchanged
    with pytest.raises(ValueError, match="3 dims"):
        sphere_radius(torch.ones(2, 3))


def test_tiny_config_helper_builds():
    assert Generator(tiny_config(16)).num_ws == 6
