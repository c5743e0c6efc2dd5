"""SGILO — Score-Guided Intermediate Layer Optimization (Daras et al., ICML 2022): posterior sampling over (z, h_k).

Same rounds as ILO (`sgilo.solvers.ilo`), but each of K chains (run as one batch, K·B rows) samples instead of
optimising. Two modes (equations in `sgilo.solvers.langevin`):

* ``langevin`` (default) — projected ULA on U = f − λ log p_{t_h} for every variable v ∈ {z, h_k, trainable noises}:
  v ← Π(v − η_v ∇_v f + η_v λ s_v(v, t_h) + sqrt(2η_v/β) u)  (Eq. 5). Scores: s_z from ``priors['z']`` (fallback: the
  exact N(0, I) score −z of the Gaussianised code), s_h from ``priors[f'h{k}']`` (no prior term when absent), noise maps
  −n (they are N(0, I) by construction). β = inf gives the MAP by projected gradient ascent.
* ``reference`` — the original hybrid for parity (§3.6): Adam (lr 0.05, constant) on f, then
  v ← Π(v + τ Δ(v) + ν u) with the hot-sampler displacement Δ for z (always noised, as in the reference) and for h_k
  when a prior for layer k exists; sgilo noise rule (noises of block k only).

GeoCross (`geocross`, PULSE; reference §1.8) on the w+ rows read by blocks ≥ k: in ``reference`` mode it is part of the
Adam loss with the reference weight 0.001 (on w rather than z, and without the reference's off-by-one slice, §7.5). In
``langevin`` mode its default is 0: a non-zero weight adds g·GeoCross to the potential U, so the chains then sample
∝ exp(−f − g·GeoCross) p^λ — a different, non-Bayesian target — instead of the posterior.

Deviations from the reference defaults, chosen for 64×64 on a CPU: z starts from N(0, I) per chain (the reference's
all-ones start would make every chain identical), K = 4 chains, and the default steps are (100, 100, 100).

Step control (ours, ``step_control='curvature'``; `sgilo.solvers.curvature`): the reference uses one fixed step for
every operator. A step tuned on sparse masks diverges on operators that observe most of the image (centre box, luma),
because the data term's curvature through the generator grows ~20× while ‖A‖ stays 1. At the start of every round the
preconditioned curvature ρ of the potential (data Gauss–Newton term plus prior stiffness) is estimated per chain and
the round's steps of that chain are multiplied by min(1, κ/ρ); they are never raised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sgilo.generator.latents import GaussianizedW
from sgilo.generator.stylegan2 import Generator
from sgilo.operators.base import LinearOperator
from sgilo.solvers.curvature import preconditioned_curvature, prior_hessian_product, step_scale
from sgilo.solvers.diagnostics import summarize, warn_if_unmixed
from sgilo.solvers.ilo import adam_step_factory
from sgilo.solvers.langevin import check_positive, langevin_step, reference_step
from sgilo.solvers.result import Latents, Result
from sgilo.solvers.rounds import (Constraints, Iterate, Problem, active_rows, check_precision, check_steps,
                                  geocross_penalty, init_iterate, make_problem, render, render_fn, run_rounds,
                                  sampler_result, start_iterate, traces)
from sgilo.solvers.schedules import per_round
from sgilo.utils.shapes import assert_shape


STEP_CONTROLS = ("none", "curvature")


# ----------------------------------------------------------------------------
# SGILO hyper-parameters; reference values from sgilo:configs/solve_inverse.yaml (§8.1) where they exist.


@dataclass(frozen=True)
class SGILOConfig:
    mode: str = "langevin"                  # 'langevin' (projected ULA, Eq. 5) or 'reference' (hybrid, §3.6).
    chains: int = 4                         # K chains (posterior samples) per image.
    steps: tuple[int, ...] = (100, 100, 100)  # Steps per round, rounds k = 0..len-1 (reference: 300, 300, 300).
    eta: float = 3e-5                       # Langevin step η for z and noise maps (ours; tuned at 64 px, σ_min 0.05).
    eta_h: float | None = None              # Langevin step for h_k (None: same as eta).
    step_control: str = "none"              # langevin mode: "none" or "curvature" (lower η per row so ρ ≤ κ; ours).
    kappa_z: float = 30.0                   # curvature control: bound on ρ when all variables are sphere-projected.
    kappa_h: float = 1.0                    # curvature control: bound on ρ once h_k moves (ULA stable: ρ < 2).
    curvature_iters: int = 3                # curvature control: power iterations per estimate (round start).
    lam: float = 1.0                        # Prior weight λ (1 = Bayes).
    beta: float = 1.0                       # Inverse temperature β (1 = posterior, inf = MAP).
    t_h: float = 0.01                       # Diffusion time of the score s_θ(·, t_h) (reference hot time 0.01).
    lr: float = 0.05                        # reference mode: Adam lr (constant).
    tau: float = 0.1                        # reference mode: latent_temperature τ_z.
    tau_h: tuple[float, ...] | None = None  # reference mode: gen_temperature per round (None: 0 for k=0, else 0.1).
    noise_std: float = 0.025                # reference mode: latent_noise_temp ν_z.
    noise_std_h: float = 0.025              # reference mode: gen_noise_temp ν_h.
    range_z: float = 6.0882                 # reference mode: min-max range r_z of the latent normalisation.
    range_h: float = 3.7460                 # reference mode: min-max range r_h of the layer normalisation.
    noise_lookahead: int = 0                # Noise maps of blocks k..k+lookahead trainable (sgilo: block k only).
    project: bool = True                    # Spherical projection Π of z rows and noise maps.
    l1_radius_z: tuple[float, ...] | None = None      # Optional per-round ℓ1 radii (as ILO).
    l1_radius_h: tuple[float, ...] | None = None
    l1_radius_noise: tuple[float, ...] | None = None
    init: str = "randn"                     # z init per chain ('ones' = reference, identical chains).
    carry_skip: bool = True                 # Exact split.
    sigma_min: float = 0.05                 # Noise floor σ_min of the likelihood.
    precision: str = "fp32"             # Generator tail in 'fp32' or 'bf16' autocast (f, updates fp32).
    lpips_weight: float = 0.0               # Optional LPIPS weight; needs `perceptual`.
    geocross: float | None = None           # GeoCross weight (None: 0.001 in reference mode, 0 in langevin mode).
    seed: int = 0                           # Base seed; row (c, b) uses (seed, c, b) unless per-image seeds.
    progress: bool = False                  # tqdm bar per round.
    perceptual: Callable | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.mode not in ("langevin", "reference"):
            raise ValueError(f"SGILO mode must be 'langevin' or 'reference', got {self.mode!r}")
        if not isinstance(self.chains, int) or self.chains < 1:
            raise ValueError(f"number of chains/samples K must be an integer >= 1, got {self.chains!r}")
        check_positive(self.eta, "step size eta")
        if self.eta_h is not None:
            check_positive(self.eta_h, "step size eta_h")
        check_positive(self.lr, "learning rate lr")
        if self.step_control not in STEP_CONTROLS:
            raise ValueError(f"step_control: expected one of {list(STEP_CONTROLS)}, got {self.step_control!r}")
        check_positive(self.kappa_z, "curvature bound kappa_z")
        check_positive(self.kappa_h, "curvature bound kappa_h")
        if not isinstance(self.curvature_iters, int) or self.curvature_iters < 1:
            raise ValueError(f"curvature_iters must be an integer >= 1, got {self.curvature_iters!r}")
        check_positive(self.beta, "inverse temperature beta", allow_inf=True)
        check_positive(self.t_h, "score time t_h")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"prior weight lam must be a finite number >= 0, got {self.lam!r}")
        for name in ("tau_h", "l1_radius_z", "l1_radius_h", "l1_radius_noise"):
            per_round(getattr(self, name), len(self.steps), name)
        if self.geocross is not None and not (math.isfinite(self.geocross) and self.geocross >= 0):
            raise ValueError(f"geocross weight must be a finite number >= 0, got {self.geocross!r}")

    @property
    def geocross_weight(self) -> float:
        """The GeoCross weight in use: the given one, else 0.001 (reference mode, §8.1) or 0 (langevin mode)."""
        if self.geocross is not None:
            return float(self.geocross)
        return 0.001 if self.mode == "reference" else 0.0


# ----------------------------------------------------------------------------
# s(x, t_h) from a prior with `.score(x, t)` (t as a [N] tensor), shape-checked against its latent_shape.


def prior_score(prior, x: Tensor, t_h: float, name: str) -> Tensor:
    shape = getattr(prior, "latent_shape", None)
    if shape is not None and tuple(shape) != tuple(x.shape[1:]):
        raise ValueError(f"prior {name!r} has latent_shape {tuple(shape)}, but the solver's {name} is "
                         f"{tuple(x.shape[1:])}")
    t = torch.full([x.shape[0]], float(t_h), device=x.device, dtype=x.dtype)
    s = prior.score(x, t)
    assert_shape(s, list(x.shape), f"score of prior {name!r}")
    return s


# ----------------------------------------------------------------------------
# Score of every variable of round k: z and h from the priors (or fallbacks), noise maps −n.


def variable_scores(it: Iterate, priors: Mapping, t_h: float) -> dict[str, Tensor | None]:
    out: dict[str, Tensor | None] = {}
    for name, p in it.params().items():
        fn = score_fn(it, name, priors, t_h)
        out[name] = None if fn is None else fn(p.detach())
    return out


# ----------------------------------------------------------------------------
# The score function of one variable: z from priors['z'] (else the N(0, I) score −z), h_k from priors[f'h{k}'] (else
# none), noise maps −n.


def score_fn(it: Iterate, name: str, priors: Mapping, t_h: float) -> Callable[[Tensor], Tensor] | None:
    if name == "z":
        return (lambda v: prior_score(priors["z"], v, t_h, "z")) if "z" in priors else (lambda v: -v)
    if name == "h":
        key = f"h{it.k}"
        return (lambda v: prior_score(priors[key], v, t_h, key)) if key in priors else None
    return lambda v: -v


# ----------------------------------------------------------------------------
# The prior's Hessian product (v, t) ↦ −λ ∇s(v)·t for the curvature control, or None without a prior term.


def prior_hessian_fn(score: Callable[[Tensor], Tensor] | None, lam: float):
    if score is None or lam == 0:
        return None
    return lambda v, t: prior_hessian_product(score, v, t, lam)


# ----------------------------------------------------------------------------
# Curvature step control (`sgilo.solvers.curvature`): one factor min(1, κ/ρ) per row for all variables of the round.
# κ = kappa_z when every variable is sphere-projected (round 0 with projection on: the chain stays bounded, and the
# tuned steps on sparse masks sit at ρ ≈ 10–100 there); κ = kappa_h (< 2, the ULA bound) once the round has the
# unprojected h_k — on train/ faces (inpaint-box) a z move at ρ = 10 beside a stable h move (ρ_h = 1) still drove
# h₁ to diverge within 10 steps, while ρ ≤ 1 for the joint move kept it stable.


def curvature_control(problem: Problem, it: Iterate, eta: dict[str, float], c: SGILOConfig, priors: Mapping) -> dict:
    """Returns {"rho": [N] (at the tuned steps), "scale": [N], "kappa": κ used}."""
    params = {n: p.detach() for n, p in it.params().items()}
    names = list(params)
    with torch.enable_grad():
        leaves = [p.clone().requires_grad_(True) for p in params.values()]
        f = problem.fidelity(render_fn(problem, it, names)(*leaves))
        grads = torch.autograd.grad(f.sum(), leaves)
    scores = variable_scores(it, priors, c.t_h)
    drift = [g if scores[n] is None else g - c.lam * scores[n] for n, g in zip(names, grads, strict=True)]   # ∇U
    hess = [prior_hessian_fn(score_fn(it, n, priors, c.t_h), c.lam) for n in names]
    rho = preconditioned_curvature(render_fn(problem, it, names), list(params.values()), [eta[n] for n in names],
                                   problem.fidelity, drift, c.curvature_iters, hess)
    kappa = c.kappa_z if (c.project and "h" not in params) else c.kappa_h
    return {"rho": rho, "scale": step_scale(rho, kappa), "kappa": kappa}


# ----------------------------------------------------------------------------
# One `langevin`-mode step on every variable (Eq. 5), then ℓ1 balls and spheres.


def langevin_step_factory(problem: Problem, it: Iterate, c: SGILOConfig, priors: Mapping, cons: Constraints,
                          penalty: Callable[[Iterate], Tensor] | None = None, record: list | None = None):
    """``record``: when given, the round's curvature-control estimates are appended to it (diagnostics)."""
    mask_z = active_rows(problem.synthesis, it.k, it.z)
    eta: dict[str, float | Tensor] = {n: (c.eta_h if (n == "h" and c.eta_h is not None) else c.eta)
                                      for n in it.params()}
    if c.step_control == "curvature":
        ctl = curvature_control(problem, it, eta, c, priors)
        eta = {n: e * ctl["scale"] for n, e in eta.items()}
        if record is not None:
            record.append({"k": it.k, "kappa": ctl["kappa"], "rho": ctl["rho"].tolist(),
                           "scale": ctl["scale"].tolist()})

    def step(i: int) -> tuple[Tensor, Tensor]:
        x = render(problem, it)
        f = problem.fidelity(x)                                           # [N]
        params = it.params()
        u = f if penalty is None else f + penalty(it)                     # potential minus the prior term
        grads = dict(zip(params, torch.autograd.grad(u.sum(), list(params.values())), strict=True))
        scores = variable_scores(it, priors, c.t_h)
        with torch.no_grad():
            for n, p in params.items():
                new = langevin_step(p.detach(), grads[n], scores[n], eta[n], c.lam, c.beta, problem.gens,
                                    mask=mask_z if n == "z" else None)
                p.copy_(new)
        cons.apply(it)
        return x.detach(), f.detach()

    return step


