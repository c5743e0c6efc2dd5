"""Converters from public StyleGAN-2 checkpoints (Karras et al., CVPR 2020) to our generator and file format.

Supported sources:

* NVlabs ``stylegan2-ada-pytorch`` / ``stylegan3`` (StyleGAN-2 architecture) ``.pkl``: read with the allow-list
  unpickler of `sgilo.generator.safe_pickle` (embedded source code is never executed); the ``G_ema`` record's tensors
  map 1:1 onto our parameter names and the config comes from its recorded constructor arguments.
* rosinality ``stylegan2-pytorch`` ``.pt`` (``{'g_ema': state_dict, 'latent_avg': [w_dim], ...}``): read with
  ``torch.load(weights_only=True)`` and renamed through a regex table; the config is inferred from tensor shapes.

Equalised learning rate: rosinality multiplies conv weights by 1/sqrt(fan_in) *before* demodulation while NVlabs does
not; demodulation cancels the factor (up to the 1e-8 epsilon), so raw weights copy over unchanged. FC layers
(``lr_mul``/``lr_multiplier``, weight gain lr/sqrt(in), bias gain lr) and toRGB (gain 1/sqrt(C) on weight vs. styles)
agree exactly. rosinality stores up-sampling FIR kernels pre-multiplied by factor² = 4; we divide them back.
Any unmapped, missing or mis-shaped key is a one-line error naming the key.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sgilo.checkpoints import load_state_dict_strict, model_paths
from sgilo.errors import CheckpointKeyError
from sgilo.generator.io import save_generator
from sgilo.generator.latents import fit_gaussianized_w
from sgilo.generator.safe_pickle import ModuleRecord, UnsafePickleError, load_pickle
from sgilo.generator.stylegan2 import Generator, GeneratorConfig, make_fir

FORMATS = ("auto", "nvlabs", "rosinality")


# ----------------------------------------------------------------------------
# Guess the source format from the file name, then from its first bytes (torch zip archives are rosinality).


def detect_format(path: str | os.PathLike) -> str:
    """Returns ``'nvlabs'`` (.pkl, raw pickle) or ``'rosinality'`` (.pt/.pth, torch zip archive)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pkl":
        return "nvlabs"
    if suffix in (".pt", ".pth"):
        return "rosinality"
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        return "rosinality"
    if magic[:1] == b"\x80":
        return "nvlabs"
    raise ValueError(f"{path}: cannot tell the checkpoint format (expected a .pkl or .pt file); pass --format")


# ----------------------------------------------------------------------------
# NVlabs: recorded constructor arguments -> GeneratorConfig (c_dim = 0, 'skip' architecture only).


def nvlabs_config(record: ModuleRecord) -> GeneratorConfig:
    """Config of an NVlabs ``Generator`` record from its ``init_kwargs`` (ada: ``synthesis_kwargs``; stylegan3:
    synthesis arguments at the top level). Defaults are NVlabs' own (channel_base 32768, channel_max 512, 8 mapping
    layers, lr multiplier 0.01). ``num_fp16_res`` is ignored: we compute in fp32 (or bf16 autocast)."""
    kw = record.init_kwargs
    names = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
    kw.update(zip(names, record.state.get("_init_args") or ()))
    missing = [n for n in names if n not in kw and n not in record.state]
    if missing:
        raise ValueError(f"NVlabs generator record: missing constructor argument {missing[0]!r}")
    get = (lambda n: kw[n] if n in kw else record.state[n])
    if int(get("c_dim")) != 0:
        raise ValueError(f"NVlabs generator: expected an unconditional model (c_dim = 0), got c_dim = {get('c_dim')}")
    mk = dict(kw.get("mapping_kwargs") or {})
    sk = {k: v for k, v in kw.items() if k not in names + ("mapping_kwargs", "synthesis_kwargs")}
    sk.update(kw.get("synthesis_kwargs") or {})
    if sk.get("architecture", "skip") != "skip":
        raise ValueError(f"NVlabs generator: expected architecture 'skip', got {sk['architecture']!r}")
    if mk.get("layer_features") not in (None, int(get("w_dim"))):
        raise ValueError(f"NVlabs mapping: expected layer_features = w_dim, got {mk['layer_features']}")
    clamp = sk.get("conv_clamp")
    return GeneratorConfig(
        z_dim=int(get("z_dim")), w_dim=int(get("w_dim")), img_resolution=int(get("img_resolution")),
        img_channels=int(get("img_channels")), channel_base=int(sk.get("channel_base", 32768)),
        channel_max=int(sk.get("channel_max", 512)), mapping_layers=int(mk.get("num_layers", 8)),
        mapping_lr_multiplier=float(mk.get("lr_multiplier", 0.01)), w_avg_beta=float(mk.get("w_avg_beta", 0.995)),
        conv_clamp=None if clamp is None else float(clamp))


