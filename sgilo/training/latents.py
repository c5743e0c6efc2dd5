"""Latent data sets for SGILO's score priors (Daras et al., ICML 2022; original: ``sgilo:dataloaders.py``).

Two kinds, each stored as the pair (z [N, L, D], h_k [N, C, r, r]) for one split layer k (h omitted when k = 0):

* ``synthetic``: z ~ N(0, I)^{L×D}, w+ = GaussianizedW(z), h_k = head_k(w+) with the generator's constant noise — the
  original code's ``syn_`` networks (docs/original-code.md#score-training-data-and-normalisation).
* ``inverted``: ILO inversions (Daras et al. 2021) of real training images (denoising operator A = I, noiseless), z
  and h_k taken from the solver's final state — the reference's main networks (CSGM/ILO inversions of FFHQ).

A data set is a folder of shards ``shard_00000.safetensors`` (written atomically) plus ``manifest.json``. Each shard is
generated from its own seed, so an interrupted run resumes by skipping finished shards and gives the same data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from sgilo.checkpoints import atomic_write, atomic_write_text
from sgilo.generator import GaussianizedW, Generator, IntermediateState, advance, h_shape, head
from sgilo.solvers.schedules import resize_rounds, with_rounds

FORMAT = "sgilo/latents"
KINDS = ("synthetic", "inverted")


# ----------------------------------------------------------------------------
# Synthetic latents: z ~ N(0, I), h_k = head_k(GaussianizedW(z)) (the reference's syn_ data).


@torch.no_grad()
def synthetic_latents(G: Generator, fit: GaussianizedW, layer: int, n: int, generator: torch.Generator | None,
                      batch: int = 256) -> dict[str, Tensor]:
    """Returns {"z": [n, L, D]} plus {"h": [n, C, r, r]} when layer >= 1."""
    device = G.synthesis.b4.const.device
    zs, hs = [], []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.randn([b, G.num_ws, G.w_dim], generator=generator, device=device)
        zs.append(z)
        if layer > 0:
            hs.append(head(G.synthesis, fit(z), layer, noise_mode="const").h)
    out = {"z": torch.cat(zs).cpu()}
    if layer > 0:
        out["h"] = torch.cat(hs).cpu()
    return out


# ----------------------------------------------------------------------------
# Inverted latents: ILO inversions of real images (needs `sgilo.solvers.ilo`).


def inverted_latents(G: Generator, fit: GaussianizedW, layer: int, images: Tensor, generator: torch.Generator | None,
                     steps: tuple[int, ...] = (50, 50, 25, 25), batch: int = 64, ilo=None) -> dict[str, Tensor]:
    """ILO with A = I on ``images`` [n, 3, R, R] in [-1, 1]; rounds 0..max(layer, 0) so the last state is at ≥ k.
    ``ilo``: an `ILOConfig` (ℓ1 radii, GeoCross, precision; its steps and per-round radii are cut to the rounds run),
    else ILO's defaults."""
    try:
        from sgilo.operators.pointwise import Denoising
        from sgilo.solvers.ilo import ILOConfig, solve
    except ImportError as e:
        raise RuntimeError(f"inverted latents need the ILO solver (sgilo.solvers.ilo), which failed to import: "
                           f"{e}") from e
    config = with_rounds(ilo or ILOConfig(), resize_rounds(steps, layer + 1))
    zs, hs = [], []
    for i in range(0, images.shape[0], batch):
        res = solve(images[i:i + batch], Denoising(), G, fit, config=config, generator=generator)
        zs.append(res.z.detach().cpu())
        if layer > 0:
            hs.append(_h_at(G, res.state, layer).cpu())
    out = {"z": torch.cat(zs)}
    if layer > 0:
        out["h"] = torch.cat(hs)
    return out


def _h_at(G: Generator, state: IntermediateState, layer: int) -> Tensor:
    if state.k > layer:
        raise ValueError(f"ILO final state is at layer {state.k}, past the requested layer {layer}")
    with torch.no_grad():
        while state.k < layer:
            state = advance(G.synthesis, state)
    return state.h.detach()


# ----------------------------------------------------------------------------
# Write a sharded, resumable latent data set.


