"""Step-size control for SGILO's Langevin moves from the curvature of the data term through the generator (ours).

Why: the projected ULA step of SGILO (Daras et al., ICML 2022, Eq. 5) is stable only if η·L < 2 along every direction,
L the curvature of the potential. For the Gaussian likelihood f(v) = ‖A G(v) − y‖² / (2σ²) that curvature is, to
first order, the Gauss–Newton matrix

    M = Jᵀ AᵀA J / σ²,      J = ∂G(v)/∂v  (the generator tail's Jacobian at the iterate),

so it grows with how much of the image A observes *along the generator's range*, not with ‖A‖ alone: a centre box
(75 % of the pixels) or a luma image observes ~20× more of a face than 3 % random pixels although ‖A‖ = 1 for all three,
and a dense Gaussian Φ with ‖Φ‖² ≈ 120 (m/n = 1 %) observes about as much as a 3 % mask. A step tuned on sparse masks
therefore diverges on the first two (the default benchmark's inpaint-box and colorize rows, −165 dB), and dividing η by
‖A‖² (the former ``normalize_step``) starves compressed sensing of 100× of its step.

The prior adds its own stiffness P = −λ ∇s_θ (the Hessian of −λ log p): for the bundled h₁ prior at t_h = 0.01 it is
≈ 1/std² ≈ 10⁴ per feature, so η_h = 1e-4 alone puts η·P at ≈ 0.7–1.2, and a dense operator's data curvature on top
of it crosses the limit 2 (measured on `train/` faces, inpaint-box: h₁ diverged within 10 steps of round 1).

What: with per-variable steps D = diag(η_v) (z, h_k and the noise maps each keep their tuned step), one step of the
drift on the quadratic model is stable iff the *preconditioned* curvature

    ρ = λ_max(D^½ (M + P) D^½)

is below 2. ρ is estimated per row (chain × image) by a few power iterations, each with one forward-mode (J·t) and
one reverse-mode (Jᵀ·r) product through the generator and a central finite difference of the score
(−λ (s(v + εt) − s(v − εt)) / 2ε; the transformer's attention has no forward-mode derivative on CPU), started from the
row's own D^½-scaled drift ∇U = ∇f − λs (no random numbers are drawn, so the chains' streams are unchanged).
`step_scale` then returns min(1, κ / ρ) per row: steps are only ever lowered, never raised above the tuned values.
Power iteration approaches λ_max from below; κ < 2 keeps a margin for that under-estimate and for the change of J
along the chain. Cost: 2·iters + 1 generator-tail passes per estimate (NFE, `sgilo.solvers.rounds`): the gradient, the
VJP's forward, iters JVPs and iters − 1 reverse passes, done at the start of each round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sgilo.solvers.objective import DataFidelity
from sgilo.utils.shapes import append_dims


# ----------------------------------------------------------------------------
# Per-row squared norm and inner product of lists of tensors with a common leading dimension N.


def _row_sq(ts: Sequence[Tensor]) -> Tensor:
    return sum(t.flatten(1).square().sum(1) for t in ts)


def _row_dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------
# P·t = −λ ∇s(v)·t by a central difference, with a per-row ε that moves v by 1e-3 of its own norm.


def prior_hessian_product(score: Callable[[Tensor], Tensor], v: Tensor, t: Tensor, lam: float = 1.0,
                          rel: float = 1e-3) -> Tensor:
    """Shapes: v, t [N, ...] → [N, ...]. ``score`` maps a batch of latents to ∇ log p (same shape)."""
    tn = t.flatten(1).norm(dim=1).clamp_min(1e-30)
    eps = append_dims(rel * v.flatten(1).norm(dim=1).clamp_min(1e-6) / tn, v.ndim)
    with torch.no_grad():
        return -lam * (score(v + eps * t) - score(v - eps * t)) / (2 * eps)


# ----------------------------------------------------------------------------
# ρ = λ_max(D^½ (Jᵀ AᵀA J / σ² + P) D^½) per row, by power iteration.


def preconditioned_curvature(image_of: Callable[..., Tensor], primals: Sequence[Tensor], etas: Sequence[float],
                             fidelity: DataFidelity, start: Sequence[Tensor], iters: int = 3,
                             priors: Sequence[Callable[[Tensor, Tensor], Tensor] | None] | None = None,
                             on_reverse: Callable[[], None] | None = None, preconds: Sequence | None = None) -> Tensor:
    """Args:
        image_of: (v_1, …, v_G) → image [N, C, H, W], differentiable (forward and reverse mode) in every v_g.
        primals: the iterate's variables v_g [N, ...]; etas: their step sizes η_g > 0.
        fidelity: the data term (operator, σ_eff); start: start vectors, same shapes as primals (e.g. the gradient).
        iters: power iterations (≥ 1); each is one J·t and, except the last, one Jᵀ·r.
        priors: per variable, None or a callable (v, t) ↦ P·t, the prior's Hessian product (`prior_hessian_product`).
        on_reverse: called once per reverse pass Jᵀ·r through the stored VJP (NFE counting; `image_of` counts the
            forward passes itself). An estimate runs 1 + iters forwards (VJP primal, JVPs) and iters − 1 reverse passes.
        preconds: per variable, None or a preconditioner R (``precond_sqrt``, ``precond_sqrt_t``; `langevin_step`):
            that variable's block of D^½ becomes η^½ R, so ρ is the curvature of the preconditioned step.
    Returns ρ [N] (≥ 0): a lower estimate of the largest preconditioned curvature of each row.
    """
    if iters < 1:
        raise ValueError(f"curvature power iterations must be >= 1, got {iters!r}")
    primals = tuple(p.detach() for p in primals)
    priors = list(priors) if priors is not None else [None] * len(primals)
    scale = [float(e) ** 0.5 for e in etas]
    pre = list(preconds) if preconds is not None else [None] * len(primals)
    fwd = [(lambda v: v) if R is None else R.precond_sqrt for R in pre]          # R
    bwd = [(lambda g: g) if R is None else R.precond_sqrt_t for R in pre]        # Rᵀ
    u = [b(s.detach()).clone() for b, s in zip(bwd, start, strict=True)]
    _, vjp_fn = torch.func.vjp(image_of, *primals)
    rho = torch.zeros(primals[0].shape[0], device=primals[0].device)
    for i in range(iters):
        norm = _row_sq(u).sqrt().clamp_min(1e-30)
        t = tuple(s * f(ui / append_dims(norm, ui.ndim)) for s, f, ui in zip(scale, fwd, u, strict=True))  # D^½ û
        _, jt = torch.func.jvp(image_of, primals, t)                                               # J D^½ û
        ata, quad = fidelity.normal_product(jt)                                                    # AᵀA J t / σ²
        pt = [torch.zeros_like(ti) if P is None else P(v, ti) for P, v, ti in zip(priors, primals, t, strict=True)]
        rho = quad + _row_dot(t, pt)                                                               # ûᵀ D^½(M+P)D^½ û
        if i + 1 < iters:
            if on_reverse is not None:
                on_reverse()
            u = [s * b(g + q) for s, b, g, q in zip(scale, bwd, vjp_fn(ata), pt, strict=True)]    # D^½ᵀ (M+P) D^½ û
    return rho.detach().clamp_min(0.0)


# ----------------------------------------------------------------------------
# Per-row step factor min(1, κ/ρ).


def step_scale(rho: Tensor, kappa: float) -> Tensor:
    """Shapes: rho [N] → [N] in (0, 1]; rows with ρ ≤ κ keep their step."""
    return (kappa / rho.clamp_min(1e-30)).clamp(max=1.0)