# ----------------------------------------------------------------------------
# NVlabs .pkl -> Generator, via the allow-list unpickler and a strict 1:1 key check.


def load_nvlabs_pkl(path: str | os.PathLike, network: str = "G_ema") -> Generator:
    """Read ``network`` (default ``G_ema``) from an NVlabs pickle without running its code; strict key/shape check."""
    data = load_pickle(path)
    record = data.get(network) if isinstance(data, dict) else data
    if not isinstance(record, ModuleRecord):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected an NVlabs network pickle with a {network!r} entry, found {found}")
    sd = {k: v.detach().float().clone() for k, v in record.state_dict().items()}
    if any(k.startswith(("synthesis.input.", "synthesis.L")) for k in sd):
        raise ValueError(f"{path}: {network} is a StyleGAN3 (alias-free) generator; only StyleGAN-2 is supported")
    G = Generator(nvlabs_config(record))
    load_state_dict_strict(G, sd, f"{path} [{network}]")
    return G


# ----------------------------------------------------------------------------
# rosinality key table: regex -> (our name, reshape). Block index j of `convs.j` is resolution 8·2^(j//2), conv j%2.


def _conv_name(j: int) -> str:
    return f"synthesis.b{8 * 2 ** (j // 2)}.conv{j % 2}"


def _noise_layer(j: int) -> str:
    return "synthesis.b4.conv1" if j == 0 else _conv_name(j - 1)


_SQ0, _FLAT, _SCALAR, _KERNEL, _NOISE, _SAME = "squeeze0", "flat", "scalar", "kernel/4", "noise", "same"
ROSINALITY_RULES: list[tuple[str, Any, str]] = [
    (r"style\.(\d+)\.(weight|bias)", lambda m: f"mapping.fc{int(m[1]) - 1}.{m[2]}", _SAME),
    (r"input\.input", lambda m: "synthesis.b4.const", _SQ0),
    (r"conv1\.conv\.weight", lambda m: "synthesis.b4.conv1.weight", _SQ0),
    (r"conv1\.conv\.modulation\.(weight|bias)", lambda m: f"synthesis.b4.conv1.affine.{m[1]}", _SAME),
    (r"conv1\.noise\.weight", lambda m: "synthesis.b4.conv1.noise_strength", _SCALAR),
    (r"conv1\.activate\.bias", lambda m: "synthesis.b4.conv1.bias", _SAME),
    (r"to_rgb1\.conv\.weight", lambda m: "synthesis.b4.torgb.weight", _SQ0),
    (r"to_rgb1\.conv\.modulation\.(weight|bias)", lambda m: f"synthesis.b4.torgb.affine.{m[1]}", _SAME),
    (r"to_rgb1\.bias", lambda m: "synthesis.b4.torgb.bias", _FLAT),
    (r"convs\.(\d+)\.conv\.weight", lambda m: f"{_conv_name(int(m[1]))}.weight", _SQ0),
    (r"convs\.(\d+)\.conv\.modulation\.(weight|bias)", lambda m: f"{_conv_name(int(m[1]))}.affine.{m[2]}", _SAME),
    (r"convs\.(\d+)\.noise\.weight", lambda m: f"{_conv_name(int(m[1]))}.noise_strength", _SCALAR),
    (r"convs\.(\d+)\.activate\.bias", lambda m: f"{_conv_name(int(m[1]))}.bias", _SAME),
    (r"convs\.(\d*[02468])\.conv\.blur\.kernel", lambda m: f"{_conv_name(int(m[1]))}.resample_filter", _KERNEL),
    (r"to_rgbs\.(\d+)\.conv\.weight", lambda m: f"synthesis.b{8 * 2 ** int(m[1])}.torgb.weight", _SQ0),
    (r"to_rgbs\.(\d+)\.conv\.modulation\.(weight|bias)",
     lambda m: f"synthesis.b{8 * 2 ** int(m[1])}.torgb.affine.{m[2]}", _SAME),
    (r"to_rgbs\.(\d+)\.bias", lambda m: f"synthesis.b{8 * 2 ** int(m[1])}.torgb.bias", _FLAT),
    (r"to_rgbs\.(\d+)\.upsample\.kernel", lambda m: f"synthesis.b{8 * 2 ** int(m[1])}.resample_filter", _KERNEL),
    (r"noises\.noise_(\d+)", lambda m: f"{_noise_layer(int(m[1]))}.noise_const", _NOISE),
]


