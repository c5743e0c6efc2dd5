"""Compressed-sensing operators (CSGM, Bora et al., ICML 2017; ILO/SGILO, Daras et al., ICML 2021/2022): y = Φ vec(x).

* `CompressedSensingGaussian`: dense Φ ∈ ℝ^{m×n}, Φ_ij ~ N(0, 1/m) (rows scaled 1/√m, as CSGM), n = C·H·W.
  Memory: Φ is generated in blocks of `BLOCK_ROWS` rows, each from its own seed (the `block_seeds` buffer, itself
  drawn from the operator's seed). When m·n ≤ `max_dense_elements` (default 2^27, i.e. 512 MiB fp32: 64×64×3 up to
  m ≈ 10 900) the blocks are concatenated once into a non-persistent buffer; above it every application regenerates
  the blocks on the fly (same matrix, constant memory, but ~m·n normal draws per call: slow at 256×256, where
  `CompressedSensingCirculant` is the practical choice). The state dict stores only the block seeds.
* `CompressedSensingCirculant`: the partial circulant matrix of ILO (``ilo:utils.py``;
  docs/original-code.md#partial-circulant-compressed-sensing),
  Φ(x) = (1/√m) P_Ω Re(F⁻¹(F f ⊙ F(s ⊙ vec x))), Rademacher signs s, Gaussian filter f ~ N(0, I_n) and a fixed subset
  Ω of m outputs, all from the seed. Fixed vs. the reference: SGILO's port called `torch.fft.fft(t, 1)` (a 1-point
  transform, so Φ degenerated to a signed pixel subsampling), redrew Φ every round unseeded, resized [B, m] vectors
  like images and had no 1/√m scaling. O(n log n) per application, so 256×256 is cheap.

Both: measurements [B, m], Aᵀ exact, A† = Aᵀ(AAᵀ)⁻¹ y by at most 50 conjugate-gradient steps (the least-norm solution;
≤ 100 applications of A or Aᵀ, converged to 1e-6 in ~15 steps at m/n = 5 %, slower as m → n where AAᵀ is worse
conditioned: at 64×64 with m = 10 000 the 50 steps take ~30 s on one core and leave a relative residual ~1e-3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sgilo.operators.base import LinearOperator, NoiseModel, as_image_shape, check_image

BLOCK_ROWS = 512


# ----------------------------------------------------------------------------
# Least-norm solution A†y = Aᵀu with (A Aᵀ) u = y, by batched conjugate gradients.


def least_norm_solve(op: LinearOperator, y: Tensor, iters: int = 50, rtol: float = 1e-9) -> Tensor:
    """Shapes: y [B, m] → [B, C, H, W]. Exact for full-row-rank A once CG has converged (‖r‖ ≤ rtol·‖y‖, rtol floored
    at 10 × the dtype's machine epsilon)."""
    rtol = max(rtol, 10 * torch.finfo(y.dtype).eps)
    u = torch.zeros_like(y)
    r = y.clone()
    p = r.clone()
    rs = r.square().sum(1)
    stop = rtol**2 * y.square().sum(1).clamp_min(1e-30)
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        Ap = op.A(op.A_adjoint(p))
        alpha = rs / (p * Ap).sum(1).clamp_min(1e-30)
        u = u + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        rs_new = r.square().sum(1)
        p = r + (rs_new / rs.clamp_min(1e-30))[:, None] * p
        rs = rs_new
    return op.A_adjoint(u)


# ----------------------------------------------------------------------------
# Check m against n = C·H·W.


def _check_m(m: int, n: int) -> int:
    if not isinstance(m, int) or isinstance(m, bool):
        raise ValueError(f"number of measurements m: expected an integer, got {m!r}")
    if not (1 <= m <= n):
        raise ValueError(f"number of measurements m: expected 1 <= m <= n = {n}, got {m}")
    return m


# ----------------------------------------------------------------------------
# y = Φ vec(x), Φ_ij ~ N(0, 1/m), generated in seeded row blocks.


class CompressedSensingGaussian(LinearOperator):
    """Dense Gaussian measurements (CSGM). Shapes: x [B, C, H, W]; y [B, m]."""

    def __init__(self, m: int, image_shape: tuple[int, int, int], seed: int, noise: NoiseModel | None = None,
                 max_dense_elements: int = 2**27) -> None:
        super().__init__(noise)
        self.image_shape = as_image_shape(image_shape)
        self.n = math.prod(self.image_shape)
        self.m = _check_m(m, self.n)
        self.seed, self.max_dense_elements = int(seed), int(max_dense_elements)
        n_blocks = -(-self.m // BLOCK_ROWS)
        g = torch.Generator().manual_seed(self.seed)
        self.register_buffer("block_seeds", torch.randint(0, 2**62, (n_blocks,), generator=g))  # [n_blocks]
        self.register_buffer("Phi", None, persistent=False)
        if self.m * self.n <= self.max_dense_elements:
            self.Phi = torch.cat(list(self._blocks())).to(self.block_seeds.device)  # [m, n]

    def _blocks(self):
        """Yield the row blocks of Φ (float32, CPU), block b drawn from `block_seeds[b]`."""
        for b, s in enumerate(self.block_seeds.tolist()):
            rows = min(BLOCK_ROWS, self.m - b * BLOCK_ROWS)
            g = torch.Generator().manual_seed(s)
            yield torch.randn(rows, self.n, generator=g) / math.sqrt(self.m)  # [rows, n]

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        if self.Phi is not None:  # seeds may have changed: rebuild the cached matrix
            self.Phi = torch.cat(list(self._blocks())).to(self.block_seeds.device)

    def matrix(self) -> Tensor:
        """Φ as a dense [m, n] tensor (materialised on demand when not cached)."""
        return self.Phi if self.Phi is not None else torch.cat(list(self._blocks()))

    def A(self, x: Tensor) -> Tensor:
        check_image(x, self.image_shape)
        v = x.flatten(1)  # [B, n]
        if self.Phi is not None:
            return v @ self.Phi.to(v.dtype).T  # [B, m]
        return torch.cat([v @ P.to(v).T for P in self._blocks()], dim=1)  # [B, m]

    def A_adjoint(self, y: Tensor) -> Tensor:
        if y.ndim != 2 or y.shape[1] != self.m:
            raise ValueError(f"y: expected shape [B, {self.m}], got {tuple(y.shape)}")
        if self.Phi is not None:
            return (y @ self.Phi.to(y.dtype)).reshape(-1, *self.image_shape)  # [B, C, H, W]
        out = torch.zeros(y.shape[0], self.n, dtype=y.dtype, device=y.device)
        for b, P in enumerate(self._blocks()):
            out += y[:, b * BLOCK_ROWS: b * BLOCK_ROWS + P.shape[0]] @ P.to(y)
        return out.reshape(-1, *self.image_shape)  # [B, C, H, W]

    def A_dagger(self, y: Tensor) -> Tensor:
        return least_norm_solve(self, y)

    def get_config(self) -> dict:
        return {"m": self.m, "image_shape": list(self.image_shape), "seed": self.seed,
                "max_dense_elements": self.max_dense_elements}


# ----------------------------------------------------------------------------
# y = (1/√m) P_Ω Re(F⁻¹(F f ⊙ F(s ⊙ vec x))) (ILO's partial circulant, ``ilo:utils.py``, with the fixes above).


class CompressedSensingCirculant(LinearOperator):
    """Partial circulant measurements with random signs. Shapes: x [B, C, H, W]; y [B, m]."""

    def __init__(self, m: int, image_shape: tuple[int, int, int], seed: int, noise: NoiseModel | None = None) -> None:
        super().__init__(noise)
        self.image_shape = as_image_shape(image_shape)
        self.n = math.prod(self.image_shape)
        self.m = _check_m(m, self.n)
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        signs = torch.randint(0, 2, (self.n,), generator=g).float() * 2 - 1      # s ∈ {±1}^n
        f = torch.randn(self.n, generator=g)                                     # f ~ N(0, I_n)
        omega = torch.randperm(self.n, generator=g)[: self.m].sort().values      # Ω, |Ω| = m
        self.register_buffer("signs", signs)
        self.register_buffer("filter", f)
        self.register_buffer("omega", omega)

    def A(self, x: Tensor) -> Tensor:
        check_image(x, self.image_shape)
        v = x.flatten(1) * self.signs.to(x.dtype)                                # [B, n]
        f_hat = torch.fft.rfft(self.filter.to(x.dtype))
        c = torch.fft.irfft(torch.fft.rfft(v) * f_hat, n=self.n)                 # [B, n] circular convolution
        return c[:, self.omega] / math.sqrt(self.m)                              # [B, m]

    def A_adjoint(self, y: Tensor) -> Tensor:
        if y.ndim != 2 or y.shape[1] != self.m:
            raise ValueError(f"y: expected shape [B, {self.m}], got {tuple(y.shape)}")
        z = torch.zeros(y.shape[0], self.n, dtype=y.dtype, device=y.device)
        z[:, self.omega] = y / math.sqrt(self.m)                                 # P_Ωᵀ
        f_hat = torch.fft.rfft(self.filter.to(y.dtype))
        c = torch.fft.irfft(torch.fft.rfft(z) * f_hat.conj(), n=self.n)          # circular correlation = Cᵀ
        return (c * self.signs.to(y.dtype)).reshape(-1, *self.image_shape)       # [B, C, H, W]

    def A_dagger(self, y: Tensor) -> Tensor:
        return least_norm_solve(self, y)

    def get_config(self) -> dict:
        return {"m": self.m, "image_shape": list(self.image_shape), "seed": self.seed}
