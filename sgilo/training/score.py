"""Training SGILO's latent score priors (Daras et al., ICML 2022) by continuous-time denoising score matching on
the VP-SDE (Song et al., ICLR 2021, Eq. 7; `sgilo.priors.losses.dsm_loss`).

One sectioned loop (EDM `training_loop` style): data + normalisation statistics, network + EMA + AdamW, steps with
per-step seeded randomness (a resumed run continues exactly as an uninterrupted one), atomic checkpoints every N steps
or minutes, `torchrun` data parallelism, and a final export of the EMA network with `save_prior` plus a loss curve.
The original training script is not public (docs/original-code.md#score-training-objective): optimiser, EMA and
schedule are ours.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sgilo.checkpoints import atomic_torch_save, atomic_write, atomic_write_text, torch_load_safe
from sgilo.priors import VPSDE, LatentPrior, LatentScaler, LatentScoreNet, ScoreNetConfig, dsm_loss, save_prior
from sgilo.priors.lowrank import LowRankGaussian
from sgilo.priors.score import skip_eps
from sgilo.training.ddp import barrier, init_from_env
from sgilo.training.latents import load_latents

log = logging.getLogger(__name__)
_ARCH_FIELDS = ("target", "d_model", "depth", "heads", "mlp_ratio", "patch", "scaler", "beta_min", "beta_max",
                "latents", "gaussian_skip", "t_sampling", "structured_rank")


# ----------------------------------------------------------------------------
# Training hyper-parameters (ours: the original's are unknown, docs/original-code.md#score-training-objective).


@dataclass(frozen=True)
class ScoreTrainConfig:
    latents: str                        # Latent data set folder (`sgilo make-latents`); several: comma-separated.
    out: str                            # Output folder: checkpoint.pt, prior.{safetensors,json}, loss.png, log.json.
    target: str = "z"                   # 'z' (Gaussianised w+) or 'h' (features at the data set's split layer).
    steps: int = 20000                  # Total optimisation steps (a resume may raise it).
    batch: int = 128                    # Global batch (split over processes).
    lr: float = 3e-4                    # AdamW learning rate after warm-up.
    warmup: int = 500                   # Linear learning-rate warm-up steps.
    weight_decay: float = 0.0           # AdamW weight decay.
    ema_decay: float = 0.999            # EMA of the weights (exported).
    grad_clip: float = 1.0              # Global gradient-norm clip.
    eps: float = 1e-3                   # t ~ U(eps, 1) (reference config eps 1e-3).
    likelihood_weighting: bool = False  # λ(t) = β(t) (Song et al. 2021b) instead of the ε-loss.
    t_sampling: str = "mixed"           # 'uniform' (Song) or 'mixed' (½ log-uniform: more small-t samples; ours).
    gaussian_skip: bool = True          # ε̂ = σ(t)·u + net (ours; keeps the reverse SDE stable, priors/score.py).
    structured_rank: int = 0            # > 0: the skip is a rank-r PCA Gaussian fitted first (`sgilo.priors.lowrank`).
    d_model: int = 128                  # Score network width.
    depth: int = 4                      # Transformer blocks.
    heads: int = 4                      # Attention heads.
    mlp_ratio: int = 4                  # MLP width / d_model.
    patch: int = 1                      # h only: p×p patch tokens.
    scaler: str = "standard"            # Normalisation: 'standard' (per-feature mean/std) or 'minmax' (reference).
    beta_min: float = 0.1               # VP-SDE β_min.
    beta_max: float = 20.0              # VP-SDE β_max.
    ckpt_every: int = 1000              # Checkpoint every this many steps ...
    ckpt_minutes: float = 10.0          # ... or this many minutes, whichever comes first.
    log_every: int = 50                 # Steps per averaged loss point.
    seed: int = 0                       # Seed of the initial weights and of every step's randomness.
    export_fp16: bool = True            # Export the prior's weights in float16.


# ----------------------------------------------------------------------------
# Learning rate: linear warm-up then constant (so that extending `steps` on resume changes nothing before).


def learning_rate(step: int, cfg: ScoreTrainConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))


# ----------------------------------------------------------------------------
# Loss curve PNG (matplotlib, headless).


def save_loss_curve(losses: list[tuple[int, float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if losses:
        steps, values = zip(*losses, strict=True)
        ax.plot(steps, values)
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss (ε-MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


# ----------------------------------------------------------------------------
# Latents of one or several data sets (comma-separated folders, e.g. synthetic and inverted), concatenated.


def load_training_latents(spec: str, target: str) -> tuple[Tensor, dict]:
    """Returns (latents [N, ...], the first set's manifest with ``sources`` listing every set's params)."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"latents: expected one or more folders, got {spec!r}")
    sets = [load_latents(p, target) for p in parts]
    layers = {int(m["params"].get("layer", 0)) for _, m in sets}
    shapes = {tuple(d.shape[1:]) for d, _ in sets}
    if len(layers) > 1 or len(shapes) > 1:
        raise ValueError(f"latents {parts}: expected one split layer and shape, got layers {sorted(layers)} and "
                         f"shapes {sorted(shapes)}")
    manifest = dict(sets[0][1])
    if len(sets) > 1:
        manifest["params"] = {**manifest["params"], "sources": [m["params"] for _, m in sets],
                              "kind": "+".join(m["params"].get("kind", "?") for _, m in sets)}
    return torch.cat([d for d, _ in sets]), manifest


