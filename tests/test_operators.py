"""Forward operators: adjointness on odd non-square sizes, pseudo-inverses, noise statistics, seeds, save/load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sgilo.operators import (
    Colorization,
    CompressedSensingCirculant,
    CompressedSensingGaussian,
    Deblur,
    Denoising,
    GaussianNoise,
    Inpainting,
    LinearOperator,
    PhysicsAdapter,
    PoissonNoise,
    SuperResolution,
    as_operator,
    load_operator,
    save_operator,
)
from sgilo.operators.resampling import bicubic_matrix, keys_cubic

SHAPE = (3, 21, 17)  # odd, non-square


def _operators():
    return {
        "inpaint-box": Inpainting.box(SHAPE[1:], (3, 4, 11, 15)),
        "inpaint-random": Inpainting.random(SHAPE[1:], 0.3, seed=1),
        "superres": SuperResolution(3, (3, 21, 15)),
        "denoise": Denoising(),
        "cs-gaussian": CompressedSensingGaussian(50, SHAPE, seed=2),
        "cs-gaussian-stream": CompressedSensingGaussian(600, SHAPE, seed=2, max_dense_elements=0),
        "cs-circulant": CompressedSensingCirculant(60, SHAPE, seed=3),
        "colorize": Colorization(),
        "deblur": Deblur(1.3, SHAPE),
    }


OPERATORS = list(_operators())


def _x(op, B=2, dtype=torch.float64, seed=0):
    shape = op.image_shape if hasattr(op, "image_shape") else SHAPE
    return torch.randn(B, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------
# ⟨A x, u⟩ = ⟨x, Aᵀ u⟩ in float64, batch 2.


@pytest.mark.parametrize("name", OPERATORS)
def test_adjointness(name):
    op = _operators()[name]
    x = _x(op)
    y = op.A(x)
    assert y.shape[0] == 2
    u = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    lhs = (y * u).flatten(1).sum(1)
    rhs = (x * op.A_adjoint(u)).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    assert op.A_adjoint(u).shape == x.shape


# ----------------------------------------------------------------------------
# A A† A = A (Moore–Penrose) where A† is exact.


@pytest.mark.parametrize("name", ["inpaint-random", "superres", "denoise", "cs-gaussian", "cs-circulant", "colorize"])
def test_pseudo_inverse(name):
    op = _operators()[name]
    x = _x(op)
    y = op.A(x)
    torch.testing.assert_close(op.A(op.A_dagger(y)), y, rtol=1e-5, atol=1e-6)


def test_deblur_pinv_inverts_well_conditioned_blur():
    op = Deblur(0.6, SHAPE)
    x = _x(op)
    torch.testing.assert_close(op.A_dagger(op.A(x)), x, rtol=1e-8, atol=1e-8)


def test_vector_and_image_measurement_shapes():
    ops = _operators()
    x = _x(ops["denoise"], dtype=torch.float32)
    assert ops["cs-gaussian"].A(x).shape == (2, 50)
    assert ops["cs-circulant"].A(x).shape == (2, 60)
    assert ops["colorize"].A(x).shape == (2, 1, 21, 17)
    assert ops["superres"].A(_x(ops["superres"])).shape == (2, 3, 7, 5)


# ----------------------------------------------------------------------------
# Super-resolution equals the reference's reflect-pad + strided separable conv (BicubicDownSample).


def test_superres_matches_reference_conv():
    f, H, W = 4, 32, 24
    S = 4 * f
    k = keys_cubic((torch.arange(S, dtype=torch.float64) - S // 2 + 0.5) / f)
    k = k / k.sum()
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    top, bot = (S - f) // 2, S - f - (S - f) // 2
    h = F.pad(x, (0, 0, top, bot), mode="reflect")
    h = F.conv2d(h, k.reshape(1, 1, S, 1).repeat(3, 1, 1, 1), stride=(f, 1), groups=3)
    h = F.pad(h, (top, bot, 0, 0), mode="reflect")
    ref = F.conv2d(h, k.reshape(1, 1, 1, S).repeat(3, 1, 1, 1), stride=(1, f), groups=3)
    torch.testing.assert_close(SuperResolution(f, (3, H, W)).A(x), ref, rtol=1e-6, atol=1e-6)
    assert torch.allclose(bicubic_matrix(H, f).sum(1), torch.ones(H // f, dtype=torch.float64))


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_superres_large_factors(factor):
    op = SuperResolution(factor, (3, 64, 64))
    x = torch.full((1, 3, 64, 64), 0.3)
    torch.testing.assert_close(op.A(x), torch.full((1, 3, 64 // factor, 64 // factor), 0.3))


# ----------------------------------------------------------------------------
# Inpainting masks: shared across channels, exact counts, down to p = 0.001; measured holes stay 0.


def test_random_mask_extremely_sparse_and_seeded():
    a = Inpainting.random((64, 64), 0.001, seed=7)
    b = Inpainting.random((64, 64), 0.001, seed=7)
    c = Inpainting.random((64, 64), 0.001, seed=8)
    assert int(a.mask.sum()) == 4 and torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    assert Inpainting.random((10, 10), 0.001, seed=0).mask.sum() == 1
    op = Inpainting.random(SHAPE[1:], 0.3, seed=1)
    op.noise = GaussianNoise(0.5)
    y = op.measure(torch.zeros(2, *SHAPE), generator=torch.Generator().manual_seed(0))
    assert torch.all(y[:, :, op.mask[0, 0] == 0] == 0)
    assert torch.equal(y[:, 0] != 0, y[:, 1] != 0)  # mask shared across channels


def test_default_box_is_centred_half():
    op = Inpainting.box((64, 64))
    hole = op.mask[0, 0] == 0
    assert hole.sum() == 32 * 32 and hole[16:48, 16:48].all()


# ----------------------------------------------------------------------------
# Noise statistics: Gaussian σ and Poisson variance 2(v + 1)/gain.


def test_gaussian_noise_statistics():
    op = Denoising(GaussianNoise(0.2))
    x = torch.zeros(4, 3, 64, 64)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert abs(y.mean().item()) < 0.005 and abs(y.std().item() - 0.2) < 0.003
    y2 = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2) and op.sigma == 0.2


def test_poisson_noise_statistics():
    noise = PoissonNoise(gain=200.0)
    v = torch.full((200_000,), 0.5)
    y = noise(v, generator=torch.Generator().manual_seed(0))
    assert abs(y.mean().item() - 0.5) < 0.003
    assert abs(y.var().item() - 2 * 1.5 / 200) < 0.0005
    assert noise.sigma == pytest.approx(0.1)


# ----------------------------------------------------------------------------
# Seeds reproduce matrices; blocks streamed on the fly equal the cached matrix.


def test_cs_seeds_reproduce():
    a, b = CompressedSensingGaussian(40, SHAPE, seed=3), CompressedSensingGaussian(40, SHAPE, seed=3)
    assert torch.equal(a.matrix(), b.matrix())
    assert not torch.equal(a.matrix(), CompressedSensingGaussian(40, SHAPE, seed=4).matrix())
    stream = CompressedSensingGaussian(40, SHAPE, seed=3, max_dense_elements=0)
    assert stream.Phi is None and torch.equal(stream.matrix(), a.matrix())
    x = _x(a, dtype=torch.float32)
    torch.testing.assert_close(stream.A(x), a.A(x))
    c1, c2 = CompressedSensingCirculant(40, SHAPE, seed=3), CompressedSensingCirculant(40, SHAPE, seed=3)
    assert torch.equal(c1.A(x), c2.A(x))
    assert not torch.equal(c1.omega, CompressedSensingCirculant(40, SHAPE, seed=4).omega)


def test_cs_row_scaling():
    op = CompressedSensingGaussian(400, (3, 32, 32), seed=0)
    row_norm2 = op.matrix().square().sum(1).mean().item()
    assert row_norm2 == pytest.approx(3 * 32 * 32 / 400, rel=0.02)


def test_circulant_matches_dense_formula():
    shape = (1, 4, 5)
    op = CompressedSensingCirculant(7, shape, seed=1)
    n = 20
    C = torch.stack([torch.roll(op.filter.double(), k) for k in range(n)], dim=1)  # C[i, j] = f[(i − j) mod n]
    Phi = C[op.omega] * op.signs.double()[None] / math.sqrt(7)
    x = torch.randn(2, *shape, dtype=torch.float64)
    torch.testing.assert_close(op.A(x), x.flatten(1) @ Phi.T)


def test_circulant_usable_at_256():
    op = CompressedSensingCirculant(round(0.05 * 3 * 256 * 256), (3, 256, 256), seed=0)
    y = op.A(torch.randn(2, 3, 256, 256))
    assert y.shape == (2, 9830) and op.A_adjoint(y).shape == (2, 3, 256, 256)


# ----------------------------------------------------------------------------
# Save/load reproduces the operator (buffers, noise, measurements).


@pytest.mark.parametrize("name", OPERATORS)
def test_save_load_roundtrip(name, tmp_path):
    op = _operators()[name]
    op.noise = GaussianNoise(0.05)
    save_operator(op, tmp_path / "op")
    back = load_operator(tmp_path / "op.json")
    assert type(back) is type(op) and back.sigma == 0.05
    x = _x(op, dtype=torch.float32)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(op.measure(x, g1), back.measure(x, g2))


def test_load_mask_operator_keeps_mask(tmp_path):
    op = Inpainting.random((9, 13), 0.2, seed=5)
    save_operator(op, tmp_path / "m")
    assert torch.equal(load_operator(tmp_path / "m").mask, op.mask)


# ----------------------------------------------------------------------------
# Bad inputs fail with one clear line.


@pytest.mark.parametrize("build, match", [
    (lambda: Inpainting.random((8, 8), 0.0, seed=0), "0 < p <= 1"),
    (lambda: Inpainting.random((8, 8), 1.5, seed=0), "0 < p <= 1"),
    (lambda: CompressedSensingGaussian(200, (2, 8, 8), seed=0), "1 <= m <= n = 128"),
    (lambda: CompressedSensingCirculant(0, (2, 8, 8), seed=0), "1 <= m <= n"),
    (lambda: SuperResolution(3, (3, 16, 16)), "does not divide"),
    (lambda: Inpainting.box((8, 8), (0, 0, 9, 4)), "box"),
    (lambda: Deblur(0.0, (3, 8, 8)), "kernel_sigma"),
    (lambda: SuperResolution(2, (3, 16, 16)).A(torch.zeros(1, 3, 16, 18)), r"expected shape \[B, 3, 16, 16\]"),
    (lambda: Colorization().A(torch.zeros(1, 1, 8, 8)), "3 channels"),
    (lambda: CompressedSensingGaussian(5, (1, 4, 4), seed=0).A_adjoint(torch.zeros(1, 6)), r"\[B, 5\]"),
])
def test_bad_inputs(build, match):
    with pytest.raises(ValueError, match=match) as e:
        build()
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------
# deepinv interop: a duck-typed Physics, and the real one when installed.


class FakePhysics(torch.nn.Module):
    """Minimal deepinv-like Physics: masking with a noise model carrying σ."""

    def __init__(self, mask, sigma):
        super().__init__()
        self.register_buffer("mask", mask)
        self.noise_model = type("Noise", (), {"sigma": torch.tensor(sigma)})()

    def A(self, x):
        return x * self.mask

    def A_adjoint(self, y):
        return y * self.mask


def test_physics_adapter_duck_typed():
    phys = FakePhysics((torch.rand(1, 1, 5, 7, generator=torch.Generator().manual_seed(0)) > 0.5).double(), 0.1)
    op = as_operator(phys)
    assert isinstance(op, PhysicsAdapter) and isinstance(op, LinearOperator) and op.sigma == pytest.approx(0.1)
    assert as_operator(op) is op
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    u = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close((op.A(x) * u).sum(), (x * op.A_adjoint(u)).sum())
    torch.testing.assert_close(op.A_dagger(op.A(x)), op.A(x))
    y1 = op.measure(x, torch.Generator().manual_seed(1))
    y2 = op.measure(x, torch.Generator().manual_seed(1))
    assert torch.equal(y1, y2) and abs((y1 - op.A(x)).std().item() - 0.1) < 0.05
    with pytest.raises(TypeError, match="deepinv Physics"):
        as_operator(object())


def test_physics_adapter_refuses_non_gaussian_noise():
    # A deepinv-style PoissonNoise(gain) has no σ: it used to be adapted as noiseless (σ = 0); PoissonGaussian has a σ
    # but is not Gaussian. Both are refused in one line; ZeroNoise / no noise model give σ = 0.
    mask = torch.ones(1, 1, 5, 7)
    for noise in (type("PoissonNoise", (), {"gain": 0.1})(),
                  type("PoissonGaussianNoise", (), {"gain": 0.1, "sigma": 0.05})(),
                  type("GaussianNoise", (), {"sigma": torch.full((4,), 0.1)})()):
        phys = FakePhysics(mask, 0.0)
        phys.noise_model = noise
        with pytest.raises(ValueError, match=f"expected Gaussian noise .* got {type(noise).__name__}"):
            as_operator(phys)
    for noise in (type("ZeroNoise", (), {})(), None):
        phys = FakePhysics(mask, 0.0)
        phys.noise_model = noise
        op = as_operator(phys)
        x = torch.randn(2, 3, 5, 7)
        assert op.sigma == 0 and torch.equal(op.measure(x, torch.Generator().manual_seed(0)), x)


def test_physics_adapter_real_deepinv():
    dinv = pytest.importorskip("deepinv")
    phys = dinv.physics.Inpainting((3, 5, 7), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.1))
    op = as_operator(phys)
    x, u = torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7)
    torch.testing.assert_close((op.A(x) * u).sum(), (x * op.A_adjoint(u)).sum(), rtol=1e-5, atol=1e-5)
    assert op.sigma == pytest.approx(0.1)


def test_to_image_renders_each_measurement_kind():
    x = torch.rand(2, 3, 8, 12) * 2 - 1
    inp = Inpainting.box((8, 12), (0, 0, 6, 8))
    img = inp.to_image(inp.measure(x), (3, 8, 12))
    assert img.shape == (2, 3, 8, 12) and torch.all(img[:, :, :, :6] == 0)
    torch.testing.assert_close(img[:, :, :, 8:], x[:, :, :, 8:])
    sr = SuperResolution(4, (3, 8, 12))
    y = sr.A(x)
    torch.testing.assert_close(sr.to_image(y, (3, 8, 12))[:, :, ::4, ::4], y.clamp(-1, 1))       # nearest neighbour
    gray = Colorization().to_image(Colorization().A(x), (3, 8, 12))
    assert gray.shape == (2, 3, 8, 12) and torch.equal(gray[:, 0], gray[:, 2])
    cs = CompressedSensingCirculant(30, (3, 8, 12), seed=0)
    img = cs.to_image(cs.A(x), (3, 8, 12))
    assert img.shape == (2, 3, 8, 12) and img.min() == -1 and img.max() == 1
