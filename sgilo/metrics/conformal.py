"""Split-conformal calibration of the per-pixel posterior intervals of SGILO (Daras et al., ICML 2022).

Base interval at level q from K posterior samples (the predictive interval of `sgilo.metrics.posterior.coverage`):

    x̄ ± half_q,     half_q = t_{K−1}((1+q)/2) · s · sqrt(1 + 1/K)         (s: per-pixel sample std, K − 1)

Calibrated interval: x̄ ± λ_q · half_q with one scale λ_q per task and level, fitted on n calibration images by
conformal risk control (Angelopoulos, Bates, Fisch, Lei & Schuster, "Conformal risk control", ICLR 2024; used for
image-to-image regression by Angelopoulos et al., "Image-to-image regression with distribution-free uncertainty
quantification and applications in imaging", ICML 2022, whose risk is this same fraction of uncovered pixels).

Loss of image i: L_i(λ) = 1 − (fraction of its pixels inside x̄ ± λ·half_q) ∈ [0, 1], non-increasing in λ.

    λ̂ = inf { λ : n/(n+1) · R̂_n(λ) + 1/(n+1) ≤ α },     R̂_n(λ) = (1/n) Σ_i L_i(λ),     α = 1 − q

Guarantee (Angelopoulos et al., "Conformal risk control", Theorem 1): if the n calibration images and a new image are
exchangeable (drawn i.i.d. from the same distribution of faces, task and noise, and run with the same solver
configuration), then E[L_{n+1}(λ̂)] ≤ α, i.e. the EXPECTED fraction of covered pixels of a new image is ≥ q, where the
expectation is over the calibration set and the new image together (marginal, not conditional on the calibration set,
not per image, not per pixel). It is nearly tight: for losses continuous in λ their Theorem 2 gives
E[L_{n+1}(λ̂)] ≥ α − 2/(n+1); ours jumps by 1/(C·H·W) per pixel, so the bound holds up to that. It says nothing about
images unlike the calibration ones (another data set, flipped or colour-shifted faces, other operators or solver
settings). It needs (n + 1)α ≥ 1 (n ≥ 9 for q = 0.9); the term 1/(n+1) is the finite-sample correction.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch
from torch import Tensor

from sgilo.metrics.posterior import student_t_quantile
from sgilo.utils.shapes import assert_shape

FORMAT = "sgilo-interval-calibration"
VERSION = 1
LEVELS = (0.5, 0.9)


# ----------------------------------------------------------------------------
# Base interval: mean and half-width t_{K−1}((1+q)/2) · s · sqrt(1 + 1/K) per pixel.


def base_interval(samples: Tensor, q: float) -> tuple[Tensor, Tensor]:
    """Shapes: samples [K, B, C, H, W] with K ≥ 2 → (mean, half) each [B, C, H, W]."""
    assert_shape(samples, [None, None, None, None, None], "samples")
    K = samples.shape[0]
    if K < 2:
        raise ValueError(f"samples: expected K >= 2 posterior samples on dim 0, got K = {K}")
    if not 0 < q < 1:
        raise ValueError(f"interval level q: expected 0 < q < 1, got {q!r}")
    half = t_quantile((1 + q) / 2, K - 1) * samples.std(dim=0) * math.sqrt(1 + 1 / K)
    return samples.mean(dim=0), half


@functools.lru_cache(maxsize=64)
def t_quantile(p: float, nu: int) -> float:
    """`student_t_quantile`, cached (it integrates numerically; the same few (p, ν) recur)."""
    return student_t_quantile(p, nu)


# ----------------------------------------------------------------------------
# Normalised score per pixel: the smallest λ whose interval covers the truth, |x − x̄| / half (0/0 → 0, c/0 → inf).


def interval_scores(samples: Tensor, truth: Tensor, q: float) -> Tensor:
    """Shapes: samples [K, B, C, H, W], truth [B, C, H, W] → [B, C·H·W]."""
    mean, half = base_interval(samples, q)
    assert_shape(truth, list(mean.shape), "truth")
    err = (truth - mean).abs().double()
    s = torch.where(half > 0, err / half.double().clamp_min(1e-300), torch.where(err > 0, math.inf, 0.0))
    return s.flatten(1)


# ----------------------------------------------------------------------------
# λ̂ of conformal risk control for the loss "fraction of uncovered pixels" (module docstring).


def fit_scale(scores: Tensor, q: float) -> float:
    """Scores [n, P] (`interval_scores` of n calibration images) → λ̂ for level q.

    1 − R̂_n(λ) is the weighted ECDF of all scores, weight 1/(n·P) each; λ̂ is the smallest score whose cumulative
    weight reaches w* = 1 − ((n+1)α − 1)/n. Raises when (n+1)α < 1 (too few images for the level)."""
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores: expected [n_images, n_pixels], got {tuple(scores.shape)}")
    n, alpha = scores.shape[0], 1 - q
    if (n + 1) * alpha < 1 - 1e-9:
        need = math.ceil(1 / alpha - 1e-9) - 1
        raise ValueError(f"conformal level {q}: needs n >= {need} calibration images, got {n}")
    w_star = min(1.0, 1 - ((n + 1) * alpha - 1) / n)
    s = scores.double().flatten().sort().values
    cum = torch.arange(1, s.numel() + 1, dtype=torch.float64) / s.numel()
    idx = int(torch.searchsorted(cum, torch.tensor([w_star - 1e-12], dtype=torch.float64)).item())
    return float(s[min(idx, s.numel() - 1)])


# ----------------------------------------------------------------------------
# Coverage and mean width of x̄ ± λ·half.


def interval_coverage(samples: Tensor, truth: Tensor, q: float, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Shapes: → (coverage [B], mean width [B]) of x̄ ± scale·half_q; width = 2·scale·half (image units)."""
    mean, half = base_interval(samples, q)
    lo, hi = mean - scale * half, mean + scale * half
    inside = (truth >= lo) & (truth <= hi)
    return inside.flatten(1).float().mean(1), (2 * scale * half).flatten(1).mean(1)