def make_latents(G: Generator, fit: GaussianizedW, out: str | Path, kind: str = "synthetic", layer: int = 1,
                 n: int = 10000, shard_size: int = 1024, seed: int = 0, model: str = "", images: Tensor | None = None,
                 ilo_steps: tuple[int, ...] = (50, 50, 25, 25), progress: bool = True, ilo=None,
                 ilo_name: str = "paper", first_image: int = 0) -> Path:
    """Write ``n`` latents into ``out`` (shards + manifest.json); finished shards of an earlier run are kept.

    ``ilo``: the `ILOConfig` of the inversions (kind 'inverted'; None: ILO's defaults), ``ilo_name`` its name in the
    manifest; ``first_image``: the split index of images[0], recorded in the manifest.
    Shapes: images [n_img, 3, R, R] in [-1, 1] (kind 'inverted' only; n = min(n, n_img)).
    """
    if kind not in KINDS:
        raise ValueError(f"latent kind must be one of {KINDS}, got {kind!r}")
    if fit is None:
        raise ValueError("the generator has no Gaussianised-w+ fit (save it with save_generator(..., gaussian_fit=))")
    hs = h_shape(G.synthesis, layer)
    if kind == "inverted":
        if images is None or images.shape[0] == 0:
            raise ValueError("kind 'inverted' needs images (the training split of the data set), got "
                             f"{'none' if images is None else 0}")
        n = min(n, images.shape[0])
    out = Path(out)
    params = {"kind": kind, "layer": layer, "n": n, "shard_size": shard_size, "seed": seed, "model": str(model)}
    if kind == "inverted":
        params["ilo_steps"] = list(ilo_steps)
        if ilo is not None:
            params["ilo"] = ilo_name
        if first_image:
            params["first_image"] = int(first_image)
    manifest = {"format": FORMAT, "version": 1, "params": params, "z_shape": [G.num_ws, G.w_dim],
                "h_shape": list(hs) if hs else None, "shards": [], "complete": False}
    man_path = out / "manifest.json"
    if man_path.is_file():
        old = json.loads(man_path.read_text())
        if old.get("params") != params:
            raise ValueError(f"{man_path} was written with {old.get('params')}, not {params}; use another --out")
        manifest["shards"] = [s for s in old["shards"] if (out / s["file"]).is_file()]
    done = {s["file"] for s in manifest["shards"]}
    n_shards = math.ceil(n / shard_size)
    for i in tqdm(range(n_shards), desc=f"latents {kind} k={layer}", disable=not progress):
        name = f"shard_{i:05d}.safetensors"
        if name in done:
            continue
        count = min(shard_size, n - i * shard_size)
        gen = torch.Generator(device=G.synthesis.b4.const.device).manual_seed(seed * 1_000_003 + i)
        if kind == "synthetic":
            data = synthetic_latents(G, fit, layer, count, gen)
        else:
            data = inverted_latents(G, fit, layer, images[i * shard_size:i * shard_size + count], gen, tuple(ilo_steps),
                                    ilo=ilo)
        data = {k: v.contiguous() for k, v in data.items()}
        atomic_write(out / name, lambda p, d=data: save_file(d, p))
        manifest["shards"].append({"file": name, "count": count})
        manifest["shards"].sort(key=lambda s: s["file"])
        atomic_write_text(man_path, json.dumps(manifest, indent=2) + "\n")
    manifest["complete"] = len(manifest["shards"]) == n_shards
    atomic_write_text(man_path, json.dumps(manifest, indent=2) + "\n")
    return out


# ----------------------------------------------------------------------------
# Read one target ('z' or 'h') of a latent data set into memory.


def load_latents(path: str | Path, target: str) -> tuple[Tensor, dict]:
    """Returns (latents [N, *shape], manifest). Only shards listed in the manifest are read."""
    path = Path(path)
    man_path = path / "manifest.json"
    if not man_path.is_file():
        raise FileNotFoundError(f"latent data set manifest not found: {man_path} (run `sgilo make-latents` first)")
    manifest = json.loads(man_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{man_path}: expected format {FORMAT!r}, got {manifest.get('format')!r}")
    if target not in ("z", "h") or (target == "h" and manifest["h_shape"] is None):
        raise ValueError(f"target must be 'z' or 'h' (h needs layer >= 1); got {target!r} for layer "
                         f"{manifest['params']['layer']}")
    if not manifest["shards"]:
        raise ValueError(f"{path}: the data set has no finished shards")
    data = torch.cat([load_file(str(path / s["file"]))[target] for s in manifest["shards"]])
    return data, manifest
