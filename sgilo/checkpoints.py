"""Our checkpoint format: safetensors weights + a JSON config, written atomically.

A model ``NAME`` is two files: ``NAME.safetensors`` (the state dict, fp32 or fp16) and ``NAME.json``
(``{"format": "sgilo/<kind>", "version": 1, "config": {...}, "extra": {...}}``). Loading is strict: every key of the
module must be present with the right shape, and no unknown key may remain.

Training checkpoints (optimisers, RNG states, step counters) are plain dicts written with `torch.save` and read with
``torch.load(weights_only=True)`` — never a pickle that could run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from sgilo.errors import CheckpointKeyError, UserError

FORMAT_VERSION = 1


# ----------------------------------------------------------------------------
# The process umask (read without changing it for longer than one call).


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------
# Atomic write: a temporary file in the same folder, fsync, then rename.


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then atomically rename the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: Path(p).write_text(text))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    atomic_write(path, lambda p: torch.save(obj, p))


def torch_load_safe(path: str | os.PathLike) -> Any:
    """`torch.load` with ``weights_only=True`` (tensors, dicts, lists, numbers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------
# Resolve "NAME" / "NAME.json" / "NAME.safetensors" to the pair of files.


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


# ----------------------------------------------------------------------------
# Read a .safetensors file (tensors + metadata); a truncated or corrupt file is one clear line, not a traceback.


def read_safetensors(path: str | os.PathLike, what: str = "model file") -> tuple[dict[str, torch.Tensor], dict]:
    """Returns (tensors on the CPU, string metadata). ``what`` names the file in errors ('model file', 'prior file',
    '--init latents', ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except SafetensorError:
        raise UserError(f"cannot read {what} {path}: not a valid safetensors file (truncated or corrupt)") from None


# ----------------------------------------------------------------------------
# Read a JSON file; invalid JSON is one clear line.


def read_json(path: str | os.PathLike, what: str = "model file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} {path}: not valid JSON ({e})") from None


# ----------------------------------------------------------------------------
# Save a state dict + config.


def save_model(path: str | os.PathLike, kind: str, config: dict, state_dict: dict[str, torch.Tensor],
               extra: dict | None = None, dtype: torch.dtype | None = None) -> tuple[Path, Path]:
    """Write ``NAME.safetensors`` and ``NAME.json``. ``dtype`` (e.g. torch.float16) casts floating tensors."""
    st_path, js_path = model_paths(path)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    atomic_write(st_path, lambda p: save_file(tensors, p))
    meta = {"format": f"sgilo/{kind}", "version": FORMAT_VERSION, "config": config, "extra": extra or {}}
    atomic_write_text(js_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return st_path, js_path


# ----------------------------------------------------------------------------
# Load config + state dict, checking the format tag.


def load_model(path: str | os.PathLike, kind: str) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """Returns (config, state_dict as float32, extra)."""
    st_path, js_path = model_paths(path)
    for p in (st_path, js_path):
        if not p.is_file():
            raise FileNotFoundError(f"model file not found: {p} (expected NAME.safetensors and NAME.json)")
    meta = read_json(js_path, f"{kind} file")
    if not isinstance(meta, dict) or meta.get("format") != f"sgilo/{kind}":
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"{js_path}: expected format 'sgilo/{kind}', got {got!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{js_path}: unsupported version {meta.get('version')!r}, expected {FORMAT_VERSION}")
    tensors, _ = read_safetensors(st_path, f"{kind} file")
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    return meta["config"], sd, meta.get("extra", {})


# ----------------------------------------------------------------------------
# Strict load with one clear error naming the first offending key.


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing:
        raise CheckpointKeyError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing in all)")
    if unexpected:
        raise CheckpointKeyError(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    for k, v in state_dict.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise UserError(f"{source}: key {k!r} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    module.load_state_dict(state_dict, strict=True)