# ----------------------------------------------------------------------------
# Apply one reshape rule, checking the source shape it assumes.


def _reshape(key: str, t: Tensor, how: str) -> Tensor:
    if how == _SQ0:
        if t.ndim < 2 or t.shape[0] != 1:
            raise ValueError(f"rosinality key {key!r}: expected a leading dimension of 1, got shape {tuple(t.shape)}")
        return t[0]
    if how == _NOISE:
        if t.ndim != 4 or t.shape[:2] != (1, 1):
            raise ValueError(f"rosinality key {key!r}: expected shape [1, 1, r, r], got {tuple(t.shape)}")
        return t[0, 0]
    if how == _SCALAR:
        if t.numel() != 1:
            raise ValueError(f"rosinality key {key!r}: expected one element, got shape {tuple(t.shape)}")
        return t.reshape([])
    if how == _KERNEL:
        ref = make_fir() * 4
        if tuple(t.shape) != tuple(ref.shape) or not torch.allclose(t.float(), ref, atol=1e-6):
            raise ValueError(f"rosinality key {key!r}: expected the [1,3,3,1] up-sampling kernel × 4, "
                             f"got {t.tolist()}")
        return t / 4
    return t.reshape(-1) if how == _FLAT else t


# ----------------------------------------------------------------------------
# Infer the GeneratorConfig from rosinality tensor shapes; channel_base/max must reproduce every channel count.


