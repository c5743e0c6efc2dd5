"""Simulation-based calibration (SBC) of a posterior sampler (Talts et al. 2018, "Validating Bayesian inference
algorithms with simulation-based calibration"; Modrák et al. 2023, "Simulation-based calibration checking for Bayesian
computation: the choice of test quantities shapes sensitivity").

If the truth θ̃ is drawn from the prior, y from the likelihood given θ̃, and θ_1 … θ_L are exact posterior draws given
y, then for any scalar summary f the rank r = #{l : f(θ_l) < f(θ̃)} is uniform on {0, …, L} (Talts et al. 2018,
Theorem 1; ties broken at random). Departures have a direction:

* U-shaped ranks (truth too often below all or above all draws): the draws are under-dispersed (too narrow);
* ∩-shaped ranks: over-dispersed (too wide);
* ranks piled on one side: biased draws (high ranks: the truth is above the draws, the draws are too low).

Uniformity test and band: the graphical test of Säilynoja, Bürkner & Vehtari (2022, "Graphical test for discrete
uniformity and its applications in goodness-of-fit evaluation and multiple sample comparison", Statistics and
Computing 32:32), simulation variant (their Sec. 2.2): with S_j = #{i : r_i ≤ j} ~ Binomial(N, (j+1)/(L+1)) under
uniformity, each j gets the pointwise two-sided tail probability p_j = min(1, 2·min(P(S ≤ s_j), P(S ≥ s_j))); the test
statistic is T = min_j p_j, its null law is simulated from multinomial rank counts, γ = the α-quantile of T, and the
simultaneous (1 − α) band is {s : p_j(s) ≥ γ} at every j. The p-value is P_null(T ≤ T_obs); it is < α exactly when
the ECDF leaves the band somewhere. Ranks must be independent across replicates (one value per replicate).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ALPHA = 0.05
NULL_SIMULATIONS = 4000


# ----------------------------------------------------------------------------
# r = #{l : draw_l < truth} + U{0..#ties} (Talts et al. 2018, Algorithm 1; random tie-breaking).


def sbc_ranks(truth: Tensor, draws: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Rank of the truth among L draws, per element. Shapes: truth [...], draws [L, ...] → int64 [...] in 0..L."""
    if draws.ndim != truth.ndim + 1 or tuple(draws.shape[1:]) != tuple(truth.shape):
        raise ValueError(f"draws: expected shape [L, {', '.join(map(str, truth.shape))}], got {tuple(draws.shape)}")
    below = (draws < truth).sum(0)
    ties = (draws == truth).sum(0)
    if bool((ties > 0).any()):
        u = torch.rand(ties.shape, generator=generator, dtype=torch.float64)
        below = below + torch.floor(u * (ties + 1).double()).long()
    return below.long()


# ----------------------------------------------------------------------------
# Binomial(n, p) CDF for all s = 0..n (log-space pmf, cumulative sum); no scipy dependency.


def binomial_cdf(n: int, p: float) -> np.ndarray:
    """P(S ≤ s) for s = 0..n. Shapes: → [n + 1]."""
    if p <= 0 or p >= 1:
        return np.ones(n + 1) if p <= 0 else np.r_[np.zeros(n), 1.0]
    s = torch.arange(n + 1, dtype=torch.float64)
    logpmf = (torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(s + 1) - torch.lgamma(n - s + 1)
              + s * math.log(p) + (n - s) * math.log1p(-p))
    return np.minimum(np.cumsum(np.exp(logpmf.numpy())), 1.0)


# ----------------------------------------------------------------------------
# Pointwise two-sided tail probability p_j(s) = min(1, 2 min(F_j(s), 1 − F_j(s − 1))) for every j = 0..L−1 and s.


def pointwise_tails(n: int, L: int) -> np.ndarray:
    """Shapes: → [L, n + 1] (row j: S_j ~ Binomial(n, (j+1)/(L+1)))."""
    out = np.empty((L, n + 1))
    for j in range(L):
        F = binomial_cdf(n, (j + 1) / (L + 1))
        upper = 1.0 - np.r_[0.0, F[:-1]]                                   # P(S ≥ s)
        out[j] = np.minimum(1.0, 2 * np.minimum(F, upper))
    return out


