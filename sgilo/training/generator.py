"""StyleGAN-2 training (Karras et al., CVPR 2020) with DiffAugment (Zhao et al., NeurIPS 2020), sized for CPUs too.

Losses as published: non-saturating logistic loss (Goodfellow et al. 2014), lazy R1 on reals every 16 steps (Mescheder
et al. 2018), optional lazy path-length regularisation, style mixing, EMA of the generator, equalised learning rate,
minibatch std in D. bf16 autocast and channels_last on CPU; gradients all-reduced across processes under `torchrun`
(gloo on CPU, NCCL on GPUs). Checkpoints are atomic and hold everything needed to resume bit-for-bit in the same setup.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from sgilo.checkpoints import atomic_torch_save, atomic_write_text, torch_load_safe
from sgilo.generator.stylegan2 import Generator, GeneratorConfig
from sgilo.training.augment import diff_augment
from sgilo.utils.datasets import load_image_set, to_float
from sgilo.training.discriminator import Discriminator

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# Training hyper-parameters (StyleGAN-2 defaults unless noted).


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""                       # Image folder or dataset zip (only the 'train' split is used).
    out: str = ""                        # Run folder (checkpoints, grids, log).
    resolution: int = 64                 # Training resolution (power of two).
    z_dim: int = 256                     # Latent size (bundled model: 256; NVlabs FFHQ: 512).
    w_dim: int = 256                     # W size.
    mapping_layers: int = 4              # Mapping depth (NVlabs 'auto' config uses 2 for small data, FFHQ 8).
    channel_base: int = 2048             # G and D channels: min(channel_base / res, channel_max) (bundled: 128→32).
    channel_max: int = 128
    batch: int = 32                      # Total batch over all processes.
    glr: float = 0.0025                  # Adam learning rates, betas (0, 0.99) as in StyleGAN-2.
    dlr: float = 0.0025
    r1_gamma: float = 0.05               # R1 weight (NVlabs heuristic 0.0002·res²/batch ≈ 0.026 at 64 px, batch 32).
    r1_interval: int = 16                # Lazy regularisation interval.
    pl_weight: float = 0.0               # Path-length regularisation weight (0 = off; StyleGAN-2 uses 2).
    pl_interval: int = 4
    style_mixing: float = 0.9            # Style-mixing probability.
    ema_kimg: float = 10.0               # EMA half-life in thousands of images.
    ema_rampup: float = 0.05             # EMA half-life ramp-up (fraction of images seen).
    augment: str = "color,translation,cutout"  # DiffAugment policy ('' = none).
    mirror: bool = True                  # Random x-flips of the training images.
    kimg: float = 600.0                  # Training length in thousands of images.
    ckpt_minutes: float = 5.0            # Checkpoint (and sample grid) interval in minutes.
    bf16: bool = True                    # bf16 autocast (CPU AMX / GPU); fp32 master weights.
    seed: int = 0
    limit: int | None = None             # Use only the first N training images (tests).
    extra: dict = field(default_factory=dict)

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(z_dim=self.z_dim, w_dim=self.w_dim, img_resolution=self.resolution,
                               channel_base=self.channel_base, channel_max=self.channel_max,
                               mapping_layers=self.mapping_layers)


# ----------------------------------------------------------------------------
# Non-saturating logistic losses and R1 (StyleGAN-2 Appendix B).


def g_loss_ns(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def d_loss_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """‖∇_x D(x)‖² per sample (Mescheder et al. 2018, Eq. 9)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)
    return grad.float().square().sum([1, 2, 3])


# ----------------------------------------------------------------------------
# w+ with style mixing: rows after a random cut come from a second z.


def mapped_ws(G: Generator, z: torch.Tensor, mixing: float, gen: torch.Generator | None) -> torch.Tensor:
    ws = G.mapping(z, update_w_avg=G.training)
    if mixing > 0 and torch.rand([], generator=gen).item() < mixing:
        cut = int(torch.randint(1, ws.shape[1], [], generator=gen))
        ws2 = G.mapping(torch.randn(z.shape, generator=gen), update_w_avg=False)
        ws = torch.cat([ws[:, :cut], ws2[:, cut:]], 1)
    return ws


# ----------------------------------------------------------------------------
# Average gradients over processes (plain all-reduce; works with double-backward R1, unlike DDP's hooks).


def sync_grads(module: torch.nn.Module) -> None:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ----------------------------------------------------------------------------
# Fixed-seed sample grid of G_ema.