# ----------------------------------------------------------------------------
# The training loop.


def train(cfg: ScoreTrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train a score prior on ``cfg.latents``; returns the path stem of the exported prior (``out/prior``)."""
    # Step 1: processes, data, normalisation statistics.
    rank, world, device = init_from_env()
    out, ckpt_path = Path(cfg.out), Path(cfg.out) / "checkpoint.pt"
    if cfg.batch % world:
        raise ValueError(f"batch {cfg.batch} must be divisible by the number of processes {world}")
    data, manifest = load_training_latents(cfg.latents, cfg.target)
    layer = 0 if cfg.target == "z" else int(manifest["params"]["layer"])
    scaler = LatentScaler(tuple(data.shape[1:]), cfg.scaler).fit(data).to(device)
    u_all = scaler.normalize(data.to(device))                                     # [N, *shape]
    structured = None
    if cfg.structured_rank > 0:                                                   # PCA Gaussian skip, fitted once
        if cfg.scaler != "standard":
            raise ValueError(f"structured_rank needs the 'standard' scaler (centred latents), got {cfg.scaler!r}")
        structured = LowRankGaussian(tuple(data.shape[1:]), cfg.structured_rank).fit(u_all.cpu()).to(device)

    # Step 2: network, EMA, optimiser, optional resume.
    torch.manual_seed(cfg.seed)
    net_cfg = ScoreNetConfig(kind=cfg.target, latent_shape=tuple(data.shape[1:]), d_model=cfg.d_model,
                             depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, patch=cfg.patch)
    net = LatentScoreNet(net_cfg).to(device)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sde = VPSDE(cfg.beta_min, cfg.beta_max)
    state = {"step": 0, "seconds": 0.0, "losses": []}
    if resume and ckpt_path.is_file():
        ck = torch_load_safe(ckpt_path)
        diff = [k for k in _ARCH_FIELDS if ck["config"].get(k) != getattr(cfg, k)]
        if diff:
            raise ValueError(f"{ckpt_path}: cannot resume, config differs in {diff} (checkpoint {ck['config']})")
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        state = {"step": ck["step"], "seconds": ck["seconds"], "losses": [tuple(x) for x in ck["losses"]]}
        if rank == 0:
            log.info("resumed %s at step %d", ckpt_path, state["step"])
    model = DistributedDataParallel(net) if world > 1 else net                    # F_θ(u_t, t), t [B] float32

    def eps_fn(u: Tensor, t: Tensor) -> Tensor:                                   # ε̂ exactly as LatentPrior.eps
        skip = skip_eps(sde, u, t, cfg.gaussian_skip, structured)
        return model(u, t) if skip is None else model(u, t) + skip

    def save_checkpoint() -> None:
        if rank == 0:
            atomic_torch_save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                               "step": state["step"], "seconds": state["seconds"], "losses": state["losses"],
                               "config": asdict(cfg)}, ckpt_path)
        barrier()

    # Step 3: optimisation.
    local_batch, window = cfg.batch // world, []
    t_start, t_ckpt = time.time() - state["seconds"], time.time()
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"train-score {cfg.target}", disable=not progress or rank)
    while state["step"] < cfg.steps:
        step = state["step"]
        gen = torch.Generator(device=device).manual_seed((cfg.seed * 1_000_003 + step) * 64 + rank)
        idx = torch.randint(0, u_all.shape[0], (local_batch,), generator=gen, device=device)
        loss = dsm_loss(eps_fn, sde, u_all[idx], cfg.eps, cfg.likelihood_weighting, generator=gen,
                        t_sampling=cfg.t_sampling)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
                p_ema.lerp_(p, 1.0 - cfg.ema_decay)
        state["step"] = step + 1
        state["seconds"] = time.time() - t_start
        window.append(float(loss.detach()))
        if len(window) == cfg.log_every or state["step"] == cfg.steps:
            state["losses"].append((state["step"], sum(window) / len(window)))
            bar.set_postfix(loss=f"{state['losses'][-1][1]:.4f}")
            window = []
        bar.update(1)
        if state["step"] % cfg.ckpt_every == 0 or time.time() - t_ckpt > 60 * cfg.ckpt_minutes:
            save_checkpoint()
            t_ckpt = time.time()
    bar.close()

    # Step 4: final checkpoint, export of the EMA prior, loss curve and summary.
    save_checkpoint()
    stem = out / "prior"
    if rank == 0:
        prior = LatentPrior(ema if cfg.steps > 0 else None, sde, scaler, layer, gaussian_skip=cfg.gaussian_skip,
                            structured=structured, kind=cfg.target).cpu()
        summary = {"steps": state["step"], "seconds": round(state["seconds"], 1), "n_latents": int(data.shape[0]),
                   "data": manifest["params"], "final_loss": state["losses"][-1][1] if state["losses"] else None,
                   "parameters": net.num_parameters() if cfg.steps > 0 else 0, "processes": world,
                   "config": asdict(cfg)}
        save_prior(stem, prior, dtype=torch.float16 if cfg.export_fp16 else None, extra=summary)
        save_loss_curve(state["losses"], out / "loss.png")
        atomic_write_text(out / "log.json", json.dumps(summary, indent=2) + "\n")
    barrier()
    return stem
