"""The round loop shared by CSGM, ILO and SGILO (Daras et al., ICML 2021 / 2022): the iterate, its set-up from the
generator split, constraints, a progress-barred step loop with clean stops on non-finite values, and the final result.

Layout: N = K·B rows, chain-major (row c·B + b is chain/restart c of image b); every row has its own random stream.
Round k optimises (z, h_k, trainable noise maps) with h_k the features entering block k; round k+1 starts from
``advance`` of the final round-k state (exact split, no image jump; the original dropped the skip image,
docs/original-code.md#bug-1). Trainable noise rule: in round k the noise maps of blocks k … k + lookahead are trainable
(ILO: lookahead 2; SGILO original: 0; docs/original-code.md#noise-maps); maps of blocks < k are baked into h_k,
later ones stay at their per-row N(0, I) draw.
Only the w+ rows that blocks ≥ k read (rows ≥ 2k − 1) are updated in round k: the other rows no longer affect the image,
so freezing them makes the Langevin move an exact conditional (Gibbs-style) update.
Random streams: with per-image ``seeds`` chain c of image b depends only on (seeds[b], c) (`sgilo.solvers.rng`).
A run can start from saved `Latents` at layer k0 (continuation): rounds k < k0 are already baked into h_k0 and skipped.

NFE (``Result.diagnostics["nfe"]``, every solver): generator-tail evaluations per image. Every pass of G_tail,k over
one row counts 1 for that row: a forward (`render`; the backward of the same step that reuses its graph is not counted
again), a forward of `render_fn` inside torch.func (the primal forward of a VJP, each forward-mode JVP), each extra
reverse pass of a stored VJP (curvature power iteration), and the final forward render of every row (`final_images`).
NFE = rows counted / B, so it sums over the K chains or R restarts, the rounds, the curvature estimates and retried
(rolled-back) steps. The head blocks run by `begin_round` (k ≥ 1, once per round) are not counted. Formulas:
CSGM R·(steps + 1); ILO Σ_k steps_k + 1; SGILO K·(Σ_k steps_k + 1) + K·(2·iters + 1) per curvature estimate.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm import tqdm

from sgilo.generator.latents import GaussianizedW, fit_gaussianized_w, project_to_sphere, sphere_radius
from sgilo.generator.split import IntermediateState, advance, h_shape, head, tail
from sgilo.generator.stylegan2 import Generator, SynthesisNetwork
from sgilo.operators.base import LinearOperator
from sgilo.solvers.diagnostics import pixel_summaries
from sgilo.solvers.objective import DataFidelity, geocross
from sgilo.solvers.result import Latents, Result
from sgilo.solvers.rng import StackedGenerator
from sgilo.solvers.schedules import l1_expand
from sgilo.utils.shapes import assert_shape

log = logging.getLogger("sgilo")


# ----------------------------------------------------------------------------
# A solve problem: frozen generator, Gaussianised-w+ fit, data term, per-row random streams.


@dataclass
class Problem:
    synthesis: SynthesisNetwork
    fit: GaussianizedW
    fidelity: DataFidelity
    gens: StackedGenerator
    chains: int
    batch: int
    progress: bool = False
    records: dict[str, list] = field(default_factory=lambda: {"data": [], "pixels": [], "round": [], "burn": []})
    precision: str = "fp32"   # generator tail in 'fp32' or under 'bf16' autocast (image cast back to fp32); resolved
    tail_rows: int = 0        # generator-tail row evaluations so far (module docstring: NFE)
    notes: list[str] = field(default_factory=list)   # one-line messages also logged (logger 'sgilo')

    def count(self, rows: int) -> None:
        """Add ``rows`` generator-tail row evaluations (see the module docstring, NFE)."""
        self.tail_rows += int(rows)

    @property
    def nfe(self) -> float:
        """Generator-tail evaluations per image: rows counted / B."""
        return self.tail_rows / self.batch

    def note(self, message: str) -> None:
        """Log ``message`` once (logger 'sgilo', level WARNING) and keep it for ``diagnostics['notes']``."""
        log.warning(message)
        self.notes.append(message)


PRECISIONS = ("fp32", "bf16", "auto")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")


# ----------------------------------------------------------------------------
# 'auto' → 'bf16' where bf16 convolutions run natively (CUDA with bf16 support; CPUs with AMX or AVX-512 BF16), else
# 'fp32'. Without native support oneDNN emulates bf16: on an AVX2-only CPU a 3×3 conv under bf16 autocast measured
# 40× slower than fp32 (2 vs 84 GFLOP/s), while on a Sapphire Rapids CPU (AMX) it is 2-5× faster.


def native_bf16(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'fp32' or 'bf16' for ``precision`` on ``device`` ('auto' decided by `native_bf16`)."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast_for(precision: str, device_type: str):
    """bf16 autocast on ``device_type`` for 'bf16' (and 'auto' where bf16 is native), a no-op context otherwise."""
    bf16 = resolve_precision(precision, device_type) == "bf16"
    return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else nullcontext()


# ----------------------------------------------------------------------------
# Gaussianised-w+ fit: the given one, or one fitted on the fly from the mapping network (said in a warning).


FIT_ON_THE_FLY = "no Gaussianised-w+ fit was given: fitting one on the fly from 100 000 mapping-network samples"


def resolve_fit(G: Generator, fit: GaussianizedW | None, seed: int) -> GaussianizedW:
    if fit is not None:
        return fit
    device = G.mapping.w_avg.device
    return fit_gaussianized_w(G.mapping, 100_000, generator=torch.Generator(device=device).manual_seed(seed))


# ----------------------------------------------------------------------------
# Build the problem; the base seed comes from `generator` when given, else from the config seed; per-image `seeds`
# (one per image of y) key the random streams instead when given.


def make_problem(y: Tensor, operator: LinearOperator, G: Generator, fit: GaussianizedW | None, chains: int,
                 seed: int, sigma_min: float, generator: torch.Generator | None, progress: bool,
                 perceptual: Callable | None = None, perceptual_weight: float = 0.0,
                 seeds: Sequence[int] | None = None, precision: str = "fp32") -> Problem:
    check_precision(precision)
    if not isinstance(chains, int) or chains < 1:
        raise ValueError(f"number of chains/samples/restarts must be an integer >= 1, got {chains!r}")
    if not isinstance(y, torch.Tensor) or y.ndim < 2:
        raise ValueError(f"y must be a batched measurement tensor [B, ...], got {getattr(y, 'shape', type(y))}")
    if any(p.requires_grad for p in G.parameters()):
        G = G.freeze()                                                    # never trained (original-code.md#bug-18)
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    fitted = fit is None
    fit = resolve_fit(G, fit, seed)
    fidelity = DataFidelity(operator, y, sigma_min, perceptual, perceptual_weight)
    if seeds is not None and (len(seeds) != y.shape[0] or not all(isinstance(v, int) for v in seeds)):
        raise ValueError(f"seeds: expected {y.shape[0]} integers (one per image of y), got {list(seeds)!r}")
    gens = StackedGenerator(seed, chains, y.shape[0], y.device, image_seeds=seeds)
    problem = Problem(G.synthesis, fit, fidelity, gens, chains, y.shape[0], progress,
                      precision=resolve_precision(precision, y.device))
    if fitted:
        problem.note(FIT_ON_THE_FLY)
    return problem


# ----------------------------------------------------------------------------
# The iterate of round k: leaves z, h_k and the trainable noise maps; the skip image and other maps are fixed.


@dataclass
class Iterate:
    k: int
    z: Tensor                 # [N, L, D]
    h: Tensor | None          # [N, C, r, r] features entering block k (None for k = 0)
    skip: Tensor | None       # [N, 3, r, r] RGB skip image of blocks < k (fixed during the round)
    noises: list[Tensor]      # [N, 1, r, r] per layer
    trainable: list[int]      # indices of trainable noise maps

    def params(self) -> dict[str, Tensor]:
        p = {"z": self.z}
        if self.h is not None:
            p["h"] = self.h
        p.update({f"n{i}": self.noises[i] for i in self.trainable})
        return p

    def state(self, fit: GaussianizedW) -> IntermediateState:
        return IntermediateState(k=self.k, h=self.h, skip=self.skip, ws=fit(self.z), noises=list(self.noises))


# ----------------------------------------------------------------------------
# Noise maps of blocks k … k + lookahead (flat indices).


def trainable_noises(synthesis: SynthesisNetwork, k: int, lookahead: int) -> list[int]:
    if k >= synthesis.num_blocks or lookahead < 0:
        return []
    last = min(k + lookahead, synthesis.num_blocks - 1)
    start = synthesis.noise_index(k)
    stop = synthesis.noise_index(last) + synthesis.block(last).num_conv
    return list(range(start, stop))


# ----------------------------------------------------------------------------
# Initial iterate (round 0): z ~ N(0, I) per row ('randn', ILO) or all ones ('ones', sgilo reference); noise ~ N(0, I).


def init_iterate(problem: Problem, init: str = "randn") -> Iterate:
    syn = problem.synthesis
    if init == "randn":
        z = problem.gens.randn([syn.num_ws, syn.w_dim])                  # [N, L, D]
    elif init == "ones":
        z = torch.ones([len(problem.gens), syn.num_ws, syn.w_dim], device=problem.gens.device)
    else:
        raise ValueError(f"latent init must be 'randn' or 'ones', got {init!r}")
    noises = [problem.gens.randn([1, layer.resolution, layer.resolution]) for layer in syn.noise_layers()]
    return Iterate(k=0, z=z, h=None, skip=None, noises=noises, trainable=[])


# ----------------------------------------------------------------------------
# Initial iterate from saved latents (continuation): rows must be N = K·B, or B (then tiled over the K chains).


def start_iterate(problem: Problem, latents: Latents, rounds: int) -> Iterate:
    syn, N, B = problem.synthesis, len(problem.gens), problem.batch
    k, dev = int(latents.k), problem.gens.device
    if not 0 <= k < rounds:
        raise ValueError(f"--init: the saved latents are at layer k={k}, but this run has rounds k = 0..{rounds - 1}; "
                         f"give at least {k + 1} rounds (--steps)")
    rows = latents.z.shape[0]
    if rows not in (N, B) or tuple(latents.z.shape[1:]) != (syn.num_ws, syn.w_dim):
        raise ValueError(f"--init: expected z of shape [{N} or {B}, {syn.num_ws}, {syn.w_dim}] for this generator and "
                         f"chain count, got {tuple(latents.z.shape)}")
    tile = (lambda t: None if t is None else t.to(dev).float().repeat(N // rows, *([1] * (t.ndim - 1))))
    hs = h_shape(syn, k)
    if (latents.h is None) != (hs is None) or (hs is not None and tuple(latents.h.shape[1:]) != hs):
        raise ValueError(f"--init: expected h of shape {hs} at layer k={k}, got "
                         f"{None if latents.h is None else tuple(latents.h.shape[1:])}")
    sizes = [layer.resolution for layer in syn.noise_layers()]
    if [n.shape[-1] for n in latents.noises] != sizes:
        raise ValueError(f"--init: expected {len(sizes)} noise maps of sizes {sizes}, got "
                         f"{[n.shape[-1] for n in latents.noises]}")
    return Iterate(k=k, z=tile(latents.z), h=tile(latents.h), skip=tile(latents.skip),
                   noises=[tile(n) for n in latents.noises], trainable=[])


# ----------------------------------------------------------------------------
# Start round k: advance the previous iterate block by block (exact split), then mark the leaves of round k.


def begin_round(problem: Problem, it: Iterate, k: int, lookahead: int, carry_skip: bool = True) -> Iterate:
    syn = problem.synthesis
    with torch.no_grad():
        state = IntermediateState(k=it.k, h=it.h, skip=it.skip, ws=problem.fit(it.z.detach()),
                                  noises=[n.detach() for n in it.noises]).detach()
        while state.k < k:
            state = advance(syn, state, carry_skip=carry_skip)
    trainable = trainable_noises(syn, k, lookahead)
    noises = [n.detach().clone().requires_grad_(i in trainable) for i, n in enumerate(it.noises)]
    h = None if state.h is None else state.h.detach().clone().requires_grad_(True)
    skip = None if state.skip is None else state.skip.detach()
    return Iterate(k=k, z=it.z.detach().clone().requires_grad_(True), h=h, skip=skip, noises=noises,
                   trainable=trainable)


# ----------------------------------------------------------------------------
# Rows of z read by blocks ≥ k: mask [1, L, 1].


def active_rows(synthesis: SynthesisNetwork, k: int, like: Tensor) -> Tensor:
    m = torch.zeros([1, synthesis.num_ws, 1], dtype=like.dtype, device=like.device)
    m[:, max(2 * k - 1, 0):] = 1
    return m


# ----------------------------------------------------------------------------
# GeoCross penalty of round k (or None when the weight is 0): weight · (m/2σ²) · GeoCross(w rows read by blocks ≥ k).


def geocross_penalty(problem: Problem, weight: float) -> Callable[[Iterate], Tensor] | None:
    """Applied to the w+ rows (as PULSE does), not to the Gaussianised z as the reference did, and to exactly the rows
    ``2k − 1 …`` that blocks ≥ k read: the sgilo original sliced ``z[:, 2k:]`` and dropped row 2k − 1; ILO sliced
    the batch dimension ``z[2k:]`` so the term was NaN with zero gradient after round 0 (docs/original-code.md#bug-5).
    The weight is relative to the mean-squared-error data term as in the reference (mse weight 1), i.e. it is scaled
    by m / (2σ_eff²) to our likelihood units. Returns a callable Iterate → [N]."""
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"geocross weight must be a finite number >= 0, got {weight!r}")
    if weight == 0:
        return None
    scale = float(weight) * problem.fidelity.mse_scale

    def penalty(it: Iterate) -> Tensor:
        return scale * geocross(problem.fit(it.z)[:, max(2 * it.k - 1, 0):])

    return penalty


# ----------------------------------------------------------------------------
# Sum of optional per-row penalties (None entries skipped; None when all are None).


def add_penalties(*terms: Callable[[Iterate], Tensor] | None) -> Callable[[Iterate], Tensor] | None:
    live = [t for t in terms if t is not None]
    if not live:
        return None
    return lambda it: sum(t(it) for t in live)


# ----------------------------------------------------------------------------
# Image of the iterate: G_tail,k(w(z), h_k) [N, C, H, W].


def render(problem: Problem, it: Iterate) -> Tensor:
    """G_tail,k of the iterate; with precision 'bf16' the tail runs under bf16 autocast (the convolutions, 4-5x faster
    on AMX CPUs and tensor-core GPUs) and the image is returned in the latents' dtype, so the data term, the scores
    and the Langevin update stay in fp32."""
    problem.count(it.z.shape[0])
    with autocast_for(problem.precision, it.z.device.type):
        x = tail(problem.synthesis, it.state(problem.fit))
    return x.to(it.z.dtype)


# ----------------------------------------------------------------------------
# The image as a pure function of some of the iterate's leaves (the others held fixed), for torch.func transforms.


def render_fn(problem: Problem, it: Iterate, names: list[str]) -> Callable[..., Tensor]:
    """(v_1, …, v_n) → G_tail,k [N, C, H, W] in fp32, with v_i replacing the leaf ``names[i]`` ('z', 'h', 'n{j}').
    Each call counts N tail evaluations on ``problem`` (NFE)."""
    def image_of(*values: Tensor) -> Tensor:
        problem.count(it.z.shape[0])
        v = dict(zip(names, values, strict=True))
        z = v.get("z", it.z.detach())
        h = v.get("h", None if it.h is None else it.h.detach())
        noises = [v.get(f"n{i}", n.detach()) for i, n in enumerate(it.noises)]
        return tail(problem.synthesis, Iterate(it.k, z, h, it.skip, noises, it.trainable).state(problem.fit))

    return image_of


# ----------------------------------------------------------------------------
# Constraints after a step: ℓ1 balls around the round start (ilo:utils.py), then spheres at round-start radii
# (PULSE.py).


@dataclass
class Constraints:
    start: dict[str, Tensor]
    radii: dict[str, Tensor]
    l1: dict[str, float | None]
    project: bool

    @staticmethod
    def at(it: Iterate, project: bool, l1_z: float | None = None, l1_h: float | None = None,
           l1_noise: float | None = None) -> Constraints:
        params = it.params()
        start = {n: p.detach().clone() for n, p in params.items()}
        radii = {n: sphere_radius(p.detach()) for n, p in params.items() if n != "h"}
        l1 = {n: (l1_z if n == "z" else l1_h if n == "h" else l1_noise) for n in params}
        return Constraints(start, radii, l1, project)

    @torch.no_grad()
    def apply(self, it: Iterate) -> None:
        for name, p in it.params().items():
            if self.l1[name] is not None:
                p.copy_(l1_expand(p, self.start[name], self.l1[name]))
            if self.project and name in self.radii:
                p.copy_(project_to_sphere(p, self.radii[name]))


# ----------------------------------------------------------------------------
# Run one round: `step(i)` updates the leaves in place and returns (image, f) at the pre-update iterate.


def run_round(problem: Problem, it: Iterate, steps: int, step: Callable[[int], tuple[Tensor, Tensor]], desc: str,
              hint: str) -> str | None:
    """Returns None, or a one-line message when a non-finite value stopped the round (the last finite iterate is
    kept)."""
    for i in tqdm(range(steps), desc=desc, disable=not problem.progress, leave=False):
        snapshot = {n: p.detach().clone() for n, p in it.params().items()}
        x, f = step(i)
        finite = bool(torch.isfinite(f).all()) and all(bool(torch.isfinite(p).all()) for p in it.params().values())
        if not finite:
            with torch.no_grad():
                for n, p in it.params().items():
                    p.copy_(snapshot[n])
            return f"non-finite iterate in round k={it.k} at step {i}: stopped and kept the last finite iterate; {hint}"
        record_step(problem, it.k, x, f)
    return None


# ----------------------------------------------------------------------------
# Keep one step's data term [N] and pixel summaries [N, 4] for the traces.


def record_step(problem: Problem, k: int, x: Tensor, f: Tensor, burn: bool = False) -> None:
    problem.records["data"].append(f.detach())
    problem.records["pixels"].append(pixel_summaries(x.detach()))
    problem.records["round"].append(k)
    problem.records["burn"].append(burn)


# ----------------------------------------------------------------------------
# How far h_k has left the generator's head: ‖h_k − head_k(z)‖ / ‖head_k(z)‖ per row (issue "h must move").


@torch.no_grad()
def h_move(problem: Problem, it: Iterate) -> Tensor | None:
    """head_k(z) recomputes h_k from the current z and noise maps by the exact split (blocks 0 … k−1, not counted as
    NFE). 0 while h has never left the head (e.g. round 1 started from round 0's z); after earlier h rounds it
    measures the accumulated departure. None for k = 0 (no h_k).
    Shapes: returns [N]."""
    if it.h is None:
        return None
    ref = head(problem.synthesis, problem.fit(it.z.detach()), it.k, [n.detach() for n in it.noises]).h
    return (it.h.detach() - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp_min(1e-30)


# ----------------------------------------------------------------------------
# Run the rounds k = 0 … R−1 with a per-round step factory; returns the final iterate, seconds and a stop message.


def run_rounds(problem: Problem, it: Iterate, steps: tuple[int, ...], make_step: Callable[[Iterate, int], Callable],
               lookahead: int, carry_skip: bool, name: str, hint: str) -> tuple[Iterate, list[float], str | None]:
    seconds, stopped = [], None
    for k, n in enumerate(steps):
        if k < it.k:                                                      # continuation: layers < k0 are in h_k0
            continue
        t0 = time.perf_counter()
        it = begin_round(problem, it, k, lookahead, carry_skip)
        stopped = run_round(problem, it, n, make_step(it, k), f"{name} round k={k}", hint)
        seconds.append(time.perf_counter() - t0)
        if stopped:
            problem.note(stopped)
            break
    return it, seconds, stopped


# ----------------------------------------------------------------------------
# Stack the per-step records into traces: data [T, K, B], pixels [T, K, B, 4], round [T], burn [T] (burn-in steps).


def traces(problem: Problem) -> dict[str, Tensor]:
    K, B, rec = problem.chains, problem.batch, problem.records
    if not rec["data"]:
        return {"data": torch.zeros([0, K, B]), "pixels": torch.zeros([0, K, B, 4]), "round": torch.zeros([0]),
                "burn": torch.zeros([0], dtype=torch.bool)}
    return {"data": torch.stack(rec["data"]).reshape(-1, K, B).cpu(),
            "pixels": torch.stack(rec["pixels"]).reshape(-1, K, B, 4).cpu(),
            "round": torch.tensor(rec["round"]), "burn": torch.tensor(rec["burn"], dtype=torch.bool)}


# ----------------------------------------------------------------------------
# Final images of every row, their data term, and the detached final state.


@torch.no_grad()
def final_images(problem: Problem, it: Iterate) -> tuple[Tensor, Tensor, IntermediateState]:
    state = it.state(problem.fit).detach()
    problem.count(it.z.shape[0])
    x = tail(problem.synthesis, state)                                    # [N, C, H, W]
    return x, problem.fidelity(x), state


# ----------------------------------------------------------------------------
# Diagnostics every solver reports: NFE per image, the stop message, σ_eff and the logged notes.


def common_diagnostics(problem: Problem, stopped: str | None) -> dict:
    """{'nfe': generator-tail evaluations per image (module docstring), 'stopped': message or None, 'sigma_eff',
    'notes': the one-line messages logged during the solve}. Call after `final_images` so the final render counts."""
    return {"nfe": problem.nfe, "stopped": stopped, "sigma_eff": problem.fidelity.sigma, "notes": list(problem.notes)}


# ----------------------------------------------------------------------------
# Keep rows `idx` of a state (CSGM picks one restart per image).


def select_rows(state: IntermediateState, idx: Tensor) -> IntermediateState:
    s = (lambda t: None if t is None else t[idx])
    return IntermediateState(k=state.k, h=s(state.h), skip=s(state.skip), ws=state.ws[idx],
                             noises=[s(n) for n in state.noises])


# ----------------------------------------------------------------------------
# Result for R restarts (CSGM, ILO): x_hat = the restart with the lowest data term per image; all R in `outputs`.


def restarts_result(problem: Problem, it: Iterate, config, seconds: list[float], stopped: str | None) -> Result:
    x, f, state = final_images(problem, it)
    R, B = problem.chains, problem.batch
    best = f.reshape(R, B).argmin(0)                                      # [B] restart index per image
    idx = best * B + torch.arange(B, device=best.device)
    diag = {"final_data_term": f.reshape(R, B).tolist(), "best_restart": best.tolist(),
            **common_diagnostics(problem, stopped)}
    return Result(x_hat=x[idx], samples=None, std=None, z=it.z.detach()[idx], state=select_rows(state, idx),
                  traces=traces(problem), seconds_per_round=seconds, config=config, diagnostics=diag,
                  outputs=x.reshape(R, B, *x.shape[1:]))                  # [R, B, C, H, W]


# ----------------------------------------------------------------------------
# Result for K chains: samples [K, B, ...], mean, std.


def sampler_result(problem: Problem, it: Iterate, config, seconds: list[float], diagnostics: dict) -> Result:
    x, f, state = final_images(problem, it)
    K, B = problem.chains, problem.batch
    samples = x.reshape(K, B, *x.shape[1:])                               # [K, B, C, H, W]
    std = samples.std(0, correction=1) if K > 1 else torch.zeros_like(samples[0])
    diagnostics = {**diagnostics, **common_diagnostics(problem, diagnostics.get("stopped")),
                   "final_data_term": f.reshape(K, B).tolist()}
    assert_shape(samples, [K, B, None, None, None], "samples")
    return Result(x_hat=samples.mean(0), samples=samples, std=std, z=it.z.detach(), state=state,
                  traces=traces(problem), seconds_per_round=seconds, config=config, diagnostics=diagnostics)


# ----------------------------------------------------------------------------
# Validate a steps tuple.


def check_steps(steps: tuple[int, ...], synthesis: SynthesisNetwork) -> tuple[int, ...]:
    if not steps or any((not isinstance(s, int)) or s < 1 for s in steps):
        raise ValueError(f"steps must be a non-empty list of integers >= 1 (one per round), got {steps!r}")
    if len(steps) > synthesis.num_blocks:
        raise ValueError(f"{len(steps)} rounds requested but the generator has only {synthesis.num_blocks} blocks "
                         f"(rounds k = 0..{synthesis.num_blocks - 1})")
    if not all(math.isfinite(s) for s in steps):
        raise ValueError(f"steps must be finite, got {steps!r}")
    return tuple(steps)
