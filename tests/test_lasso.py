"""Lasso baselines of the CSGM paper: orthonormal DCT / Daubechies transforms, FISTA recovery, λ tuning on train images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from sgilo.bench.lasso import (Basis2D, LassoConfig, daubechies_filter, dct_matrix, lasso_solve, soft_threshold,
                               tune_lambda, wavelet_matrix)
from sgilo.metrics.quality import psnr
from sgilo.operators.cs import CompressedSensingGaussian
from sgilo.operators.inpainting import Inpainting


def test_dct_matrix_is_orthonormal_and_matches_scipy():
    M = dct_matrix(12)
    assert torch.allclose(M @ M.T, torch.eye(12, dtype=M.dtype), atol=1e-12)
    x = np.random.default_rng(0).standard_normal((12, 12))
    ref = scipy.fft.dctn(x, type=2, norm="ortho")
    assert np.allclose(M.numpy() @ x @ M.numpy().T, ref, atol=1e-12)


def test_daubechies_filters():
    s3 = math.sqrt(3)
    db2 = np.array([1 + s3, 3 + s3, 3 - s3, 1 - s3]) / (4 * math.sqrt(2))        # closed form (Daubechies 1988)
    assert np.allclose(daubechies_filter(2), db2, atol=1e-12)
    assert np.allclose(daubechies_filter(1), [2 ** -0.5, 2 ** -0.5])
    for p in (1, 2, 3, 4, 6):
        h = daubechies_filter(p)
        assert len(h) == 2 * p and abs(h.sum() - math.sqrt(2)) < 1e-10 and abs((h ** 2).sum() - 1) < 1e-10
        W = wavelet_matrix(32, p)
        assert torch.allclose(W @ W.T, torch.eye(32, dtype=W.dtype), atol=1e-10), p
    # Haar: the coarsest row is the constant 1/√n, and a constant signal has one non-zero coefficient.
    W = wavelet_matrix(16, 1)
    c = W @ torch.ones(16, dtype=W.dtype)
    assert torch.allclose(c[0], torch.tensor(4.0, dtype=W.dtype)) and c[1:].abs().max() < 1e-12
    with pytest.raises(ValueError, match="too short"):
        wavelet_matrix(4, 4)


def test_basis_round_trip_and_soft_threshold():
    x = torch.randn(2, 3, 16, 8, dtype=torch.float64)
    for kind in ("dct", "wavelet"):
        b = Basis2D(kind, 16, 8, order=2)
        c = b.analysis(x)
        assert torch.allclose(b.synthesis(c), x, atol=1e-10)
        assert torch.allclose(c.norm(), x.norm())                                    # Parseval
    v = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5])
    assert torch.allclose(soft_threshold(v, 1.0), torch.tensor([-1.0, 0.0, 0.0, 0.0, 0.5]))


@pytest.mark.parametrize("basis", ["dct", "wavelet"])
def test_fista_recovers_a_sparse_image_from_gaussian_measurements(basis):
    g = torch.Generator().manual_seed(0)
    b = Basis2D(basis, 16, 16, order=2)
    c = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    idx = torch.randperm(256, generator=g)[:8]
    c.view(-1)[idx] = torch.randn(8, generator=g, dtype=torch.float64)
    x = b.synthesis(c).float()                                                       # 8-sparse in Ψ
    op = CompressedSensingGaussian(96, (1, 16, 16), seed=1)
    y = op.A(x)
    cfg = LassoConfig(basis=basis, wavelet_order=2, iters=1500, clip=False)
    x_hat = lasso_solve(y, op, 1e-4, cfg, generator=g)
    assert float(psnr(x_hat, x)) > 35.0
    zero = torch.zeros_like(x)
    assert float(psnr(x_hat, x)) > float(psnr(zero, x)) + 25


def test_tune_lambda_picks_the_best_grid_value_on_train_images():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    train = torch.stack([torch.stack([0.6 * torch.sin(3 * a * xx + yy) for _ in range(3)]) for a in (0.5, 1.0, 1.5)])
    op = Inpainting.random((16, 16), 0.3, seed=0)
    cfg = LassoConfig(iters=150, lambdas=(1e-4, 1e-2, 10.0))
    lam, table = tune_lambda(op, train, cfg, generator=g)
    assert set(table) == {1e-4, 1e-2, 10.0} and table[lam] == max(table.values())
    assert lam != 10.0                                             # λ = 10 zeroes every coefficient: clearly worst
    with pytest.raises(ValueError, match="basis"):
        LassoConfig(basis="fourier")
