"""Export a training run's EMA generator to our format and measure it (SWD against held-out images).

The exported model carries its Gaussianised-w+ fit (μ, σ; MappingProxy of ``sgilo:utils.py``) so ILO/SGILO can use
it directly. The SWD table compares generated images with the ``test`` split next to two references measured the same
way: real ``train`` images (the floor: what a perfect generator would score) and the untrained generator (the ceiling).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sgilo.checkpoints import atomic_write_text
from sgilo.generator.io import save_generator
from sgilo.generator.latents import fit_gaussianized_w
from sgilo.generator.stylegan2 import Generator
from sgilo.metrics.swd import swd
from sgilo.utils.datasets import load_image_set, to_float
from sgilo.training.generator import load_ema_from_checkpoint


# ----------------------------------------------------------------------------
# Draw n images from G in chunks (noise mode 'random', truncation 1).


@torch.no_grad()
def generate(G: Generator, n: int, seed: int, chunk: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, chunk):
        z = torch.randn([min(chunk, n - i), G.z_dim], generator=g)
        ws = G.mapping(z)
        out.append(G.synthesis(ws, noise_mode="random", generator=g).clamp(-1, 1))
    return torch.cat(out)


# ----------------------------------------------------------------------------
# SWD of trained / untrained generators and of real train images, all against the test split.


def swd_table(G: Generator, data: str | Path, n: int | None = None, seed: int = 0) -> dict:
    test = to_float(load_image_set(data, G.img_resolution, "test"))
    n = min(n or test.shape[0], test.shape[0])
    test = test[:n]
    train = to_float(load_image_set(data, G.img_resolution, "train", limit=n))
    torch.manual_seed(seed)
    untrained = Generator(G.cfg).eval()
    rows = {
        "real train vs test (floor)": swd(train, test, seed=seed),
        "trained generator vs test": swd(generate(G, n, seed + 1), test, seed=seed),
        "untrained generator vs test (ceiling)": swd(generate(untrained, n, seed + 2), test, seed=seed),
    }
    return {"n_images": n, "rows": rows}


# ----------------------------------------------------------------------------
# Run checkpoint -> bundled model files + stats JSON.


def export_run(checkpoint: str | Path, out: str | Path, data: str | Path | None = None, fit_samples: int = 100_000,
               stats_path: str | Path | None = None, seed: int = 0) -> dict:
    G, cfg, progress = load_ema_from_checkpoint(checkpoint)
    fit = fit_gaussianized_w(G.mapping, fit_samples, generator=torch.Generator().manual_seed(seed))
    stats = {"kimg": progress["nimg"] / 1000, "steps": progress["step"], "train_seconds": progress["seconds"],
             "train_config": json.loads(json.dumps(cfg.__dict__)),
             "params": {"synthesis": G.num_parameters("synthesis"), "mapping": G.num_parameters("mapping")}}
    save_generator(out, G, fit, extra=stats, dtype=torch.float16)
    if data is not None:
        stats["swd"] = swd_table(G, data, seed=seed)
    if stats_path is not None:
        atomic_write_text(stats_path, json.dumps(stats, indent=2) + "\n")
    return stats
