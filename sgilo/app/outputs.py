"""Output folders of the commands (`solve`, `demo`, `restore`): checked before any work, never silently overwritten,
written atomically.

* `check_out_dir` runs first (before loading models or solving): the folder must be creatable and writable, and one
  that already holds our outputs is refused unless ``overwrite=True``.
* `clear_outputs` removes the outputs of an earlier run (only files named like ours: `OUTPUT_PATTERNS`) right before
  the new ones are written, so no stale ``sample_07.png`` survives beside a 4-sample run.
* `save_reconstruction` writes the PNGs and the labelled sheet (`sgilo.app.figures.save_sheet`: truth / measurement
  / mean / samples / std with its colour bar, PSNR in the labels); `save_latents` / `load_latents` the final iterate;
  `write_json` the report; `input_record` what was done to the input image (path, sha256, crop, resize).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

from sgilo.app.figures import Panel, save_sheet, std_of
from sgilo.checkpoints import atomic_write, atomic_write_text, read_safetensors
from sgilo.errors import UserError
from sgilo.metrics.quality import image_metrics
from sgilo.solvers.result import Latents, Result

__all__ = ["OUTPUT_PATTERNS", "check_out_dir", "check_out_file", "clear_outputs", "image_metrics", "input_record", "load_latents",
           "save_latents", "save_reconstruction", "write_json"]

# Files our commands write into an output folder (glob patterns); only these are ever deleted by --overwrite.
OUTPUT_PATTERNS = ("result.json", "demo.json", "truth.png", "measurement.png", "mean.png", "std.png", "sample_*.png",
                   "summary.png", "demo_sheet.png", "latents.safetensors", "interval90.safetensors")


# ----------------------------------------------------------------------------
# Our earlier outputs in a folder.


def existing_outputs(out: str | os.PathLike, patterns=OUTPUT_PATTERNS) -> list[Path]:
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted({p for pat in patterns for p in out.glob(pat) if p.is_file()})


# ----------------------------------------------------------------------------
# Before any work: --out must be creatable and writable, and not hold an earlier run unless overwrite.


def check_out_dir(out: str | os.PathLike, overwrite: bool = False, patterns=OUTPUT_PATTERNS, option: str = "--out") \
        -> Path:
    """Raise one clear line if ``out`` cannot be written or holds outputs of an earlier run (and not ``overwrite``).
    Creates nothing; returns ``Path(out)``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out}: expected a folder, found a file")
    anchor = out
    while not anchor.exists():                       # the nearest existing ancestor is where the folder gets created
        anchor = anchor.parent
    if not anchor.is_dir():
        raise UserError(f"{option} {out}: cannot create the folder ({anchor} is a file, not a folder)")
    try:
        fd, tmp = tempfile.mkstemp(dir=anchor, prefix=".sgilo-write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{option} {out}: cannot write to {anchor} ({e.strerror or e})") from None
    old = existing_outputs(out, patterns)
    if old and not overwrite:
        names = ", ".join(p.name for p in old[:3]) + (f" and {len(old) - 3} more" if len(old) > 3 else "")
        raise UserError(f"{option} {out} already holds the outputs of an earlier run ({names}); pass --overwrite to "
                        f"replace them, or choose another folder")
    return out


# ----------------------------------------------------------------------------
# The same for a single output file (`sgilo sample --out grid.png`).


def check_out_file(path: str | os.PathLike, overwrite: bool = False, option: str = "--out") -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: expected a file name, found a folder")
    check_out_dir(path.parent, overwrite=True, patterns=(), option=option)
    if path.exists() and not overwrite:
        raise UserError(f"{option} {path} already exists; pass --overwrite to replace it, or choose another name")
    return path


# ----------------------------------------------------------------------------
# Remove our earlier outputs (never other files) before writing new ones.


def clear_outputs(out: str | os.PathLike, patterns=OUTPUT_PATTERNS) -> list[Path]:
    old = existing_outputs(out, patterns)
    for p in old:
        p.unlink()
    return old


# ----------------------------------------------------------------------------
# What was done to the input image: path, sha256, original size, centre crop and resize (as `load_image` does them).


def input_record(path: str | os.PathLike, resolution: int) -> dict:
    """The crop box is (left, top, right, bottom) in the original's pixels; null when the image was used as it is."""
    from PIL import Image

    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with Image.open(path) as img:
        W, H = img.size
    side = min(W, H)
    left, top = (W - side) // 2, (H - side) // 2
    changed = (W, H) != (resolution, resolution)
    return {"path": str(path.resolve()), "sha256": digest, "size": [W, H],
            "crop": [left, top, left + side, top + side] if changed and W != H else None,
            "resize": {"from": [side, side], "to": [resolution, resolution], "filter": "bicubic"}
            if changed and side != resolution else None}


