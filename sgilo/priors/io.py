"""Saving and loading SGILO latent priors (Daras et al. 2022) in our checkpoint format (`sgilo.checkpoints`, kind
'prior'): ``NAME.safetensors`` holds the network weights and the normalisation statistics, ``NAME.json`` the network
config, the SDE and the split layer. Bundled priors for the bundled generator resolve by name: "z" → prior_z,
"h1" → prior_h1, ... under ``sgilo/models/utkface64/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from sgilo.checkpoints import load_model, load_state_dict_strict, model_paths, save_model
from sgilo.priors.lowrank import LowRankGaussian
from sgilo.priors.scaling import LatentScaler
from sgilo.priors.score import LatentPrior, read_prior_config
from sgilo.priors.score_net import LatentScoreNet
from sgilo.priors.sde import VPSDE

MODELS_DIR = Path(__file__).resolve().parent.parent / "models" / "utkface64"
_BUNDLED_NAME = re.compile(r"^(z|h\d+)$")


# ----------------------------------------------------------------------------
# Resolve a bundled name ("z", "h1", ...) or a path to the model stem.


def resolve_prior(name_or_path: str | os.PathLike) -> Path:
    """A bundled name → its stem under MODELS_DIR; a path → itself. A name or path that is neither is one line that
    lists the bundled priors."""
    name = str(name_or_path)
    if _BUNDLED_NAME.match(name):
        stem = MODELS_DIR / f"prior_{name}"
        st, js = model_paths(stem)
        if not (st.is_file() and js.is_file()):
            raise FileNotFoundError(f"bundled prior {name!r} is not in this checkout (expected {st} and {js}); "
                                    f"bundled priors here: {_listing()}")
        return stem
    st, js = model_paths(name)
    if not (st.is_file() and js.is_file()):
        raise FileNotFoundError(f"prior not found: {name!r} (expected a bundled prior name — {_listing()} — or a "
                                f"prior file PATH with PATH.safetensors and PATH.json)")
    return Path(name)


# ----------------------------------------------------------------------------
# The bundled priors in this checkout: ["z", "h1", "h2", ...] (z first, then by layer).


def bundled_prior_names() -> list[str]:
    names = [p.stem.removeprefix("prior_") for p in MODELS_DIR.glob("prior_*.json")]
    names = [n for n in names if _BUNDLED_NAME.match(n) and bundled_prior_available(n)]
    return sorted(names, key=lambda n: -1 if n == "z" else int(n[1:]))


def _listing() -> str:
    return ", ".join(bundled_prior_names()) or "none in this checkout"


# ----------------------------------------------------------------------------
# Is a bundled prior ("z", "h1", ...) in this checkout?


def bundled_prior_available(name: str) -> bool:
    st, js = model_paths(MODELS_DIR / f"prior_{name}")
    return st.is_file() and js.is_file()


# ----------------------------------------------------------------------------
# Write a prior; ``dtype=torch.float16`` halves the size (parameters only; statistics and buffers stay fp32).


def save_prior(path: str | os.PathLike, prior: LatentPrior, dtype: torch.dtype | None = None,
               extra: dict | None = None) -> tuple[Path, Path]:
    """``dtype`` applies to the network's parameters and the low-rank skip's basis (eigenvalues stay fp32)."""
    params = {f"net.{k}" for k, _ in prior.net.named_parameters()} if prior.net is not None else set()
    params |= {"structured.basis"} if prior.structured is not None else set()
    sd = {k: (v.to(dtype) if dtype is not None and k in params else v) for k, v in prior.state_dict().items()}
    config = {"net": None if prior.net is None else prior.net.cfg.to_dict(), "sde": prior.sde.to_dict(),
              "scaler_mode": prior.scaler.mode, "layer": prior.layer, "gaussian_skip": prior.gaussian_skip,
              "kind": prior.kind, "latent_shape": list(prior.latent_shape),
              "structured": None if prior.structured is None else {"rank": prior.structured.rank}}
    return save_model(path, "prior", config, sd, extra=extra)


# ----------------------------------------------------------------------------
# Read a prior (strict), in eval mode with frozen weights.


def load_prior(name_or_path: str | os.PathLike, device: torch.device | str | None = None) -> LatentPrior:
    path = resolve_prior(name_or_path)
    config, sd, _ = load_model(path, "prior")
    if config.get("net") is not None:
        net_cfg, gaussian_skip = read_prior_config(config)
        net, shape, kind = LatentScoreNet(net_cfg), net_cfg.latent_shape, net_cfg.kind
    else:
        net, gaussian_skip = None, bool(config.get("gaussian_skip", True))
        shape, kind = tuple(config["latent_shape"]), config["kind"]
    scaler = LatentScaler(tuple(shape), config["scaler_mode"])
    structured = config.get("structured")
    structured = LowRankGaussian(tuple(shape), int(structured["rank"])) if structured else None
    prior = LatentPrior(net, VPSDE(**config["sde"]), scaler, layer=int(config["layer"]), gaussian_skip=gaussian_skip,
                        structured=structured, kind=kind)
    load_state_dict_strict(prior, sd, str(path))                      # fp16 tensors are copied into fp32 buffers
    prior = prior.eval().requires_grad_(False)
    return prior.to(device) if device is not None else prior