# ----------------------------------------------------------------------------
# Calibrated intervals for a task from a loaded calibration.


def task_scale(calibration: dict, task: str, q: float) -> float:
    """λ_q of ``task`` (a bench task preset name, e.g. 'inpaint-random-3'); one clear line when missing."""
    tasks = calibration.get("tasks", {})
    if task not in tasks:
        raise KeyError(f"interval calibration has no task {task!r}; it has {sorted(tasks)}")
    levels = tasks[task]["levels"]
    key = _level_key(q)
    if key not in levels:
        raise KeyError(f"interval calibration of task {task!r} has no level {q}; it has {sorted(levels)}")
    return float(levels[key]["scale"])


def apply_calibration(samples: Tensor, task: str, calibration: dict, levels: tuple[float, ...] = LEVELS) -> dict:
    """Calibrated intervals x̄ ± λ_q·half_q: {q: {"lo": [B, C, H, W], "hi": [B, C, H, W], "scale": λ_q}}."""
    out = {}
    for q in levels:
        lam = task_scale(calibration, task, q)
        mean, half = base_interval(samples, q)
        out[q] = {"lo": mean - lam * half, "hi": mean + lam * half, "scale": lam}
    return out


def calibrated_coverage(samples: Tensor, truth: Tensor, task: str, calibration: dict | None,
                        levels: tuple[float, ...] = LEVELS) -> dict:
    """Coverage and width raw and, when ``calibration`` has ``task``, calibrated; JSON-ready per-image lists:
    {"coverage50": [B], "width50": [B], "coverage50_cal": [B] | None, "width50_cal": [B] | None, "scale50": λ}."""
    out: dict = {}
    for q in levels:
        tag = f"{round(q * 100)}"
        cov, width = interval_coverage(samples, truth, q)
        out[f"coverage{tag}"], out[f"width{tag}"] = cov.tolist(), width.tolist()
        has = calibration is not None and task in calibration.get("tasks", {})
        lam = task_scale(calibration, task, q) if has else None
        cc, cw = interval_coverage(samples, truth, q, lam) if has else (None, None)
        out[f"coverage{tag}_cal"] = None if cc is None else cc.tolist()
        out[f"width{tag}_cal"] = None if cw is None else cw.tolist()
        out[f"scale{tag}"] = lam
    return out


def coverage_records(samples: Tensor, truth: Tensor, task: str, calibration: dict | None,
                     levels: tuple[float, ...] = LEVELS) -> list[dict]:
    """`calibrated_coverage` as one dict of floats per image (keys with no calibration left out), e.g.
    {"coverage90": .., "width90": .., "coverage90_cal": .., "width90_cal": .., "scale90": ..} — for result rows."""
    cc = calibrated_coverage(samples, truth, task, calibration, levels)
    B = truth.shape[0]
    return [{k: (v[b] if isinstance(v, list) else v) for k, v in cc.items() if v is not None} for b in range(B)]


# ----------------------------------------------------------------------------
# Calibration files: JSON beside the model (sgilo/models/<name>/interval_calibration.json) or any path.


def _level_key(q: float) -> str:
    return f"{q:g}"


def calibration_path(name: str = "utkface64") -> Path:
    """The calibration file stored with the bundled model ``name``."""
    return Path(__file__).resolve().parent.parent / "models" / name / "interval_calibration.json"


def load_calibration(name_or_path: str | Path = "utkface64", required: bool = False) -> dict | None:
    """A bundled name (a folder of `sgilo/models`) or a JSON path → the calibration dict; None when the bundled file
    is absent and not ``required``."""
    p = Path(name_or_path)
    path = p if p.suffix == ".json" or p.exists() else calibration_path(str(name_or_path))
    if not path.exists():
        if required:
            raise FileNotFoundError(f"interval calibration not found: {path} (run `sgilo calibrate --conformal`)")
        return None
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ValueError(f"{path}: expected an interval calibration file ({FORMAT} v{VERSION}), got format "
                         f"{data.get('format')!r} v{data.get('version')!r}")
    return data
