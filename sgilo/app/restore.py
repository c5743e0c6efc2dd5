"""`sgilo restore`: restore faces in a photo that IS the degraded observation y (not a ground truth to be measured).

For each photo: find the faces (`sgilo.app.faces`, or the whole photo with ``aligned=True``), frame each as the model's
aligned crop (an axis-aligned similarity, recorded), map the observation (and the mask) into the crop, build the
task's operator in the crop frame, draw K posterior samples with SGILO (Daras et al., ICML 2022) through the solver
registry, and paste the posterior mean back into the photo with a feathered edge (GFPGAN-style paste-back).

Per task, with the crop window of side m photo pixels and the model resolution R:

* ``superres``: y is the low-resolution photo; the window's pixels are used as they are (no resampling of y) and
  A = `Resample` R×R → m×m (anti-aliased bicubic, any ratio R/m — non-integer when the face is not an integer
  fraction of the model). The output photo is the input up-sampled by ``factor`` (given, or R/m of the largest face).
* ``inpaint-mask``: y = photo, mask (white = observed) of the photo's size; both warped to the crop (a crop pixel is
  observed when every photo pixel it draws on is); A = `Inpainting`.
* ``colorize``: a grey photo (1 channel or 3 equal channels); y = its grey level in the crop; A = `Colorization`.
* ``denoise``: A = `Denoising` with noise std σ (``sigma``, in [-1, 1] pixel units, given or estimated by
  `estimate_sigma`), scaled by the resampling's noise gain when m ≠ R.
* ``deblur``: A = `Deblur` with kernel std ``kernel_sigma`` photo pixels (× R/m in the crop).

result.json per photo: input path + sha256, detector, boxes, alignment transforms, task parameters, the residual
‖A x̂ − y‖ / ‖y‖ of each face (crop frame), seeds, solver config and the files written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sgilo.app import faces as F
from sgilo.app.figures import Panel, save_sheet, std_of
from sgilo.app.models import load_models
from sgilo.app.outputs import check_out_dir, clear_outputs, write_json
from sgilo.app.presets import default_preset, preset_config
from sgilo.errors import UserError
from sgilo.operators import Colorization, Deblur, Denoising, GaussianNoise, Inpainting
from sgilo.operators.resampling import Resample
from sgilo.solvers.registry import get_solver
from sgilo.utils.images import save_image

log = logging.getLogger("sgilo")

TASKS = ("superres", "inpaint-mask", "colorize", "denoise", "deblur")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Files `restore` writes in OUT/<photo stem>/ (only these are replaced by --overwrite).
RESTORE_PATTERNS = ("*/result.json", "*/restored.png", "*/sheet.png", "*/face*_*.png")


@dataclass(frozen=True)
class RestoreTask:
    """What the photo is an observation of. ``sigma``: noise std in [-1, 1] units (None: estimated for denoise,
    0 otherwise); ``factor``: superres output scale (None: R / face window); ``mask``: inpaint-mask file."""
    task: str
    factor: float | None = None
    mask: str | None = None
    sigma: float | None = None
    kernel_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--task: expected one of {list(TASKS)}, got {self.task!r}")
        if self.task == "inpaint-mask" and self.mask is None:
            raise ValueError("--task inpaint-mask needs --mask FILE (white = observed, same size as the photo)")
        if self.task != "inpaint-mask" and self.mask is not None:
            raise ValueError(f"--mask applies to --task inpaint-mask only, got --task {self.task}")
        if self.task == "deblur" and not (self.kernel_sigma and self.kernel_sigma > 0):
            raise ValueError(f"--task deblur needs --kernel-sigma > 0 (blur std in photo pixels), got "
                             f"{self.kernel_sigma!r}")
        if self.factor is not None and not (self.factor >= 1 and self.factor <= 16):
            raise ValueError(f"--factor: expected a number in [1, 16], got {self.factor!r}")
        if self.sigma is not None and not (self.sigma >= 0 and self.sigma < 2):
            raise ValueError(f"--sigma: expected a noise std in [0, 2) ([-1, 1] pixel units), got {self.sigma!r}")


# ----------------------------------------------------------------------------
# Photo files: one or several paths, folders expanded to their images (sorted).


def expand_photos(paths) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise UserError(f"{p}: folder holds no images (expected {', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"photo not found: {p}")
    if not out:
        raise UserError("expected at least one PHOTO (a file or a folder of images)")
    return out


def load_photo(path: str | os.PathLike) -> Tensor:
    """[C, H, W] in [-1, 1]: C = 1 for a greyscale file, else 3 (alpha composited on white)."""
    from sgilo.utils.images import _open, _to_rgb
    img = _open(path)
    if img.mode in ("L", "I;16", "I", "F"):
        arr = np.asarray(img.convert("L"), dtype=np.float32)[None]
    else:
        arr = np.asarray(_to_rgb(img), dtype=np.float32).transpose(2, 0, 1)
    return torch.from_numpy(arr / 127.5 - 1.0).contiguous()


def grey_of(photo: Tensor, path) -> Tensor:
    """[1, H, W] grey level of a grey photo; one clear line for a colour photo."""
    if photo.shape[0] == 1:
        return photo
    spread = float((photo.amax(0) - photo.amin(0)).max())
    if spread > 3 / 127.5:
        raise UserError(f"{path}: --task colorize expects a grey photo (1 channel or 3 equal channels), got colour "
                        f"(channels differ by up to {spread * 127.5:.0f}/255)")
    return photo.mean(0, keepdim=True)


# ----------------------------------------------------------------------------
# Noise level of a photo: MAD of the finest orthonormal Haar diagonal coefficients (Donoho & Johnstone, Biometrika 1994:
# σ̂ = median(|d|) / 0.6745 for the finest-scale detail coefficients d of an image whose signal there is sparse).


def estimate_sigma(photo: Tensor) -> float:
    """photo [C, H, W] in [-1, 1] → σ̂ in the same units. HH = (a − b − c + d) / 2 on 2×2 blocks (orthonormal)."""
    x = photo[:, : photo.shape[1] // 2 * 2, : photo.shape[2] // 2 * 2].double()
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise UserError(f"cannot estimate the noise of a {tuple(photo.shape[1:])} photo; pass --sigma")
    hh = (x[:, 0::2, 0::2] - x[:, 0::2, 1::2] - x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) / 2
    return float(hh.abs().median() / 0.6745)


# ----------------------------------------------------------------------------
# Where the faces are: detected windows, or the whole (centre-square) photo for aligned crops.


@dataclass(frozen=True)
class Window:
    left: int
    top: int
    size: int
    box: F.Box | None
    shifted: bool = False


def find_windows(photo: Tensor, path, aligned: bool, detector: str, framing: F.Framing,
                 max_faces: int | None = None) -> list[Window]:
    H, W = photo.shape[1:]
    if aligned:
        m = min(H, W)
        return [Window((W - m) // 2, (H - m) // 2, m, None)]
    boxes = F.detect_faces(F.to_uint8_rgb(photo), detector)
    if not boxes:
        raise UserError(f"{path}: no face found (detector {detector}, photo {W}x{H}); pass --aligned if the photo "
                        f"is already an aligned face crop")
    wins = []
    for b in boxes:
        left, top, m, shifted = F.crop_window(b, framing, (H, W))
        wins.append(Window(left, top, m, b, shifted))
    return wins[:max_faces] if max_faces else wins


# ----------------------------------------------------------------------------
# The observation in the crop frame and the operator there.


def crop_problem(photo: Tensor, mask: Tensor | None, win: Window, spec: RestoreTask, sigma: float, R: int):
    """(y [1, ...], operator, params) for one face window."""
    m, args = win.size, (win.left, win.top, win.size, R)
    gain = F.noise_gain(m, R) if spec.task != "superres" else 1.0
    s_crop = sigma * gain
    noise = GaussianNoise(s_crop) if s_crop > 0 else None
    params = {"window_size": m, "noise_sigma_crop": s_crop}
    if spec.task == "superres":
        y = photo[:, win.top:win.top + m, win.left:win.left + m].clone()
        op = Resample((3, R, R), (m, m), noise)
        params["ratio"] = R / m
    elif spec.task == "inpaint-mask":
        mc = F.warp_mask_to_crop(mask, *args)
        if not bool(mc.any()):
            raise UserError(f"the mask leaves no observed pixel in the face window {win.left, win.top, m}")
        op = Inpainting(mc, noise)
        y = F.warp_to_crop(photo, *args) * mc
        params["observed_fraction"] = float(mc.mean())
    elif spec.task == "colorize":
        y, op = F.warp_to_crop(photo, *args), Colorization(noise)
    elif spec.task == "denoise":
        y, op = F.warp_to_crop(photo, *args), Denoising(noise)
    else:
        ks = spec.kernel_sigma * R / m
        y, op = F.warp_to_crop(photo, *args), Deblur(ks, (3, R, R), noise)
        params["kernel_sigma_crop"] = ks
    return y[None].float(), op, params


def observation_image(y: Tensor, R: int) -> Tensor:
    """[C, h, w] observation in the crop frame → [3, R, R] for display (bicubic up-sampling of a low-res crop)."""
    y = F.resize(y, R, R) if y.shape[-1] != R else y
    return y.expand(3, -1, -1) if y.shape[0] == 1 else y


# ----------------------------------------------------------------------------
# The output canvas: the photo (grey → 3 channels), up-sampled by the factor for superres.


def make_canvas(photo: Tensor, spec: RestoreTask, factor: float) -> Tensor:
    x = photo.expand(3, -1, -1) if photo.shape[0] == 1 else photo
    if spec.task != "superres" or factor == 1:
        return x.clone()
    H, W = x.shape[1:]
    return F.resize(x, max(1, round(H * factor)), max(1, round(W * factor))).clamp(-1, 1)


def superres_factor(spec: RestoreTask, wins: list[Window], R: int) -> float:
    """The given factor, or R / (largest face window) — at least 1 (a face already at the model's size or larger
    is fitted as it is; said once)."""
    if spec.factor is not None:
        return float(spec.factor)
    m = max(w.size for w in wins)
    if m >= R:
        log.warning("the face window (%d px) is already at least the model's %d px: nothing to up-sample; the face "
                    "is fitted at its size (pass --factor to enlarge the photo)", m, R)
    return max(1.0, R / m)


def out_window(win: Window, factor: float, canvas_hw) -> tuple[int, int, int]:
    H, W = canvas_hw
    m = min(max(1, round(win.size * factor)), H, W)
    return min(round(win.left * factor), W - m), min(round(win.top * factor), H - m), m


# ----------------------------------------------------------------------------
# One photo, every face.


def restore_photo(path: Path, out: Path, spec: RestoreTask, models, config, seed: int = 0, aligned: bool = False,
                  detector: str = "hog", max_faces: int | None = None, solver: str = "sgilo") -> dict:
    """Restore the faces of ``path`` into folder ``out`` (created); returns the result.json dict."""
    G, fit, priors = models
    R, device = G.img_resolution, next(G.parameters()).device
    entry = get_solver(solver)
    photo = load_photo(path)
    grey = spec.task == "colorize"
    if grey:
        photo = grey_of(photo, path)
    elif photo.shape[0] == 1:
        photo = photo.expand(3, -1, -1).clone()
    H, W = photo.shape[1:]
    original, mask = photo, None
    if spec.task == "inpaint-mask":
        from sgilo.utils.images import load_mask
        mask = load_mask(spec.mask, (H, W))[0, 0]
        photo = photo * mask                                      # unobserved pixels carry no information
    seen = F.fill_holes(photo, mask) if mask is not None and not aligned else photo   # what the detector sees
    wins = find_windows(seen, path, aligned, detector, F.UTKFACE_FRAMING[detector], max_faces)
    sigma = spec.sigma if spec.sigma is not None else (estimate_sigma(photo) if spec.task == "denoise" else 0.0)
    factor = superres_factor(spec, wins, R) if spec.task == "superres" else 1.0
    canvas = make_canvas(original, spec, factor)                # the photo as given (holes included)
    restored = canvas.clone()
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out, tuple(p.split("/", 1)[1] for p in RESTORE_PATTERNS))
    faces, files, rows = [], [], []
    for i, win in enumerate(wins):
        y, op, params = crop_problem(photo, mask, win, spec, sigma, R)
        t0 = time.perf_counter()
        res = entry.solve(y.to(device), op.to(device), G, fit, priors=priors, config=config, seeds=[seed + i])
        seconds = time.perf_counter() - t0
        x_hat = res.x_hat[0].detach().float().cpu().clamp(-1, 1)
        samples = None if res.samples is None else res.samples[:, 0].detach().float().cpu()
        op = op.cpu()
        residual = float((op.A(x_hat[None]) - y).norm() / y.norm().clamp_min(1e-12))
        ol, ot, om = out_window(win, factor, canvas.shape[1:])
        if aligned:                                               # the crop is the (centre square of the) photo
            restored[:, ot:ot + om, ol:ol + om] = F.resize(x_hat, om, om).clamp(-1, 1)
        else:
            restored = F.paste_back(restored, x_hat, ol, ot, om).clamp(-1, 1)
        names = _save_face(out, i, observation_image(y[0], R), x_hat, samples)
        files += names
        rows.append(_face_panels(i, observation_image(y[0], R), x_hat, samples, residual))
        faces.append({"index": i, "box": None if win.box is None else win.box.as_list(),
                      "box_score": None if win.box is None else win.box.score, "window_shifted": win.shifted,
                      "alignment": F.similarity(win.left, win.top, win.size, R),
                      "paste_window": {"left": ol, "top": ot, "size": om}, "task_params": params,
                      "residual": residual, "seed": seed + i, "seconds": seconds,
                      "std_mean": None if samples is None else float(std_of(samples.float()).mean())})
    save_image(restored, out / "restored.png")
    files.append("restored.png")
    save_sheet(out / "sheet.png", [[Panel(canvas, "input" + (" (up-sampled)" if factor != 1 else "")),
                                    Panel(restored, "restored")]] + rows,
               title=f"sgilo restore · {spec.task} · {Path(path).name}")
    files.append("sheet.png")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    report = {"input": {"path": str(Path(path).resolve()), "sha256": digest,
                        "size": [W, H], "channels": int(photo.shape[0])},
              "task": {"task": spec.task, "factor": factor if spec.task == "superres" else None, "mask": spec.mask,
                       "sigma": sigma, "sigma_estimated": spec.sigma is None and spec.task == "denoise",
                       "kernel_sigma": spec.kernel_sigma},
              "aligned": aligned, "detector": None if aligned else detector,
              "framing": None if aligned else vars(F.UTKFACE_FRAMING[detector]), "model_resolution": R,
              "output_size": list(restored.shape[1:][::-1]), "faces": faces, "seed": seed, "solver": solver,
              "config": _config_dict(config), "files": files + ["result.json"]}
    write_json(out / "result.json", report)
    return report


def _save_face(out: Path, i: int, obs: Tensor, x_hat: Tensor, samples: Tensor | None) -> list[str]:
    names = {f"face{i}_crop.png": obs, f"face{i}_mean.png": x_hat}
    for k, s in enumerate([] if samples is None else samples):
        names[f"face{i}_sample_{k:02d}.png"] = s.clamp(-1, 1)
    for name, img in names.items():
        save_image(img.float().cpu(), out / name)
    files = list(names)
    if samples is not None and samples.shape[0] >= 2:
        save_sheet(out / f"face{i}_std.png", [[Panel(std_of(samples.float().cpu()), f"face {i}: posterior std",
                                               kind="std")]])
        files.append(f"face{i}_std.png")
    return files


def _face_panels(i: int, obs: Tensor, x_hat: Tensor, samples: Tensor | None, residual: float, n_show: int = 3):
    row = [Panel(obs.cpu(), f"face {i}: observation"), Panel(x_hat.cpu(), f"mean\nresidual {residual:.3f}")]
    if samples is not None:
        row += [Panel(s.clamp(-1, 1).cpu(), f"sample {k + 1}") for k, s in enumerate(samples[:n_show])]
        if samples.shape[0] >= 2:
            row.append(Panel(std_of(samples.float().cpu()), "posterior std", kind="std"))
    return row


def _config_dict(config) -> dict:
    from sgilo.app.solve import config_dict
    return config_dict(config)


# ----------------------------------------------------------------------------
# The batch: load the models once, one folder per photo, a progress bar; failures listed at the end.


def restore_config(model: str = "default", preset: str = "auto", steps: tuple[int, ...] | None = None,
                   samples: int | None = None, seed: int = 0, solver: str = "sgilo"):
    preset = default_preset(model) if preset == "auto" else preset
    kw = {"seed": seed, "progress": False}
    kw.update({"steps": tuple(steps)} if steps else {})
    kw.update({"chains": samples} if samples else {})
    return replace(preset_config(preset, solver), **kw)


def photo_folders(photos: list[Path]) -> list[str]:
    """One output folder name per photo: its stem, with _2, _3 … for repeated stems."""
    seen: dict[str, int] = {}
    names = []
    for p in photos:
        seen[p.stem] = seen.get(p.stem, 0) + 1
        names.append(p.stem if seen[p.stem] == 1 else f"{p.stem}_{seen[p.stem]}")
    return names


def restore_photos(photos, out: str | os.PathLike, spec: RestoreTask, *, model: str = "default",
                   prior: str = "default", preset: str = "auto", steps: tuple[int, ...] | None = None,
                   samples: int | None = None, seed: int = 0, aligned: bool = False, detector: str = "hog",
                   max_faces: int | None = None, overwrite: bool = False, device: str | None = None,
                   progress: bool = True, echo=None) -> list[dict]:
    """Restore every photo (files or folders) into OUT/<stem>/; one clear line (UserError) if any photo failed."""
    from tqdm import tqdm
    photos = expand_photos(photos)
    out = check_out_dir(out, overwrite, RESTORE_PATTERNS)
    if detector not in F.DETECTORS:
        raise UserError(f"--detector: expected one of {list(F.DETECTORS)}, got {detector!r}")
    config = restore_config(model, preset, steps, samples, seed)
    if model != "default" and not aligned:
        log.warning("the face framing is calibrated for the bundled UTKFace model's crops; another model's "
                    "alignment (e.g. FFHQ's) is not implemented: pass --aligned crops for it")
    models = load_models(model, prior, device or "cpu")
    reports, failed = [], []
    for path, name in tqdm(list(zip(photos, photo_folders(photos), strict=True)), desc="restore", unit="photo",
                           disable=not progress or len(photos) == 1):
        try:
            rep = restore_photo(path, out / name, spec, models, config, seed, aligned, detector, max_faces)
        except (UserError, ValueError) as e:
            if len(photos) == 1:
                raise
            failed.append(f"{path}: {e}")
            continue
        reports.append(rep)
        if echo:
            res = ", ".join(f"{f['residual']:.4f}" for f in rep["faces"])
            echo(f"{path}: {len(rep['faces'])} face(s), residual {res} -> {out / name}/restored.png")
    if failed:
        raise UserError(f"{len(failed)} of {len(photos)} photos failed: " + "; ".join(failed))
    return reports
