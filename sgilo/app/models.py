"""The one loader of the models every command runs on: the generator, its Gaussianised-w+ fit and the SGILO latent
priors (Daras et al., ICML 2022) — used by `solve`, `demo`, `sample`, `restore`, `calibrate`, `bench` and `bench-tune`.

Prior specs (``--prior``, repeatable in bench):

* ``'default'``: every bundled prior in this checkout (`bundled_prior_names`: z, h1, h2, …); none bundled → the
  N(0, I) score of z only, said once on the ``sgilo`` logger.
* ``'none'``: no learned prior (SGILO uses the N(0, I) score of z).
* a bundled name (``'z'``, ``'h1'``, …), a prior file ``PATH`` (PATH.safetensors + PATH.json, suffix optional), or a
  folder holding ``prior_*.json`` files.

The priors come back as a dict keyed ``'z'`` / ``'h{k}'`` (the key SGILO's round k looks up), whatever the spec.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch

from sgilo.generator.io import load_generator
from sgilo.generator.latents import GaussianizedW
from sgilo.generator.stylegan2 import Generator
from sgilo.priors.io import bundled_prior_names, load_prior

log = logging.getLogger("sgilo")

__all__ = ["Models", "bundled_prior_names", "load_models", "load_one_prior", "load_priors", "prior_spec_help",
           "resolve_device"]


class Models(NamedTuple):
    """What a solver needs besides the measurement; unpacks as ``G, fit, priors = models``."""
    G: Generator
    fit: GaussianizedW | None
    priors: dict


# ----------------------------------------------------------------------------
# One line describing what --prior accepts (listing the bundled priors of this checkout).


def prior_spec_help() -> str:
    names = ", ".join(bundled_prior_names()) or "none in this checkout"
    return (f"'default' (the bundled priors: {names}), 'none', a bundled name, a prior file PATH or a folder of "
            f"prior_*.json")


# ----------------------------------------------------------------------------
# Priors from one or more specs → {'z' | 'h{k}': LatentPrior}.


def _key(prior) -> str:
    return "z" if prior.kind == "z" else f"h{prior.layer}"


def _load_spec(spec: str, device) -> list:
    if spec == "none":
        return []
    if spec == "default":
        return [load_prior(name, device=device) for name in bundled_prior_names()]
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.glob("prior_*.json"))
        if not files:
            raise FileNotFoundError(f"prior folder {spec} holds no prior_*.json files; --prior expects "
                                    f"{prior_spec_help()}")
        return [load_prior(f, device=device) for f in files]
    return [load_prior(spec, device=device)]        # a bundled name or a file; unknown → one line listing the bundled


def load_priors(specs: str | os.PathLike | tuple | list | None = "default",
                device: torch.device | str | None = None) -> dict:
    """Priors of every spec (one spec or several); later specs replace earlier ones of the same key."""
    specs = ("none",) if specs is None else (specs,) if isinstance(specs, (str, os.PathLike)) else tuple(specs)
    priors: dict = {}
    for spec in specs:
        priors.update({_key(p): p for p in _load_spec(str(spec), device)})
    if "default" in map(str, specs) and not priors:
        log.warning("no bundled priors in this checkout: SGILO uses the N(0, I) score of z only")
    return priors


# ----------------------------------------------------------------------------
# One prior (`sgilo sample`): 'default' = the bundled prior of split layer k; else a bundled name or a file.


def load_one_prior(spec: str | os.PathLike, layer: int = 0, device: torch.device | str | None = None):
    if str(spec) == "none":
        raise ValueError("--prior none: expected a prior here (leave --prior out to sample the generator alone)")
    if str(spec) == "default":
        name = "z" if layer == 0 else f"h{layer}"
        if name not in bundled_prior_names():
            raise FileNotFoundError(f"no bundled prior for layer {layer} ({name!r}) in this checkout; bundled priors: "
                                    f"{', '.join(bundled_prior_names()) or 'none'}")
        spec = name
    return load_prior(spec, device=device)


# ----------------------------------------------------------------------------
# --device: 'cpu', 'cuda', 'cuda:N' (None → cpu); one line when it is not a device or not present.


def resolve_device(spec: str | torch.device | None) -> torch.device:
    try:
        device = torch.device(spec or "cpu")
    except RuntimeError:
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
    return device


# ----------------------------------------------------------------------------
# Generator + fit + priors.


def load_models(model: str | os.PathLike = "default", priors: str | os.PathLike | tuple | list | None = "default",
                device: torch.device | str | None = None) -> Models:
    """``model``: 'default' (the bundled UTKFace 64×64 generator) or a generator PATH; ``priors``: spec(s) above."""
    G, fit = load_generator(model, device=device)
    return Models(G, fit, load_priors(priors, device))