# ----------------------------------------------------------------------------
# T = min_j p_j(S_j) for rank counts [M, L + 1].


def _min_tail(counts: np.ndarray, tails: np.ndarray) -> np.ndarray:
    S = np.cumsum(counts, axis=-1)[..., :-1]                               # [M, L]
    return tails[np.arange(tails.shape[0]), S].min(-1)


# ----------------------------------------------------------------------------
# Null law of T by simulation (deterministic seed), the level γ, the band and the p-value.


def uniformity_test(ranks: Tensor | np.ndarray, L: int, alpha: float = ALPHA, simulations: int = NULL_SIMULATIONS,
                    seed: int = 0) -> dict:
    """Säilynoja et al. (2022) graphical uniformity test of N ranks in 0..L.

    Returns a JSON-ready dict: ``p_value``; ``gamma`` (adjusted pointwise level); ``ecdf`` S_j / N and ``band``
    [lower, upper] (as ECDF values) at j = 0..L−1, the expected values (j+1)/(L+1); ``counts`` per rank value.
    """
    r = np.asarray(ranks, dtype=np.int64).reshape(-1)
    if L < 1 or r.size == 0 or r.min() < 0 or r.max() > L:
        raise ValueError(f"ranks: expected a non-empty set of integers in 0..{L}, got range "
                         f"[{r.min() if r.size else None}, {r.max() if r.size else None}] with {r.size} values")
    n = r.size
    tails = pointwise_tails(n, L)                                         # [L, n + 1]
    counts = np.bincount(r, minlength=L + 1)
    t_obs = float(_min_tail(counts[None], tails)[0])
    null = _min_tail(np.random.default_rng(seed).multinomial(n, np.full(L + 1, 1 / (L + 1)), size=simulations), tails)
    gamma = float(np.quantile(null, alpha, method="lower"))
    inside = tails >= gamma                                               # [L, n + 1]
    lower = inside.argmax(1) / n
    upper = (n - inside[:, ::-1].argmax(1)) / n
    return {"n": int(n), "L": int(L), "alpha": alpha, "p_value": float((1 + (null <= t_obs).sum()) / (simulations + 1)),
            "gamma": gamma, "counts": counts.tolist(), "expected": [(j + 1) / (L + 1) for j in range(L)],
            "ecdf": (np.cumsum(counts)[:-1] / n).tolist(), "band": [lower.tolist(), upper.tolist()]}


# ----------------------------------------------------------------------------
# Direction of a departure: dispersion (outer quarters vs their exact share) and bias (mean rank vs L/2), as z-scores.


def rank_direction(ranks: Tensor | np.ndarray, L: int, z_crit: float = 2.0) -> dict:
    """``dispersion``: 'under-dispersed' (U-shaped: intervals too narrow), 'over-dispersed' (∩-shaped: too wide) or
    'ok'; ``bias``: 'draws too low' (truth ranks high), 'draws too high' or 'ok'; decided at |z| > z_crit.

    z_outer = (f_out − p_out) / sqrt(p_out (1 − p_out) / N), f_out the fraction of ranks in the outer quarters
    (mid-rank u = (r + ½)/(L+1) < ¼ or > ¾, symmetric in r ↔ L − r) and p_out their exact share under uniformity;
    z_mean = (r̄ − L/2) / sqrt(var / N) with var = ((L+1)² − 1) / 12 of the discrete uniform. A dispersion label also
    needs both tails on the same side of their share (a pile in one tail alone is bias, not a U). With L = 1 no rank is
    outer: dispersion is 'n/a' (two ranks cannot show it)."""
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    n, vals = r.size, np.arange(L + 1)
    outer = lambda v: np.abs((v + 0.5) / (L + 1) - 0.5) > 0.25            # noqa: E731
    p_out = outer(vals).mean()
    z_out = (outer(r).mean() - p_out) / math.sqrt(p_out * (1 - p_out) / n) if 0 < p_out < 1 else math.nan
    z_mean = (r.mean() - L / 2) / math.sqrt(((L + 1) ** 2 - 1) / 12 / n)
    u = (r + 0.5) / (L + 1)
    lo, hi, half = (u < 0.25).mean(), (u > 0.75).mean(), p_out / 2
    disp = ("n/a" if math.isnan(z_out) else "under-dispersed" if z_out > z_crit and min(lo, hi) >= half else
            "over-dispersed" if z_out < -z_crit and max(lo, hi) <= half else "ok")
    bias = "draws too low" if z_mean > z_crit else "draws too high" if z_mean < -z_crit else "ok"
    return {"z_outer": float(z_out), "z_mean": float(z_mean), "dispersion": disp, "bias": bias,
            "shape": {"under-dispersed": "U-shaped", "over-dispersed": "∩-shaped", "ok": "flat", "n/a": "n/a"}[disp]}