@torch.no_grad()
def sample_grid(G: Generator, n: int = 64, seed: int = 123, truncation: float = 1.0) -> torch.Tensor:
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    return torch.cat([G(z[i:i + 16], truncation_psi=truncation, noise_mode="const") for i in range(0, n, 16)]).clamp(-1, 1)


# ----------------------------------------------------------------------------
# The training loop (one function, sectioned as in EDM's training_loop).


def train(cfg: TrainConfig, resume: bool = False, max_seconds: float | None = None, progress: bool = True) -> Path:
    # Step 1: set-up, processes, data.
    rank, world = _rank_world()
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.batch % world:
        raise ValueError(f"batch {cfg.batch} must be divisible by the number of processes {world}")
    local_batch = cfg.batch // world
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(cfg.seed + rank)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    data = load_image_set(cfg.data, cfg.resolution, "train", cfg.limit)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    mem_fmt = torch.channels_last

    # Step 2: networks, EMA, optimisers (lazy-regularisation corrected lr and betas).
    G = Generator(cfg.generator_config()).to(device).train()
    D = Discriminator(cfg.resolution, 3, cfg.channel_base, cfg.channel_max).to(device).to(memory_format=mem_fmt).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    c = cfg.r1_interval / (cfg.r1_interval + 1)
    g_opt = torch.optim.Adam(G.parameters(), lr=cfg.glr, betas=(0.0, 0.99), eps=1e-8)
    d_opt = torch.optim.Adam(D.parameters(), lr=cfg.dlr * c, betas=(0.0, 0.99 ** c), eps=1e-8)
    state = {"step": 0, "nimg": 0, "seconds": 0.0, "losses": []}
    if resume and ckpt_path.is_file():
        ck = torch_load_safe(ckpt_path)
        G.load_state_dict(ck["G"]); D.load_state_dict(ck["D"]); G_ema.load_state_dict(ck["G_ema"])
        g_opt.load_state_dict(ck["g_opt"]); d_opt.load_state_dict(ck["d_opt"])
        gen.set_state(ck["gen_state"][rank] if rank < len(ck["gen_state"]) else ck["gen_state"][0])
        torch.set_rng_state(ck["torch_state"])
        state = {k: ck[k] for k in ("step", "nimg", "seconds", "losses")}
        if rank == 0:
            log.info("resumed from %s at %.1f kimg", ckpt_path, state["nimg"] / 1000)
    total = int(cfg.kimg * 1000)
    pl_mean = torch.zeros([], device=device)

    def save_checkpoint() -> None:
        gen_states = [gen.get_state()]
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, gen.get_state())
            gen_states = gathered
        if rank != 0:
            return
        ck = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(), "g_opt": g_opt.state_dict(),
              "d_opt": d_opt.state_dict(), "gen_state": gen_states, "torch_state": torch.get_rng_state(),
              "config": json.dumps(asdict(cfg)), **state}
        atomic_torch_save(ck, ckpt_path)
        try:
            from sgilo.utils.images import save_image_grid
            save_image_grid(sample_grid(G_ema, 64).cpu(), out / f"grid_{state['nimg'] // 1000:06d}kimg.png", nrow=8)
        except ImportError as e:  # image I/O module unavailable: keep training, the checkpoint is what matters
            log.warning("sample grid skipped: %s", e)
        atomic_write_text(out / "progress.json", json.dumps({k: state[k] for k in ("step", "nimg", "seconds")} |
                                                            {"last_losses": state["losses"][-1:]}) + "\n")

    # Step 3: the loop.
    bar = tqdm(total=total, initial=state["nimg"], unit="img", disable=not progress or rank != 0, unit_scale=True,
               dynamic_ncols=True)
    t_start, t_ckpt = time.time(), time.time()
    seconds0 = state["seconds"]
    while state["nimg"] < total:
        step = state["step"]
        idx = torch.randint(0, data.shape[0], [local_batch], generator=gen)
        reals = to_float(data[idx]).to(device)
        if cfg.mirror:
            flip = torch.rand([local_batch, 1, 1, 1], generator=gen) < 0.5
            reals = torch.where(flip.to(device), reals.flip(3), reals)
        reals = reals.contiguous(memory_format=mem_fmt)

        # Step 3a: generator update (non-saturating loss through D and DiffAugment).
        G.requires_grad_(True); D.requires_grad_(False)
        with amp:
            ws = mapped_ws(G, torch.randn([local_batch, G.z_dim], generator=gen).to(device), cfg.style_mixing, gen)
            fake = G.synthesis(ws, noise_mode="random", generator=None)
            g_loss = g_loss_ns(D(diff_augment(fake, cfg.augment, gen) if cfg.augment else fake).float())
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        if cfg.pl_weight > 0 and step % cfg.pl_interval == 0:
            pl_mean = _path_length_step(G, cfg, local_batch, gen, device, pl_mean)
        sync_grads(G)
        g_opt.step()

        # Step 3b: discriminator update (logistic loss; lazy R1 on augmented reals).
        G.requires_grad_(False); D.requires_grad_(True)
        do_r1 = cfg.r1_gamma > 0 and step % cfg.r1_interval == 0
        with amp:
            with torch.no_grad():
                ws = mapped_ws(G, torch.randn([local_batch, G.z_dim], generator=gen).to(device), cfg.style_mixing, gen)
                fake = G.synthesis(ws, noise_mode="random")
            reals_in = reals.detach().requires_grad_(do_r1)
            real_logits = D(diff_augment(reals_in, cfg.augment, gen) if cfg.augment else reals_in).float()
            fake_logits = D(diff_augment(fake, cfg.augment, gen) if cfg.augment else fake).float()
            d_loss = d_loss_logistic(real_logits, fake_logits)
        loss = d_loss
        r1 = torch.zeros([])
        if do_r1:
            r1 = r1_penalty(real_logits, reals_in).mean()
            loss = loss + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
        d_opt.zero_grad(set_to_none=True)
        loss.backward()
        sync_grads(D)
        d_opt.step()

        # Step 3c: EMA of G (half-life ema_kimg, ramped up early in training).
        state["nimg"] += cfg.batch
        state["step"] += 1
        ema_nimg = min(cfg.ema_kimg * 1000, state["nimg"] * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_kimg * 1000
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
                b_ema.copy_(b)

        # Step 3d: progress, logging, checkpoints.
        gl, dl = float(g_loss.detach()), float(d_loss.detach())
        elapsed = time.time() - t_start
        state["seconds"] = seconds0 + elapsed
        if step % 10 == 0:
            state["losses"].append({"kimg": state["nimg"] / 1000, "g": gl, "d": dl,
                                    "r1": float(r1.detach()) if do_r1 else None})
        if rank == 0:
            bar.update(cfg.batch)
            if step % 10 == 0:
                bar.set_postfix(kimg=f"{state['nimg'] / 1000:.1f}", g=f"{gl:.3f}", d=f"{dl:.3f}")
        stop = max_seconds is not None and elapsed > max_seconds
        if time.time() - t_ckpt > cfg.ckpt_minutes * 60 or state["nimg"] >= total or stop:
            save_checkpoint()
            t_ckpt = time.time()
        if not (math.isfinite(gl) and math.isfinite(dl)):
            raise RuntimeError(f"non-finite loss at step {step} (g={gl}, d={dl}); "
                               "lower the learning rates or raise r1_gamma, then --resume")
        if stop:
            break
    bar.close()
    return ckpt_path


# ----------------------------------------------------------------------------
# Lazy path-length regularisation (StyleGAN-2 Eq. 4): E(‖J_wᵀ y‖ − a)², a = running mean.


def _path_length_step(G: Generator, cfg: TrainConfig, batch: int, gen: torch.Generator, device: torch.device,
                      pl_mean: torch.Tensor) -> torch.Tensor:
    n = max(batch // 2, 1)
    ws = G.mapping(torch.randn([n, G.z_dim], generator=gen).to(device))
    img = G.synthesis(ws, noise_mode="random")
    y = torch.randn(img.shape, generator=gen).to(device) / math.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
    lengths = grad.square().sum(2).mean(1).sqrt()
    pl_mean = pl_mean.lerp(lengths.mean().detach(), 0.01)
    penalty = (lengths - pl_mean).square().mean() * cfg.pl_weight * cfg.pl_interval
    (penalty + img[:, 0, 0, 0].mean() * 0).backward()
    return pl_mean


# ----------------------------------------------------------------------------
# Extract the EMA generator from a run checkpoint.


def load_ema_from_checkpoint(path: str | Path) -> tuple[Generator, TrainConfig, dict]:
    ck = torch_load_safe(path)
    cfg = TrainConfig(**json.loads(ck["config"]))
    G = Generator(cfg.generator_config())
    G.load_state_dict(ck["G_ema"], strict=True)
    return G.freeze(), cfg, {k: ck[k] for k in ("step", "nimg", "seconds")}