# ----------------------------------------------------------------------------
# The reference hybrid's post-Adam move on z (always) and h_k (when τ_h > 0 and a prior for layer k exists).


def reference_after(problem: Problem, c: SGILOConfig, priors: Mapping, tau_h: float) -> Callable[[Iterate], None]:
    def after(it: Iterate) -> None:
        with torch.no_grad():
            s = variable_scores(it, priors, c.t_h)
            z = reference_step(it.z.detach(), s["z"], c.tau, c.t_h, c.range_z, c.noise_std, problem.gens,
                               mask=active_rows(problem.synthesis, it.k, it.z))
            it.z.copy_(z)
            if it.h is not None and tau_h > 0 and s.get("h") is not None:
                it.h.copy_(reference_step(it.h.detach(), s["h"], tau_h, c.t_h, c.range_h, c.noise_std_h, problem.gens))

    return after


# ----------------------------------------------------------------------------
# Sample from p(z, h | y) by SGILO.


def solve(y: Tensor, operator: LinearOperator, G: Generator, fit: GaussianizedW | None = None, *,
          priors: Mapping | None = None, config: SGILOConfig = SGILOConfig(),  # noqa: B008
          generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
          init: Latents | None = None) -> Result:
    """SGILO posterior samples, their mean and per-pixel std.

    Args: priors maps 'z' and 'h{k}' to objects with `.score(x, t)` (∇ log p_t in raw latent units);
    seeds — one seed per image: chain c of image b draws from the stream (seeds[b], c), whatever the batch;
    init — saved `Latents` to continue from (K·B rows, or B rows tiled over the chains; rounds < its k skipped).
    Shapes: y [B, ...]; returns samples [K, B, C, H, W], x_hat/std [B, C, H, W], z [K·B, L, D] (row c·B + b).
    """
    c, priors = config, dict(priors or {})
    problem = make_problem(y, operator, G, fit, c.chains, c.seed, c.sigma_min, generator, c.progress, c.perceptual,
                           c.lpips_weight, seeds, c.precision)
    steps = check_steps(tuple(c.steps), problem.synthesis)
    penalty = geocross_penalty(problem, c.geocross_weight)
    radii = [per_round(getattr(c, n), len(steps), n) for n in ("l1_radius_z", "l1_radius_h", "l1_radius_noise")]
    tau_h = list(c.tau_h) if c.tau_h is not None else [0.0] + [0.1] * (len(steps) - 1)
    curvature: list[dict] = []

    def make_step(it: Iterate, k: int):
        cons = Constraints.at(it, c.project, radii[0][k], radii[1][k], radii[2][k])
        if c.mode == "langevin":
            return langevin_step_factory(problem, it, c, priors, cons, penalty, curvature)
        return adam_step_factory(problem, it, steps[k], lambda i: c.lr, cons, penalty,
                                 after=reference_after(problem, c, priors, tau_h[k]))

    hint = (f"lower the step size eta (now {c.eta}{'' if c.eta_h is None else f', eta_h {c.eta_h}'})"
            if c.mode == "langevin" else f"lower the learning rate lr (now {c.lr}) or tau (now {c.tau})")
    start = init_iterate(problem, c.init) if init is None else start_iterate(problem, init, len(steps))
    it, seconds, stopped = run_rounds(problem, start, steps, make_step, c.noise_lookahead,
                                      c.carry_skip, f"sgilo-{c.mode}", hint)
    tr = traces(problem)
    last = tr["round"] == (tr["round"].max() if len(tr["round"]) else 0)
    diag = summarize({"data": tr["data"][last], "pixels": tr["pixels"][last]}) if last.any() else {}
    diag.update({"stopped": stopped, "sigma_eff": problem.fidelity.sigma, "priors": sorted(priors),
                 "curvature": curvature or None,
                 "warning": warn_if_unmixed(diag) if diag else None})
    return sampler_result(problem, it, c, seconds, diag)
