"""Image data sets for training: an image folder or a dataset zip in the StyleGAN layout, held in memory as uint8.

A dataset zip holds images plus ``dataset.json`` = {"images": [{"file", "split", ...}, ...]}; only entries of the
requested split are read (``train`` for training — the ``test`` split is for evaluation only). A folder is read
recursively (png/jpg/jpeg/bmp/webp); if it has ``train/`` and ``test/`` sub-folders the split picks one.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


# ----------------------------------------------------------------------------
# List (name, opener) pairs of a split.


def _list_zip(path: Path, split: str) -> tuple[zipfile.ZipFile, list[str]]:
    z = zipfile.ZipFile(path)
    names = set(z.namelist())
    if "dataset.json" in names:
        meta = json.loads(z.read("dataset.json"))
        files = [e["file"] for e in meta.get("images", []) if e.get("split", split) == split]
    else:
        files = [n for n in sorted(names) if Path(n).suffix.lower() in IMAGE_EXTS
                 and (n.startswith(f"{split}/") or "/" not in n)]
    return z, sorted(files)


def _list_folder(path: Path, split: str) -> list[Path]:
    root = path / split if (path / split).is_dir() else path
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


# ----------------------------------------------------------------------------
# Decode one image to [C, R, R] uint8 (centre crop + Lanczos resize when needed).


def _decode(data: bytes | Path, resolution: int) -> np.ndarray:
    img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data).convert("RGB")
    w, h = img.size
    if w != h:
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if img.size[0] != resolution:
        img = img.resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


# ----------------------------------------------------------------------------
# Load a whole split into memory: uint8 tensor [N, 3, R, R].


def load_image_set(path: str | Path, resolution: int, split: str = "train", limit: int | None = None) -> torch.Tensor:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data set not found: {path} (expected an image folder or a dataset .zip)")
    if path.is_file() and path.suffix.lower() == ".zip":
        z, files = _list_zip(path, split)
        files = files[:limit] if limit else files
        arrays = [_decode(z.read(f), resolution) for f in files]
    elif path.is_dir():
        files = _list_folder(path, split)
        files = files[:limit] if limit else files
        arrays = [_decode(f, resolution) for f in files]
    else:
        raise ValueError(f"data set must be a folder or a .zip file, got {path}")
    if not arrays:
        raise ValueError(f"no images of split {split!r} found in {path}")
    log.info("loaded %d images (split %s) from %s at %dx%d", len(arrays), split, path, resolution, resolution)
    return torch.from_numpy(np.stack(arrays))


# ----------------------------------------------------------------------------
# uint8 [N, 3, R, R] -> float in [-1, 1].


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0
