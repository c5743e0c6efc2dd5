"""SGILO — Score-Guided Intermediate Layer Optimization (Daras et al., ICML 2022): posterior sampling over (z, h_k).

Same rounds as ILO (`sgilo.solvers.ilo`), but each of K chains (run as one batch, K·B rows) samples instead of
optimising. Two modes (equations in `sgilo.solvers.langevin`):

* ``langevin`` (default) — projected ULA on U = f − λ log p_{t_h} for every variable v ∈ {z, h_k, trainable noises}:
  v ← Π(v − η_v ∇_v f + η_v λ s_v(v, t_h) + sqrt(2η_v/β) u)  (Eq. 5). Scores: s_z from ``priors['z']`` (fallback: the
  exact N(0, I) score −z of the Gaussianised code), s_h from ``priors[f'h{k}']`` (no prior term when absent), noise maps
  −n (they are N(0, I) by construction). β = inf gives the MAP by projected gradient ascent.
* ``reference`` — the original hybrid for parity (docs/original-code.md#the-sgilo-update): Adam (lr 0.05) on f, then
  v ← Π(v + τ Δ(v) + ν u) with the hot-sampler displacement Δ for z (always noised, as in the reference) and for h_k
  when a prior for layer k exists; sgilo noise rule (noises of block k only).

GeoCross (`geocross`, PULSE.py) on the w+ rows read by blocks ≥ k: in ``reference`` mode it is part of the Adam
loss with the original weight 0.001 (on w rather than z, and without the original's off-by-one slice,
docs/original-code.md#bug-5). In
``langevin`` mode its default is 0: a non-zero weight adds g·GeoCross to the potential U, so the chains then sample
∝ exp(−f − g·GeoCross) p^λ — a different, non-Bayesian target — instead of the posterior.

Deviations from the reference defaults, chosen for 64×64 on a CPU: z starts from N(0, I) per chain (the reference's
all-ones start would make every chain identical), K = 4 chains, and the default steps are (100, 100, 100).

Step control (ours, ``curvature=CurvatureControl()``; `sgilo.solvers.curvature`): the reference uses one fixed step for
every operator. A step tuned on sparse masks diverges on operators that observe most of the image (centre box, luma),
because the data term's curvature through the generator grows ~20× while ‖A‖ stays 1. At the start of every round the
preconditioned curvature ρ of the potential (data Gauss–Newton term plus prior stiffness) is estimated per chain and
the round's steps of that chain are multiplied by min(1, κ/ρ); they are never raised.

Blow-up guard (ours, `Rollback`): a chain whose data term rises above its round-start value f₀ by more than
``guard.data_rise`` · m / min(β, 1) (m measurements per image), whose ‖h_k‖ exceeds ``guard.h_factor`` × its
round-start norm, or whose iterate is non-finite is rolled back to its last good iterate and continues with half its
step. The allowance is 4× the largest rise a stable chain shows on average: near a mode the posterior's data term sits
rank/(2β) above its minimum (Laplace approximation; the rank of A J is at most m), and a chain that starts away from a
mode lowers f. Unstable ULA steps (η ρ > 2 along some direction) multiply the deviation at every step instead
(a relative threshold of 1000 × f₀ let such a chain end 30 × above f₀). A chain that blows up again after
``guard.retries`` halvings stops: it keeps its last good iterate for the rest of the run, the other chains go on, and
one line says so (``diagnostics['stopped']``, logger ``sgilo``; its rows in ``diagnostics['stopped_rows']``). When
every chain has stopped, the run ends. The iterate after a round's last step is not checked (its data term is first
computed by the next round or the final render).

Option of issue 16 (off by default): ``t_schedule`` = (t_max, t_min) anneals the score time geometrically over each
round's steps, the burn-in's included (annealed Langevin, Song & Ermon, NeurIPS 2019, Alg. 1). The likelihood's σ is
the operator's whenever it declares one (`sgilo.solvers.objective.effective_sigma`); σ_min only stands in for
noiseless operators.

Burn-in (``burn_in`` > 0, ours): the first fraction of every round's steps are Adam steps (CSGM's optimiser, Bora et
al. 2017) on the same potential U = f − λ log p, the prior entering through its score (`prior_surrogate`); the chain
then samples from where they end. It moves the start towards a mode and leaves the target unchanged (an MCMC
initialisation); it costs the same NFE as the Langevin steps it replaces. Within a few hundred evaluations the
curvature-limited Langevin steps on z get less far than Adam (docs/tuning.md), which is why the bundled preset uses it.

Preconditioning (``precondition=True``, issue 16): h_k's steps use R Rᵀ = the covariance of its prior's training
latents (`sgilo.priors.lowrank`: x ← x + η R Rᵀ ∇ log π + sqrt(2η) R u, same stationary law; Roberts & Stramer 2002),
so η_h is in units of that covariance and the prior's curvature is ≈ 1 along every direction of h_k; the curvature
control then measures ρ of the preconditioned step.

The langevin-mode solve is one loop, `solve` → `sgilo_step` → `langevin_step` (Eq. 5): read `solve` top to bottom.
NFE: ``diagnostics['nfe']`` counts generator-tail evaluations per image (`sgilo.solvers.rounds`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm import tqdm

from sgilo.generator.latents import GaussianizedW
from sgilo.generator.stylegan2 import Generator
from sgilo.operators.base import LinearOperator
from sgilo.solvers.curvature import preconditioned_curvature, prior_hessian_product, step_scale
from sgilo.solvers.diagnostics import summarize, warn_if_unmixed
from sgilo.solvers.ilo import adam_step_factory
from sgilo.solvers.langevin import check_positive, langevin_step, reference_step
from sgilo.solvers.result import Latents, Result
from sgilo.solvers.rounds import (Constraints, Iterate, Problem, active_rows, begin_round, check_precision, check_steps,
                                  geocross_penalty, h_move, init_iterate, make_problem, record_step, render, render_fn,
                                  run_rounds, sampler_result, start_iterate, traces)
from sgilo.solvers.schedules import per_round, round_radii
from sgilo.utils.shapes import assert_shape

STEP_CONTROLS = ("none", "curvature")


# ----------------------------------------------------------------------------
# Options of the reference hybrid (mode 'reference'); values from sgilo:configs/solve_inverse.yaml.


@dataclass(frozen=True)
class ReferenceOptions:
    lr: float = 0.05                        # Adam lr (constant).
    tau: float = 0.1                        # latent_temperature τ_z.
    tau_h: tuple[float, ...] | None = None  # gen_temperature per round (None: 0 for k=0, else 0.1).
    noise_std: float = 0.025                # latent_noise_temp ν_z.
    noise_std_h: float = 0.025              # gen_noise_temp ν_h.
    range_z: float = 6.0882                 # min-max range r_z of the latent normalisation.
    range_h: float = 3.7460                 # min-max range r_h of the layer normalisation.

    def __post_init__(self) -> None:
        check_positive(self.lr, "learning rate lr")


# ----------------------------------------------------------------------------
# Curvature step control (ours, `sgilo.solvers.curvature`): steps of a chain × min(1, κ/ρ) at each round start.


@dataclass(frozen=True)
class CurvatureControl:
    kappa_z: float = 30.0                   # bound on ρ when all variables are sphere-projected (round 0).
    kappa_h: float = 1.0                    # bound on ρ once h_k moves (ULA stable: ρ < 2).
    iters: int = 3                          # power iterations per estimate (round start).

    def __post_init__(self) -> None:
        check_positive(self.kappa_z, "curvature bound kappa_z")
        check_positive(self.kappa_h, "curvature bound kappa_h")
        if not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"curvature iters must be an integer >= 1, got {self.iters!r}")


# ----------------------------------------------------------------------------
# Blow-up guard (ours, issue 16): thresholds per chain, relative to the round start, and the number of step halvings.


@dataclass(frozen=True)
class BlowupGuard:
    data_rise: float = 2.0                  # blow-up: f > round-start f + data_rise · m / min(β, 1), m measurements.
    h_factor: float = 1e2                   # blow-up: ‖h_k‖ > h_factor × round-start ‖h_k‖.
    retries: int = 3                        # halvings of one chain's step before the run stops.

    def __post_init__(self) -> None:
        check_positive(self.data_rise, "guard data_rise")
        check_positive(self.h_factor, "guard h_factor")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"guard retries must be an integer >= 0, got {self.retries!r}")


# ----------------------------------------------------------------------------
# SGILO hyper-parameters; reference values from sgilo:configs/solve_inverse.yaml where they exist.


@dataclass(frozen=True)
class SGILOConfig:
    mode: str = "langevin"                  # 'langevin' (projected ULA, Eq. 5) or 'reference' (hybrid).
    chains: int = 4                         # K chains (posterior samples) per image.
    steps: tuple[int, ...] = (100, 100, 100)  # Steps per round, rounds k = 0..len-1 (reference: 300, 300, 300).
    eta: float = 3e-5                       # Langevin step η for z and noise maps (ours; tuned at 64 px, σ_min 0.05).
    eta_h: float | None = None              # Langevin step for h_k (None: same as eta).
    curvature: CurvatureControl | None = None   # langevin mode: curvature step control (None: fixed steps).
    lam: float = 1.0                        # Prior weight λ (1 = Bayes).
    beta: float = 1.0                       # Inverse temperature β (1 = posterior, inf = MAP).
    t_h: float = 0.01                       # Diffusion time of the score s_θ(·, t_h) (reference hot time 0.01).
    t_schedule: tuple[float, float] | None = None   # (t_max, t_min): geometric score time per round (None: t_h).
    precondition: bool = False              # h_k steps preconditioned by its prior's covariance (R Rᵀ; issue 16).
    burn_in: float = 0.0                    # Fraction of every round's steps run first as Adam on U (towards a mode).
    burn_in_lr: float = 0.1                 # Adam learning rate of the burn-in (CSGM's, Bora et al. 2017).
    guard: BlowupGuard = BlowupGuard()      # langevin mode: per-chain roll-back and step halving on blow-ups.
    reference: ReferenceOptions = ReferenceOptions()   # mode 'reference' only.
    noise_lookahead: int = 0                # Noise maps of blocks k..k+lookahead trainable (sgilo: block k only).
    project: bool = True                    # Spherical projection Π of z rows and noise maps.
    l1_radius_z: tuple[float, ...] | None = None      # Optional per-round ℓ1 radii (as ILO).
    l1_radius_h: tuple[float, ...] | None = None
    l1_radius_noise: tuple[float, ...] | None = None
    init: str = "randn"                     # z init per chain ('ones' = reference, identical chains).
    carry_skip: bool = True                 # Exact split.
    sigma_min: float = 0.05                 # Likelihood σ of noiseless operators (σ = 0), the model mismatch.
    precision: str = "fp32"                 # Generator tail in 'fp32' or 'bf16' autocast (f, updates fp32).
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
        for name, cls in (("curvature", CurvatureControl), ("guard", BlowupGuard), ("reference", ReferenceOptions)):
            v = getattr(self, name)
            if not (isinstance(v, cls) or (name == "curvature" and v is None)):
                raise ValueError(f"{name}: expected a {cls.__name__}{' or None' if name == 'curvature' else ''}, "
                                 f"got {v!r}")
        check_positive(self.beta, "inverse temperature beta", allow_inf=True)

        check_positive(self.t_h, "score time t_h")
        if not (isinstance(self.burn_in, (int, float)) and 0.0 <= self.burn_in < 1.0):
            raise ValueError(f"burn_in: expected a fraction of each round's steps in [0, 1), got {self.burn_in!r}")
        check_positive(self.burn_in_lr, "burn-in learning rate burn_in_lr")
        if self.t_schedule is not None:
            if len(self.t_schedule) != 2:
                raise ValueError(f"t_schedule: expected (t_max, t_min), got {self.t_schedule!r}")
            t_max, t_min = (check_positive(t, "t_schedule time") for t in self.t_schedule)
            if not (t_min <= t_max <= 1.0):
                raise ValueError(f"t_schedule: expected 0 < t_min <= t_max <= 1, got {self.t_schedule!r}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"prior weight lam must be a finite number >= 0, got {self.lam!r}")
        per_round(self.reference.tau_h, len(self.steps), "reference.tau_h")
        round_radii(self, len(self.steps))                                # one ℓ1 radius per round, or None
        if self.geocross is not None and not (math.isfinite(self.geocross) and self.geocross >= 0):
            raise ValueError(f"geocross weight must be a finite number >= 0, got {self.geocross!r}")

    @property
    def step_control(self) -> str:
        """'curvature' when the curvature step control is on, else 'none'."""
        return "none" if self.curvature is None else "curvature"

    @property
    def geocross_weight(self) -> float:
        """The GeoCross weight in use: the given one, else 0.001 (reference mode) or 0 (langevin mode)."""
        if self.geocross is not None:
            return float(self.geocross)
        return 0.001 if self.mode == "reference" else 0.0


# ----------------------------------------------------------------------------
# s(x, t) from a prior with `.score(x, t)` (t as a [N] tensor), shape-checked against its latent_shape.


def prior_score(prior, x: Tensor, t: float, name: str) -> Tensor:
    shape = getattr(prior, "latent_shape", None)
    if shape is not None and tuple(shape) != tuple(x.shape[1:]):
        raise ValueError(f"prior {name!r} has latent_shape {tuple(shape)}, but the solver's {name} is "
                         f"{tuple(x.shape[1:])}")
    s = prior.score(x, torch.full([x.shape[0]], float(t), device=x.device, dtype=x.dtype))
    assert_shape(s, list(x.shape), f"score of prior {name!r}")
    return s


# ----------------------------------------------------------------------------
# The score of one variable of round k at value v: z from priors['z'] (else the exact N(0, I) score −z of the
# Gaussianised code), h_k from priors[f'h{k}'] (else no prior term: None), noise maps −n (N(0, I) by construction).


def variable_score(k: int, name: str, v: Tensor, priors: Mapping, t: float) -> Tensor | None:
    if name == "z":
        return prior_score(priors["z"], v, t, "z") if "z" in priors else -v
    if name == "h":
        return prior_score(priors[f"h{k}"], v, t, f"h{k}") if f"h{k}" in priors else None
    return -v


def variable_scores(it: Iterate, priors: Mapping, t: float) -> dict[str, Tensor | None]:
    """{name: s_v(v, t) or None} for every variable of the iterate (detached values)."""
    return {n: variable_score(it.k, n, p.detach(), priors, t) for n, p in it.params().items()}


# ----------------------------------------------------------------------------
# The tuned step of each variable: η_h for h_k (when given), η for z and the noise maps.


def step_sizes(it: Iterate, c: SGILOConfig) -> dict[str, float]:
    return {n: (c.eta_h if (n == "h" and c.eta_h is not None) else c.eta) for n in it.params()}


# ----------------------------------------------------------------------------
# Preconditioner of each variable (`langevin_step`): h_k's prior (R Rᵀ = its latents' covariance) when
# ``c.precondition`` and the prior provides one; None (identity) otherwise.


def preconditioners(it: Iterate, priors: Mapping, c: SGILOConfig) -> dict[str, object | None]:
    prior = priors.get(f"h{it.k}") if c.precondition else None
    pre = prior if prior is not None and hasattr(prior, "precond_sqrt") else None
    return {n: (pre if n == "h" else None) for n in it.params()}


# ----------------------------------------------------------------------------
# Curvature step control (`sgilo.solvers.curvature`): one factor min(1, κ/ρ) per row for all variables of the round.
# κ = kappa_z when every variable is sphere-projected (round 0 with projection on: the chain stays bounded, and the
# tuned steps on sparse masks sit at ρ ≈ 10–100 there); κ = kappa_h (< 2, the ULA bound) once the round has the
# unprojected h_k — on train/ faces (inpaint-box) a z move at ρ = 10 beside a stable h move (ρ_h = 1) still drove
# h₁ to diverge within 10 steps, while ρ ≤ 1 for the joint move kept it stable.


def curvature_control(problem: Problem, it: Iterate, eta: dict[str, float], c: SGILOConfig, priors: Mapping,
                      t: float | None = None) -> dict:
    """Returns {"rho": [N] (at the steps ``eta``), "scale": [N], "kappa": κ used}; the score at time ``t`` (t_h)."""
    ctl, t = c.curvature or CurvatureControl(), c.t_h if t is None else t
    params = {n: p.detach() for n, p in it.params().items()}
    names = list(params)
    with torch.enable_grad():
        leaves = [p.clone().requires_grad_(True) for p in params.values()]
        f = problem.fidelity(render_fn(problem, it, names)(*leaves))
        grads = torch.autograd.grad(f.sum(), leaves)
    scores = variable_scores(it, priors, t)
    drift = [g if scores[n] is None else g - c.lam * scores[n] for n, g in zip(names, grads, strict=True)]   # ∇U
    hess = [None if (scores[n] is None or c.lam == 0) else
            (lambda v, d, n=n: prior_hessian_product(lambda u: variable_score(it.k, n, u, priors, t), v, d, c.lam))
            for n in names]
    pre = preconditioners(it, priors, c)
    rho = preconditioned_curvature(render_fn(problem, it, names), list(params.values()), [eta[n] for n in names],
                                   problem.fidelity, drift, ctl.iters, hess,
                                   on_reverse=lambda: problem.count(it.z.shape[0]), preconds=[pre[n] for n in names])
    kappa = ctl.kappa_z if (c.project and "h" not in params) else ctl.kappa_h
    return {"rho": rho, "scale": step_scale(rho, kappa), "kappa": kappa}


# ----------------------------------------------------------------------------
# ONE SGILO step: the projected Langevin update (Daras et al. 2022, Eq. 5) of every variable of round k, in place.


def sgilo_step(problem: Problem, it: Iterate, eta: Mapping[str, float | Tensor], priors: Mapping, c: SGILOConfig, *,
               t: float | None = None, penalty: Callable[[Iterate], Tensor] | None = None,
               constraints: Constraints | None = None,
               timer: Callable[[str], None] | None = None) -> tuple[Tensor, Tensor]:
    """v ← Π(v − η_v ∇_v U + η_v λ s_θ(v, t) + sqrt(2 η_v / β) u) for v ∈ {z, h_k, trainable noise maps} (Eq. 5),
    U = f + penalty.

    Args: eta — step per variable name ('z', 'h', 'n{i}'), a number or one per row [N]; t — score time (None: c.t_h);
    penalty — optional per-row term added to f (GeoCross); constraints — Π (ℓ1 balls, then spheres; ILO);
    timer — called with 'generator', 'score', 'update' after each part (`sgilo.bench.speed` times this function).
    Returns (image, f) at the pre-update iterate: [N, C, H, W], [N]. Costs one tail forward + backward (NFE 1 per row).
    """
    mark = timer or (lambda part: None)
    t = c.t_h if t is None else t
    params = it.params()
    x = render(problem, it)                                               # G_tail,k(w(z), h_k, noises)  [N, C, H, W]
    f = problem.fidelity(x)                                               # f = ‖A x − y‖² / (2σ²)        [N]
    u = f if penalty is None else f + penalty(it)
    grads = dict(zip(params, torch.autograd.grad(u.sum(), list(params.values())), strict=True))   # ∇_v U
    mark("generator")
    scores = variable_scores(it, priors, t)                               # s_θ(v, t) ≈ ∇ log p_t(v)
    mark("score")
    mask_z = active_rows(problem.synthesis, it.k, it.z)                   # z rows read by blocks ≥ k
    pre = preconditioners(it, priors, c)                                  # R of h_k (precondition), else None
    with torch.no_grad():
        for n, p in params.items():                                       # Eq. 5, one variable at a time
            p.copy_(langevin_step(p.detach(), grads[n], scores[n], eta[n], c.lam, c.beta, problem.gens,
                                  mask=mask_z if n == "z" else None, precond=pre[n]))
    if constraints is not None:
        constraints.apply(it)                                             # Π: ℓ1 balls, then spheres (ILO)
    mark("update")
    return x.detach(), f.detach()


# ----------------------------------------------------------------------------
# Geometric schedule a → b over n steps (a at step 0, b at step n − 1).


def geometric(a: float, b: float, n: int) -> list[float]:
    if n == 1 or a == b:
        return [float(b)] * n
    return [float(a * (b / a) ** (i / (n - 1))) for i in range(n)]


# ----------------------------------------------------------------------------
# Burn-in (ours, off by default): the first fraction ``c.burn_in`` of every round's steps minimise
# U = f + penalty − λ log p(v) over the round's variables with Adam (lr ``c.burn_in_lr``, CSGM's; Bora et al. 2017)
# before the chain samples. Moving the start towards a mode is a standard MCMC initialisation: the target is unchanged.
# A chain that starts at a mode sits where the data term is stiffest, so the steps after a burn-in need the ULA bound
# κ < 2 in round 0 too (the preset's κ_z = 1; κ_z = 30 diverged on 1 % compressed sensing, docs/tuning.md).


def prior_surrogate(it: Iterate, priors: Mapping, t: float, lam: float, mask_z: Tensor | None = None) -> Tensor:
    """−λ Σ_v ⟨stop-grad(s_v(v, t)), v⟩ per row [N]: its gradient in v is −λ s_v, the prior part of ∇U (a score
    prior has no cheap log-density, only its gradient); ``mask_z`` [1, L, 1] keeps the z rows of earlier blocks fixed,
    as the Langevin step does."""
    scores = variable_scores(it, priors, t)
    if mask_z is not None and scores.get("z") is not None:
        scores["z"] = scores["z"] * mask_z
    terms = [(s * p).flatten(1).sum(1) for p, s in zip(it.params().values(), scores.values(), strict=True)
             if s is not None]
    return -lam * sum(terms) if terms else it.z.new_zeros(it.z.shape[0])


def burn_in(problem: Problem, it: Iterate, c: SGILOConfig, n: int, priors: Mapping,
            penalty: Callable[[Iterate], Tensor] | None, cons: Constraints, times: Sequence[float],
            hold: Tensor | None = None) -> int:
    """Runs the first round(c.burn_in · n) (at most n − 1) of the round's n steps as Adam steps on U (step i reads the
    prior scores at ``times[i]``, the round's score times [n]), in place; returns how many ran. Each costs one NFE per
    row, as a Langevin step does. A row whose iterate is non-finite afterwards, or that ``hold`` ([N] bool: chains
    stopped by the blow-up guard) marks, goes back to its round-start value (the guard then watches the Langevin
    steps)."""
    nb = min(int(round(c.burn_in * n)), n - 1)
    if nb <= 0:
        return 0
    mask_z = active_rows(problem.synthesis, it.k, it.z)                   # z rows read by blocks ≥ k
    now = [times[0]]                                                      # the score time of the current step
    objective = (lambda it: prior_surrogate(it, priors, now[0], c.lam, mask_z)
                 + (0 if penalty is None else penalty(it)))
    start = {v: p.detach().clone() for v, p in it.params().items()}
    step = adam_step_factory(problem, it, nb, lambda i: c.burn_in_lr, cons, objective)
    for i in tqdm(range(nb), desc=f"sgilo burn-in k={it.k}", disable=not problem.progress, leave=False):
        now[0] = times[i]
        x, f = step(i)
        record_step(problem, it.k, x, f, burn=True)
    with torch.no_grad():                                                 # a row that blew up starts from its start
        bad = nonfinite_rows(it.params())
        if hold is not None:
            bad |= hold.to(bad.device)
        for v, p in it.params().items():
            p[bad] = start[v][bad]
    return nb


def nonfinite_rows(params: Mapping[str, Tensor]) -> Tensor:
    """[N] bool: rows with a non-finite value in any variable."""
    return torch.stack([~torch.isfinite(p.detach().flatten(1)).all(1) for p in params.values()]).any(0)


# ----------------------------------------------------------------------------
# Blow-up guard: per-chain roll-back to the last good iterate with step halving (non-finite values included).


@dataclass
class Rollback:
    """The last good iterate of every row, the round-start references and each row's step factor (1, ½, ¼, …)."""

    good: dict[str, Tensor]
    f0: Tensor | None           # [N] round-start data term
    allowance: float            # rise of f over f0 that counts as a blow-up: data_rise · m / min(β, 1)
    h0: Tensor | None           # [N] round-start ‖h_k‖
    backoff: Tensor             # [N] step factor of each row
    halvings: Tensor            # [N] halvings so far
    guard: BlowupGuard
    frozen: Tensor              # [N] bool: stopped chains, held at their last good iterate

    @staticmethod
    def at(it: Iterate, guard: BlowupGuard, m: int, beta: float = 1.0, frozen: Tensor | None = None) -> Rollback:
        """The guard of a round starting at ``it``; m: measurements per image, beta: the chains' inverse temperature,
        frozen: [N] bool, chains stopped in earlier rounds (held where they are)."""
        n, dev = it.z.shape[0], it.z.device
        h0 = None if it.h is None else it.h.detach().flatten(1).norm(dim=1)
        frozen = torch.zeros(n, dtype=torch.bool, device=dev) if frozen is None else frozen.to(dev).clone()
        return Rollback({k: p.detach().clone() for k, p in it.params().items()}, None,
                        guard.data_rise * m / min(beta, 1.0), h0,
                        torch.ones(n, device=dev), torch.zeros(n, dtype=torch.long, device=dev), guard, frozen)

    def steps(self, eta: Mapping[str, float | Tensor]) -> dict[str, float | Tensor]:
        """η of every variable times the row factors (unchanged numbers while no row was halved)."""
        if bool((self.backoff == 1).all()):
            return dict(eta)
        return {n: e * self.backoff for n, e in eta.items()}

    def _h_bad(self, h: Tensor | None) -> Tensor | None:
        if h is None or self.h0 is None:
            return None
        return ~(h.detach().flatten(1).norm(dim=1) <= self.guard.h_factor * self.h0.clamp_min(1e-30))

    @torch.no_grad()
    def check(self, it: Iterate, before: dict[str, Tensor], f: Tensor) -> tuple[Tensor, list[str]]:
        """After a step from ``before`` (f: the data term at ``before``, [N]): rows whose pre-step
        iterate blew up go back to their last good iterate; rows whose new iterate is non-finite or has a blown-up ‖h‖
        go back to ``before``. Both halve their step. Returns (bad_pre [N] bool, reasons)."""
        if self.f0 is None:
            self.f0 = f.clone()
        bad_pre = ~(f <= self.f0 + self.allowance)                              # NaN/inf count as bad
        reasons = [("non-finite data term" if not math.isfinite(float(f[r])) else
                    f"data term {float(f[r]):.3g} > its round-start {float(self.f0[r]):.3g} + {self.allowance:.3g}")
                   for r in bad_pre.nonzero().flatten()[:1].tolist()]
        hb = self._h_bad(before.get("h"))
        if hb is not None and bool(hb.any()):
            bad_pre |= hb
            reasons.append(f"‖h‖ > {self.guard.h_factor:g} × its round-start norm")
        params = it.params()
        bad_post = nonfinite_rows(params)
        hn = self._h_bad(params.get("h"))
        if hn is not None:
            bad_post |= hn
        if bool(bad_post.any()):
            reasons.append("non-finite or blown-up iterate after the update")
        ok = ~bad_pre
        back = bad_pre | bad_post | self.frozen                                   # a stopped chain stays put
        for n, p in params.items():
            self.good[n][ok] = before[n][ok]                                      # verified: f(before) is fine
            p[back] = self.good[n][back]
        bad = (bad_pre | bad_post) & ~self.frozen
        self.backoff[bad] *= 0.5
        self.halvings[bad] += 1
        return bad_pre, reasons

    def stop_exhausted(self) -> Tensor:
        """Stops the chains that blew up again after ``guard.retries`` halvings (held at their last good iterate from
        now on); returns [N] bool, the chains stopped by this call."""
        new = (self.halvings > self.guard.retries) & ~self.frozen
        self.frozen |= new
        return new


