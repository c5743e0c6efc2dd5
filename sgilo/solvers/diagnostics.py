"""MCMC diagnostics for the SGILO chains (Daras et al., ICML 2022): split-R̂ and effective sample size.

Split-R̂ (Gelman et al., BDA3, Sec. 11.4): each chain is split in halves, giving m chains of n draws; with W the mean
within-chain variance and B/n the variance of chain means, var⁺ = (n−1)/n · W + B/n and R̂ = sqrt(var⁺ / W).
ESS (Vehtari et al. 2021, Bayesian Analysis, Eq. 10-11; Geyer's initial monotone sequence): ρ̂_t = 1 − (W − ā_t)/var⁺
with ā_t the mean within-chain autocovariance at lag t, τ = −1 + 2 Σ_k P_k over the positive, monotone pair sums
P_k = ρ̂_{2k} + ρ̂_{2k+1}, ESS = m n / τ.

Modes (ours): two chains belong to one mode when their post-warm-up means of all traced summaries differ by less than
``MODE_THRESHOLD`` = 3 pooled within-chain standard deviations (root mean square over the summaries); the modes are the
connected components of that relation (single-linkage agglomerative clustering cut at 3). Chains exploring one mode
differ in their means by about sqrt(2τ/n) within-chain std (τ the autocorrelation time, n the kept draws), well below
3; chains settled on different faces differ by many within-chain std.

R̂ > 1.1 means the chains have not mixed. `warn_if_unmixed` says so in ONE line on the ``sgilo`` logger, in words that
say what it means for the run: with several modes the spread of the samples is between-mode uncertainty (each chain
settled on a different face); with one mode the chains have not converged within it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor

RHAT_WARN = 1.1
MODE_THRESHOLD = 3.0

log = logging.getLogger("sgilo")


# ----------------------------------------------------------------------------
# Split every chain into two halves: [n, m] → [n // 2, 2m].


def split_chains(draws: np.ndarray) -> np.ndarray:
    n = draws.shape[0] // 2
    return np.concatenate([draws[:n], draws[draws.shape[0] - n:]], axis=1)


# ----------------------------------------------------------------------------
# R̂ = sqrt(var⁺ / W) on split chains (BDA3 Eq. 11.4).


def split_rhat(draws: np.ndarray | Tensor) -> float:
    """Shapes: draws [n_draws, m_chains] → float (nan when fewer than 4 draws; 1.0 for constant traces)."""
    x = split_chains(np.asarray(draws, dtype=np.float64))
    n = x.shape[0]
    if n < 2:
        return float("nan")
    W = x.var(axis=0, ddof=1).mean()
    B = n * x.mean(axis=0).var(ddof=1)
    if W <= 0:
        return 1.0 if B <= 0 else float("inf")
    var_plus = (n - 1) / n * W + B / n
    return float(math.sqrt(var_plus / W))


# ----------------------------------------------------------------------------
# Within-chain autocovariance for all lags via FFT: [n, m] → [n, m].


def autocovariance(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    xc = x - x.mean(axis=0, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(xc, n=size, axis=0)
    return np.fft.irfft(f * np.conj(f), n=size, axis=0)[:n] / n


# ----------------------------------------------------------------------------
# ESS = m n / τ with Geyer's initial monotone sequence estimator (Vehtari et al. 2021).


def effective_sample_size(draws: np.ndarray | Tensor) -> float:
    """Shapes: draws [n_draws, m_chains] → float (bulk ESS on split chains, no rank normalisation)."""
    x = split_chains(np.asarray(draws, dtype=np.float64))
    n, m = x.shape
    if n < 4:
        return float("nan")
    acov = autocovariance(x)                                              # [n, m]
    W = acov[0].mean() * n / (n - 1)
    var_plus = W * (n - 1) / n + (x.mean(axis=0).var(ddof=1) if m > 1 else 0.0)
    if var_plus <= 0:
        return float(n * m)
    rho = 1.0 - (W - acov.mean(axis=1)) / var_plus                          # [n]
    rho[0] = 1.0
    tau, prev = -1.0, float("inf")
    for k in range(0, n - 1, 2):
        p = rho[k] + rho[k + 1]
        if p <= 0:
            break
        p = min(p, prev)                                                  # monotone
        tau += 2 * p
        prev = p
    return float(n * m / max(tau, 1.0 / math.log10(max(n * m, 10))))


# ----------------------------------------------------------------------------
# Number of distinct modes among m chains: single-linkage clusters of chain means, cut at `threshold` pooled
# within-chain std (RMS over the P summaries).


def count_modes(draws: np.ndarray | Tensor, threshold: float = MODE_THRESHOLD) -> int:
    """Shapes: draws [n_draws, m_chains, P] (or [n, m]) → number of clusters in 1..m (m when n < 2)."""
    x = np.asarray(draws, dtype=np.float64)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    n, m = x.shape[:2]
    if m < 2 or n < 2:
        return m
    within = np.sqrt(x.var(axis=0, ddof=1).mean(axis=0))                   # [P] pooled within-chain std
    means = x.mean(axis=0) / np.where(within > 0, within, np.inf)          # [m, P] in within-std units
    dist = np.sqrt(((means[:, None] - means[None]) ** 2).mean(-1))         # [m, m]
    parent = list(range(m))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(m):                                                    # union of every close pair
        for j in range(i + 1, m):
            if dist[i, j] < threshold:
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)
    return len({root(i) for i in range(m)})


# ----------------------------------------------------------------------------
# R̂, ESS and modes for every image of traces [T, K, B] (draws, chains, images); the first half is warm-up.


def summarize(traces: dict[str, Tensor], burn_in: float = 0.5) -> dict:
    """Shapes: each trace [T, K, B] (or [T, K, B, P] for P summaries). Returns JSON-ready lists per image:
    ``rhat``/``ess`` {name: [B][P]}, ``rhat_max``, ``modes`` [B] (`count_modes` on all summaries together),
    ``modes_max`` and ``chains``."""
    out: dict = {"rhat": {}, "ess": {}}
    kept = []
    for name, tr in traces.items():
        a = tr.detach().double().cpu().numpy()
        a = a[int(a.shape[0] * burn_in):]
        a = a.reshape(*a.shape[:3], -1)                                    # [T', K, B, P]
        kept.append(a)
        out["rhat"][name] = [[split_rhat(a[:, :, b, p]) for p in range(a.shape[3])] for b in range(a.shape[2])]
        out["ess"][name] = [[effective_sample_size(a[:, :, b, p]) for p in range(a.shape[3])] for b in range(a.shape[2])]
    finite = [v for per in out["rhat"].values() for row in per for v in row if math.isfinite(v)]
    out["rhat_max"] = max(finite) if finite else float("nan")
    if kept:
        allp = np.concatenate(kept, axis=3)                                # [T', K, B, ΣP]
        out["modes"] = [count_modes(allp[:, :, b]) for b in range(allp.shape[2])]
        out["modes_max"] = max(out["modes"], default=None)
        out["chains"] = int(allp.shape[1])
    return out


# ----------------------------------------------------------------------------
# One line saying what R̂ > threshold means for this run.


def unmixed_message(diag: dict, threshold: float = RHAT_WARN) -> str | None:
    r = diag.get("rhat_max", float("nan"))
    if not (math.isfinite(r) and r > threshold):
        return None
    modes, k = diag.get("modes_max"), diag.get("chains")
    if modes is not None and modes > 1:
        return (f"chains settled on different faces ({modes} modes among {k} chains): the spread of the samples "
                f"describes between-mode uncertainty; R̂ = {r:.1f}")
    return (f"chains have not converged within one mode (R̂ = {r:.2f} > {threshold}): the samples under-represent the "
            f"posterior spread; run more steps")


# ----------------------------------------------------------------------------
# Log that line once (WARNING on the `sgilo` logger, no Python warning) and return it (None when mixed).


def warn_if_unmixed(diag: dict, threshold: float = RHAT_WARN) -> str | None:
    msg = unmixed_message(diag, threshold)
    if msg is not None:
        log.warning(msg)
    return msg


# ----------------------------------------------------------------------------
# Cheap per-step pixel summaries: image mean and the channel-mean at three fixed pixels.


def pixel_summaries(x: Tensor) -> Tensor:
    """Shapes: x [N, C, H, W] → [N, 4]."""
    H, W = x.shape[-2:]
    pts = [(H // 4, W // 4), (H // 2, W // 2), (3 * H // 4, 3 * W // 4)]
    cols = [x.mean(dim=(1, 2, 3))] + [x[:, :, i, j].mean(1) for i, j in pts]
    return torch.stack(cols, dim=1)