def rosinality_config(sd: dict[str, Tensor], mapping_lr_multiplier: float = 0.01) -> GeneratorConfig:
    """Resolution from the number of ``to_rgbs``, dims from ``style.1``, channels from the conv weights. rosinality's
    ``lr_mlp`` is not stored in the file; its default 0.01 is assumed."""
    def need(k: str) -> Tensor:
        if k not in sd:
            raise CheckpointKeyError(f"rosinality checkpoint: missing key {k!r}")
        return sd[k]
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    w_dim, z_dim = need("style.1.weight").shape
    n_up = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    res = 2 ** (n_up + 2)
    chans = {4: need("input.input").shape[1]}
    chans.update({8 * 2 ** i: need(f"convs.{2 * i}.conv.weight").shape[1] for i in range(n_up)})
    cmax = max(chans.values())
    below = [(r, c) for r, c in sorted(chans.items()) if c < cmax]
    base = below[0][0] * below[0][1] if below else cmax * res
    if any(min(base // r, cmax) != c for r, c in chans.items()):
        raise ValueError(f"rosinality checkpoint: channel counts {chans} are not min(channel_base / res, channel_max)")
    return GeneratorConfig(z_dim=int(z_dim), w_dim=int(w_dim), img_resolution=res,
                           img_channels=int(need("to_rgb1.conv.weight").shape[1]), channel_base=int(base),
                           channel_max=int(cmax), mapping_layers=n_mlp, mapping_lr_multiplier=mapping_lr_multiplier)


# ----------------------------------------------------------------------------
# Rename a rosinality g_ema state dict to our names (strict: unmapped or mis-shaped keys raise).


def convert_rosinality_state_dict(sd: dict[str, Tensor], latent_avg: Tensor | None,
                                  cfg: GeneratorConfig) -> dict[str, Tensor]:
    """Our state dict from a rosinality ``g_ema`` one via `ROSINALITY_RULES`; ``latent_avg`` becomes ``mapping.w_avg``.

    Shapes: conv weights [1, O, I, k, k] -> [O, I, k, k]; noises [1, 1, r, r] -> [r, r]; noise weight [1] -> [];
    toRGB bias [1, C, 1, 1] -> [C]; const [1, C, 4, 4] -> [C, 4, 4]."""
    own = {k: v.shape for k, v in Generator(cfg).state_dict().items()}
    out: dict[str, Tensor] = {}
    for key, t in sd.items():
        rule = next(((p, f, h) for p, f, h in ROSINALITY_RULES if re.fullmatch(p, key)), None)
        if rule is None or not isinstance(t, Tensor):
            raise CheckpointKeyError(f"rosinality checkpoint: unmapped key {key!r}")
        name = rule[1](re.fullmatch(rule[0], key))
        if name not in own:
            raise CheckpointKeyError(f"rosinality checkpoint: key {key!r} maps to {name!r}, which this architecture "
                                     f"lacks")
        v = _reshape(key, t.detach().float(), rule[2])
        if v.shape != own[name]:
            raise ValueError(f"rosinality key {key!r}: shape {tuple(t.shape)} does not fit {name!r} "
                             f"{tuple(own[name])}")
        out[name] = v.clone()
    for name in own:                    # filters rosinality does not store (non-upsampling layers): the default FIR
        if name.endswith("resample_filter") and name not in out:
            out[name] = make_fir()
    if latent_avg is not None:
        if not isinstance(latent_avg, Tensor) or latent_avg.numel() != cfg.w_dim:
            got = tuple(latent_avg.shape) if isinstance(latent_avg, Tensor) else type(latent_avg).__name__
            raise ValueError(f"rosinality key 'latent_avg': expected {cfg.w_dim} values, got {got}")
        out["mapping.w_avg"] = latent_avg.detach().float().reshape(-1).clone()
    return out


# ----------------------------------------------------------------------------
# rosinality .pt -> Generator; w_avg is estimated from mapped samples when the file has no latent_avg.


def load_rosinality_pt(path: str | os.PathLike, w_avg_samples: int = 10_000,
                       generator: torch.Generator | None = None) -> Generator:
    """Read a rosinality checkpoint (``torch.load(weights_only=True)``; ``argparse.Namespace`` args allowed)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):   # train.py checkpoints carry their args
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        why = next((ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln), lines[0])
        raise UnsafePickleError(f"{path}: refused by torch.load(weights_only=True): {why}") from None
    sd = ckpt.get("g_ema", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or "style.1.weight" not in sd:
        raise ValueError(f"{path}: expected a rosinality checkpoint with a 'g_ema' state dict (style.1.weight ...)")
    latent_avg = ckpt.get("latent_avg") if sd is not ckpt else None
    cfg = rosinality_config(sd)
    ours = convert_rosinality_state_dict(sd, latent_avg, cfg)
    estimate = "mapping.w_avg" not in ours
    ours.setdefault("mapping.w_avg", torch.zeros(cfg.w_dim))
    G = Generator(cfg)
    load_state_dict_strict(G, ours, f"{path} [g_ema]")
    if estimate:                        # w_avg ≈ E[f(z)], what NVlabs tracks as an EMA during training
        with torch.no_grad():
            z = torch.randn([w_avg_samples, cfg.z_dim], generator=generator)
            G.mapping.w_avg.copy_(G.mapping(z, broadcast=False).mean(0))
    return G


# ----------------------------------------------------------------------------
# Dispatch on the format; the result is frozen.


def load_foreign_generator(path: str | os.PathLike, fmt: str = "auto") -> Generator:
    """Load an NVlabs ``.pkl`` or rosinality ``.pt`` StyleGAN-2 as our (frozen) `Generator`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "nvlabs":
        G = load_nvlabs_pkl(path)
    else:
        G = load_rosinality_pt(path, generator=torch.Generator().manual_seed(0))
    return G.freeze()


# ----------------------------------------------------------------------------
# `sgilo convert`: foreign checkpoint -> NAME.safetensors + NAME.json (+ Gaussianised-w+ fit).


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, fmt: str = "auto", fit_samples: int = 100_000,
                       generator: torch.Generator | None = None) -> dict:
    """Convert ``src`` and write our format at ``dst``; ``fit_samples = 0`` skips the Gaussianised-w+ fit.

    Returns a summary dict (paths, format, resolution, parameter count, sha256 of the source)."""
    G = load_foreign_generator(src, fmt)
    fit = fit_gaussianized_w(G.mapping, num_samples=fit_samples, generator=generator) if fit_samples > 0 else None
    digest = hashlib.sha256()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    source = {"file": Path(src).name, "format": fmt if fmt != "auto" else detect_format(src), "sha256": sha}
    save_generator(dst, G, gaussian_fit=fit, extra={"converted_from": source, "gaussian_fit_samples": fit_samples})
    st, js = model_paths(dst)
    return {"safetensors": str(st), "json": str(js), **source, "resolution": G.img_resolution,
            "parameters": G.num_parameters(), "gaussian_fit": fit is not None}