# ----------------------------------------------------------------------------
# Reference mode: the original hybrid (Adam on f, then the hot-sampler move), through the shared round loop.


def reference_after(problem: Problem, c: SGILOConfig, priors: Mapping, tau_h: float) -> Callable[[Iterate], None]:
    r = c.reference

    def after(it: Iterate) -> None:
        with torch.no_grad():
            s = variable_scores(it, priors, c.t_h)
            z = reference_step(it.z.detach(), s["z"], r.tau, c.t_h, r.range_z, r.noise_std, problem.gens,
                               mask=active_rows(problem.synthesis, it.k, it.z))
            it.z.copy_(z)
            if it.h is not None and tau_h > 0 and s.get("h") is not None:
                it.h.copy_(reference_step(it.h.detach(), s["h"], tau_h, c.t_h, r.range_h, r.noise_std_h, problem.gens))

    return after


def solve_reference(problem: Problem, start: Iterate, steps: tuple[int, ...], c: SGILOConfig, priors: Mapping):
    r = c.reference
    penalty = geocross_penalty(problem, c.geocross_weight)
    radii = round_radii(c, len(steps))
    tau_h = list(r.tau_h) if r.tau_h is not None else [0.0] + [0.1] * (len(steps) - 1)

    def make_step(it: Iterate, k: int):
        cons = Constraints.at(it, c.project, radii[0][k], radii[1][k], radii[2][k])
        return adam_step_factory(problem, it, steps[k], lambda i: r.lr, cons, penalty,
                                 after=reference_after(problem, c, priors, tau_h[k]))

    hint = f"lower the learning rate reference.lr (now {r.lr}) or reference.tau (now {r.tau})"
    it, seconds, stopped = run_rounds(problem, start, steps, make_step, c.noise_lookahead, c.carry_skip,
                                      "sgilo-reference", hint)
    return it, seconds, stopped, {}


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
    Diagnostics: 'nfe', 'stopped', 'final_data_term' [K][B], 'curvature' (per round), 'h_move' (per round k ≥ 1:
    ‖h_k − head_k(z)‖ / ‖head_k(z)‖ at the round's end, 'mean' and per row 'rows' [K·B], 'start' = mean at its start),
    'halvings' [K·B] and 'stopped_rows' (rows c·B + b of the chains the blow-up guard stopped), R̂/ESS of the last
    round's traces.
    """
    c, priors = config, dict(priors or {})
    problem = make_problem(y, operator, G, fit, c.chains, c.seed, c.sigma_min, generator, c.progress, c.perceptual,
                           c.lpips_weight, seeds, c.precision)
    steps = check_steps(tuple(c.steps), problem.synthesis)
    start = init_iterate(problem, c.init) if init is None else start_iterate(problem, init, len(steps))
    run = solve_reference if c.mode == "reference" else solve_langevin
    it, seconds, stopped, extra = run(problem, start, steps, c, priors)
    tr = traces(problem)
    last = (tr["round"] == (tr["round"].max() if len(tr["round"]) else 0)) & ~tr["burn"]   # R̂/ESS: sampling steps
    diag = summarize({"data": tr["data"][last], "pixels": tr["pixels"][last]}) if last.any() else {}
    diag.update({"stopped": stopped, "priors": sorted(priors), "curvature": None, "h_move": None, **extra,
                 "warning": warn_if_unmixed(diag) if diag else None})
    return sampler_result(problem, it, c, seconds, diag)


# ----------------------------------------------------------------------------
# Langevin mode: rounds k (ILO's intermediate layers) × steps i of Eq. 5.


def solve_langevin(problem: Problem, it: Iterate, steps: tuple[int, ...], c: SGILOConfig, priors: Mapping):
    penalty = geocross_penalty(problem, c.geocross_weight)               # optional GeoCross (0 by default)
    radii = round_radii(c, len(steps))
    seconds, curvature, moves, stops = [], [], [], []
    halvings = torch.zeros(it.z.shape[0], dtype=torch.long)
    frozen = torch.zeros(it.z.shape[0], dtype=torch.bool)                  # chains stopped by the blow-up guard
    for k, n in enumerate(steps):
        if k < it.k:                                                      # continuation: layers < k0 are in h_k0
            continue
        t0 = time.perf_counter()
        # Round k: advance the previous state to layer k (exact split), so h_k = head_k(z) unless h moved before.
        it = begin_round(problem, it, k, c.noise_lookahead, c.carry_skip)
        cons = Constraints.at(it, c.project, radii[0][k], radii[1][k], radii[2][k])   # Π at round-start radii (ILO)
        move0 = h_move(problem, it)                                       # h_k's departure from head_k(z) so far
        times = geometric(*c.t_schedule, n) if c.t_schedule else [c.t_h] * n   # annealed Langevin (Song & Ermon)
        nb = burn_in(problem, it, c, n, priors, penalty, cons, times, hold=frozen)   # optional: Adam to a mode first
        n, times = n - nb, times[nb:]
        eta = step_sizes(it, c)                                           # η_v
        if c.curvature is not None:                                       # η_v ← η_v · min(1, κ/ρ) per chain (ours)
            ctl = curvature_control(problem, it, eta, c, priors, t=min(times))
            eta = {v: e * ctl["scale"] for v, e in eta.items()}
            curvature.append({"k": k, "kappa": ctl["kappa"], "rho": ctl["rho"].tolist(),
                              "scale": ctl["scale"].tolist()})
        guard = Rollback.at(it, c.guard, problem.fidelity.measurements, c.beta, frozen)
        for i in tqdm(range(n), desc=f"sgilo round k={k}", disable=not problem.progress, leave=False):
            eta_i = guard.steps(eta)
            before = {v: p.detach().clone() for v, p in it.params().items()}
            x, f = sgilo_step(problem, it, eta_i, priors, c, t=times[i], penalty=penalty, constraints=cons)  # Eq. 5
            bad, reasons = guard.check(it, before, f)
            if not bool(bad.any()):
                record_step(problem, k, x, f)
            new = guard.stop_exhausted()
            if bool(new.any()):
                rows = new.nonzero().flatten().tolist()
                left = int((~guard.frozen).sum())
                stops.append(f"blow-up in round k={k} at step {i} ({'; '.join(reasons)}): chain row(s) {rows} blew up "
                             f"again after {c.guard.retries} roll-backs with the step halved each time and stopped at "
                             f"their last good iterate; {left} of {len(new)} chains go on; lower the step size eta "
                             f"(now {c.eta}{'' if c.eta_h is None else f', eta_h {c.eta_h}'})")
                problem.note(stops[-1])
                if left == 0:
                    break
        halvings += guard.halvings.cpu()
        frozen = guard.frozen.cpu()
        move = h_move(problem, it)                                        # ‖h_k − head_k(z)‖ / ‖head_k(z)‖
        if move is not None:
            moves.append({"k": k, "mean": float(move.mean()), "rows": move.tolist(), "start": float(move0.mean())})
        seconds.append(time.perf_counter() - t0)
        if bool(frozen.all()):                                            # every chain stopped: the run ends
            break
    extra = {"curvature": curvature or None, "h_move": moves or None, "halvings": halvings.tolist(),
             "stopped_rows": frozen.nonzero().flatten().tolist()}
    return it, seconds, " | ".join(stops) or None, extra