# ----------------------------------------------------------------------------
# A JSON report (non-finite floats → null), written atomically.


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, report: dict) -> Path:
    atomic_write_text(path, json.dumps(_clean(report), indent=2) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------
# PNGs of one image's reconstruction and its labelled sheet.


def _db(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"\nPSNR {v:.1f} dB"


def save_reconstruction(out: str | os.PathLike, x_hat: Tensor, measurement: Tensor, truth: Tensor | None = None,
                        samples: Tensor | None = None, n_show: int = 4, title: str | None = None) -> dict:
    """Write truth.png, measurement.png, mean.png, sample_XX.png (every sample), std.png (std map with colour bar)
    and summary.png (truth / measurement / mean / samples / std, PSNR in the labels when the truth is known).

    Shapes: x_hat, measurement, truth [C, H, W] in [-1, 1]; samples [K, C, H, W] or None. Returns
    {"files": [...], "psnr": {"mean": dB, "samples": [dB, ...]}} (PSNR only with the truth)."""
    from sgilo.metrics.quality import psnr
    from sgilo.utils.images import save_image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []

    def png(x: Tensor, name: str) -> None:
        save_image(x.detach().float().cpu().clamp(-1, 1), out / name)
        files.append(name)

    def db(x: Tensor) -> float | None:
        return None if truth is None else float(psnr(x.clamp(-1, 1)[None].cpu().float(), truth[None].cpu().float())[0])

    panels = []
    if truth is not None:
        png(truth, "truth.png")
        panels.append(Panel(truth.cpu(), "truth"))
    png(measurement, "measurement.png")
    png(x_hat, "mean.png")
    psnrs = {"mean": db(x_hat), "samples": []}
    panels += [Panel(measurement.cpu(), "measurement"),
               Panel(x_hat.detach().cpu(), ("mean" if samples is not None else "estimate") + _db(psnrs["mean"]))]
    if samples is not None:
        for i, s in enumerate(samples):
            png(s, f"sample_{i:02d}.png")
            psnrs["samples"].append(db(s))
        panels += [Panel(s.detach().cpu(), f"sample {i + 1}" + _db(psnrs["samples"][i]))
                   for i, s in enumerate(samples[:n_show])]
        if samples.shape[0] >= 2:
            std = Panel(std_of(samples.detach().float().cpu()), "posterior std", kind="std")
            save_sheet(out / "std.png", [[std]])
            files.append("std.png")
            panels.append(std)
    save_sheet(out / "summary.png", [panels], title=title)
    files.append("summary.png")
    return {"files": files, "psnr": psnrs}


# ----------------------------------------------------------------------------
# The final iterate (latents.safetensors), enough to continue a run with --init.


def save_latents(out: str | os.PathLike, result: Result) -> Path:
    st = result.state
    tensors = {"z": result.z, "ws": st.ws}
    tensors.update({"h": st.h} if st.h is not None else {})
    tensors.update({"skip": st.skip} if st.skip is not None else {})
    tensors.update({f"noise_{i}": n for i, n in enumerate(st.noises) if n is not None})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    path = Path(out) / "latents.safetensors"
    atomic_write(path, lambda p: save_file(tensors, p, metadata={"k": str(st.k)}))
    return path


def load_latents(path: str | os.PathLike) -> Latents:
    """A run folder or its latents.safetensors → `Latents`; a missing, corrupt or foreign file is one clear line."""
    p = Path(path)
    p = p / "latents.safetensors" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"--init: no saved latents at {path} (expected a run folder or the "
                                f"latents.safetensors that `sgilo solve` writes)")
    t, meta = read_safetensors(p, "--init latents file")
    if "z" not in t or "k" not in meta:
        raise UserError(f"--init: {p} is not a latents file written by `sgilo solve` (needs tensor 'z' and metadata k)")
    n = len([k for k in t if k.startswith("noise_")])
    if any(f"noise_{i}" not in t for i in range(n)):
        raise UserError(f"--init: {p} has noise maps with missing indices: {sorted(k for k in t if 'noise' in k)}")
    return Latents(k=int(meta["k"]), z=t["z"], h=t.get("h"), skip=t.get("skip"),
                   noises=tuple(t[f"noise_{i}"] for i in range(n)))
