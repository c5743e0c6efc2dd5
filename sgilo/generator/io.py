"""Loading and saving generators in our format; the bundled model registry (``"default"``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sgilo.checkpoints import load_model, load_state_dict_strict, model_paths, save_model
from sgilo.generator.latents import GaussianizedW
from sgilo.generator.stylegan2 import Generator, GeneratorConfig

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
BUNDLED = {"default": MODELS_DIR / "utkface64" / "generator"}


# ----------------------------------------------------------------------------
# Is there a bundled, trained default generator in this checkout?


def bundled_available(name: str = "default") -> bool:
    st, js = model_paths(BUNDLED[name])
    return st.is_file() and js.is_file()


# ----------------------------------------------------------------------------
# Save G (and optionally its Gaussianised-w+ fit) in our format.


def save_generator(path: str | os.PathLike, G: Generator, gaussian_fit: GaussianizedW | None = None,
                   extra: dict | None = None, dtype: torch.dtype | None = None) -> None:
    sd = dict(G.state_dict())
    if gaussian_fit is not None:
        sd["gaussian_fit.mu"] = gaussian_fit.mu
        sd["gaussian_fit.sigma"] = gaussian_fit.sigma
    save_model(path, "generator", G.cfg.to_dict(), sd, extra=extra, dtype=dtype)


# ----------------------------------------------------------------------------
# Load a generator by bundled name or path; frozen by default.


def load_generator(name_or_path: str | os.PathLike = "default", frozen: bool = True,
                   device: torch.device | str | None = None) -> tuple[Generator, GaussianizedW | None]:
    """Returns (G, gaussian_fit or None). ``"default"`` is the bundled UTKFace 64x64 model."""
    path = BUNDLED.get(str(name_or_path), name_or_path)
    if str(name_or_path) in BUNDLED and not bundled_available(str(name_or_path)):
        raise FileNotFoundError(f"bundled model {name_or_path!r} is not in this checkout (expected {path}.safetensors)")
    config, sd, _ = load_model(path, "generator")
    fit = None
    if "gaussian_fit.mu" in sd:
        fit = GaussianizedW(sd.pop("gaussian_fit.mu"), sd.pop("gaussian_fit.sigma"))
    G = Generator(GeneratorConfig(**config))
    load_state_dict_strict(G, sd, str(path))
    if frozen:
        G.freeze()
    if device is not None:
        G = G.to(device)
        fit = fit.to(device) if fit is not None else None
    return G, fit