# ----------------------------------------------------------------------------
# Everything sbc.json holds for one summary.


def summarize_ranks(ranks: Tensor | np.ndarray, L: int, alpha: float = ALPHA, independent: bool = True) -> dict:
    """Ranks [N] in 0..L → {"ranks", "test", "direction", "verdict", "independent"}.

    ``verdict``: 'uniform' when the test does not reject at ``alpha``; else the departures whose |z| > 2
    (`rank_direction`), e.g. 'under-dispersed (U-shaped)', 'draws too high', or 'non-uniform' when neither z-score
    names one. With ``independent=False`` (e.g. many pixels of one replicate pooled) the p-value and band assume an
    independence that does not hold: they are anti-conservative and only the direction is meaningful."""
    r = np.asarray(ranks, dtype=np.int64).reshape(-1)
    test, d = uniformity_test(r, L, alpha), rank_direction(r, L)
    named = ([f"{d['dispersion']} ({d['shape']})"] if d["dispersion"] not in ("ok", "n/a") else []) + \
        ([d["bias"]] if d["bias"] != "ok" else [])
    verdict = "uniform" if test["p_value"] >= alpha else (", ".join(named) or "non-uniform")
    return {"ranks": r.tolist(), "independent": independent, "test": test, "direction": d, "verdict": verdict}


# ----------------------------------------------------------------------------
# Rank histogram with the expected count and its pointwise 95 % binomial interval; ECDF difference with the band.


def plot_rank_histogram(ax, ranks: np.ndarray, L: int, title: str, max_bins: int = 20) -> None:
    bins = next(b for b in range(min(max_bins, L + 1), 0, -1) if (L + 1) % b == 0)
    counts = np.bincount(np.asarray(ranks).reshape(-1) // ((L + 1) // bins), minlength=bins)
    n, p = counts.sum(), 1 / bins
    F = binomial_cdf(int(n), p)
    lo, hi = np.searchsorted(F, 0.025), np.searchsorted(F, 0.975)
    ax.axhspan(lo, hi, color="0.85", label="95 % per bin")
    ax.axhline(n * p, color="0.4", lw=1)
    ax.bar(np.arange(bins), counts, width=0.9, color="C0")
    ax.set(title=title, xlabel=f"rank bin ({(L + 1) // bins} ranks each, L = {L})", ylabel="count")


def plot_ecdf_difference(ax, test: dict, title: str) -> None:
    x = np.r_[0.0, test["expected"], 1.0]                                  # fractional ranks (j+1)/(L+1), ends pinned
    lo, hi = (np.r_[0.0, b, 1.0] - x for b in test["band"])
    ax.fill_between(x, lo, hi, color="0.85", label=f"simultaneous {1 - test['alpha']:.0%} band")
    ax.plot(x, np.r_[0.0, test["ecdf"], 1.0] - x, "-o", ms=2.5, color="C3", label="ECDF − uniform")
    ax.axhline(0, color="0.4", lw=1)
    ax.set(title=f"{title} (p = {test['p_value']:.3g})", xlabel="fractional rank", ylabel="ECDF difference")
    ax.legend(fontsize=7, loc="lower center")


def save_sbc_figure(path, summaries: dict[str, dict], title: str = "") -> None:
    """One row per summary: rank histogram | ECDF difference with the band. Written atomically (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sgilo.checkpoints import atomic_write

    names = list(summaries)
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.6 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        s = summaries[name]
        plot_rank_histogram(row[0], np.asarray(s["ranks"]), s["test"]["L"], f"{name}: {s['verdict']}")
        plot_ecdf_difference(row[1], s["test"], name if s.get("independent", True) else f"{name}, dependent ranks")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
