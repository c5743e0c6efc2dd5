"""Faces in real photos for `sgilo restore`: detection, the aligned-crop transform, warps of images and masks between
photo and crop, and a feathered paste-back (the detect → align → restore → paste pipeline of GFPGAN, Wang et al.
CVPR 2021, `gfpgan/utils.py`, with an axis-aligned similarity instead of a landmark warp).

* Detection (offline, detectors shipped inside their wheels): ``'hog'`` — dlib's built-in HOG + linear-SVM frontal
  face detector (`dlib.get_frontal_face_detector`, package ``dlib-bin``; Dalal & Triggs CVPR 2005), the default —
  or ``'haar'`` — OpenCV's Viola–Jones cascade ``haarcascade_frontalface_default.xml`` (package
  ``opencv-python-headless`` < 5, which ships ``cv2.data``; Viola & Jones CVPR 2001). Small photos are
  up-sampled before detection (both detectors miss faces under ≈ 40–80 px) and the boxes are mapped back.
  The comparison that chose HOG (recall, false positives, time on faces pasted into synthetic photos) and the script
  that measured it are in docs/restore.md.
* Framing: a detector box (x0, y0, x1, y1) → the square the model was trained on (`Framing`): centre = box centre +
  (dx, dy)·side, crop side = scale·side. The constants for UTKFace's aligned crops (the bundled model) were measured
  by `calibrate_framing` on `train/` crops pasted into synthetic photos (values in `UTKFACE_FRAMING`).
* Transform: the crop window is an integer square (left, top, m) of photo pixels, so crop pixel (u, v) ↔ photo
  pixel (left + (u + ½)·m/R − ½, top + (v + ½)·m/R − ½): a similarity x = s·u + t with s = m/R (no rotation),
  recorded as a 2×3 matrix. Resampling between the two uses `sgilo.operators.resampling.resample_matrix`.
* Paste-back: the restored crop resized to the window, blended with a weight that is 1 inside and ramps linearly to
  0 over ``feather`` pixels at the window's edge; every pixel outside the window is left exactly as it was.

Shapes: images are float tensors [C, H, W] in [-1, 1] unless said otherwise; masks [H, W] in {0, 1}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sgilo.operators.resampling import resample_matrix

DETECTORS = ("hog", "haar")


# ----------------------------------------------------------------------------
# A detected face: box in photo pixels (x0, y0, x1, y1), half-open, float.


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 0.0

    @property
    def side(self) -> float:
        return 0.5 * ((self.x1 - self.x0) + (self.y1 - self.y0))

    @property
    def centre(self) -> tuple[float, float]:
        return 0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1)

    def scaled(self, f: float) -> Box:
        return Box(self.x0 * f, self.y0 * f, self.x1 * f, self.y1 * f, self.score)

    def as_list(self) -> list[float]:
        return [round(v, 2) for v in (self.x0, self.y0, self.x1, self.y1)]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------
# The two detectors on an 8-bit RGB array [H, W, 3] → boxes in its pixels.


def _detect_hog(rgb: np.ndarray) -> list[Box]:
    rects, scores, _ = _hog_detector().run(np.ascontiguousarray(rgb), 0, 0.0)      # no extra up-sampling, threshold 0
    return [Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s)) for r, s in zip(rects, scores, strict=True)]


_HOG = None


def _hog_detector():
    """dlib's frontal-face detector (built once; its model ships inside the dlib-bin wheel)."""
    global _HOG
    if _HOG is None:
        try:
            import dlib
        except ImportError:
            raise ValueError("face detection needs dlib's HOG detector: pip install dlib-bin (or 'sgilo[faces]'); "
                             "or pass --aligned for photos that are already aligned face crops") from None
        _HOG = dlib.get_frontal_face_detector()
    return _HOG


def _detect_haar(rgb: np.ndarray) -> list[Box]:
    try:
        import cv2
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    except (ImportError, AttributeError):
        raise ValueError("the 'haar' detector needs OpenCV with its cascades: pip install 'opencv-python-headless<5'")\
            from None
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ValueError(f"OpenCV could not load its face cascade {path} (OpenCV 5 no longer ships cv2.data; "
                         f"install 'opencv-python-headless<5')")
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    boxes, _, weights = cascade.detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24),
                                                  outputRejectLevels=True)
    return [Box(float(x), float(y), float(x + w), float(y + h), float(s))
            for (x, y, w, h), s in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True)]


def _upsample_uint8(rgb: np.ndarray, u: int) -> np.ndarray:
    from PIL import Image
    H, W = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((W * u, H * u), Image.BICUBIC))


def detect_faces(rgb: np.ndarray, detector: str = "hog", min_side: int = 320, max_side: int = 2048) -> list[Box]:
    """Faces in an 8-bit RGB photo [H, W, 3], largest first. The photo is up-sampled by the smallest power of two
    u with u·min(H, W) ≥ ``min_side`` (faces of ≈ 1/6 of a small photo are then ≥ 50 px), and once more by 2 when
    nothing is found (while the longer side stays ≤ ``max_side``); boxes overlapping a larger one (IoU > 0.3) drop."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown face detector {detector!r}; expected one of {list(DETECTORS)}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"detect_faces: expected an 8-bit RGB array [H, W, 3], got {rgb.dtype} {rgb.shape}")
    run = _detect_hog if detector == "hog" else _detect_haar
    H, W = rgb.shape[:2]
    u = 1
    while u * min(H, W) < min_side and 2 * u * max(H, W) <= max_side:
        u *= 2
    boxes = run(_upsample_uint8(rgb, u) if u > 1 else rgb)
    if not boxes and 2 * u * max(H, W) <= max_side:
        u *= 2
        boxes = run(_upsample_uint8(rgb, u))
    boxes = sorted((b.scaled(1 / u) for b in boxes), key=lambda b: -b.side)
    kept: list[Box] = []
    for b in boxes:
        if all(iou(b, k) <= 0.3 for k in kept):
            kept.append(b)
    return kept


# ----------------------------------------------------------------------------
# Box → the model's crop square: centre = box centre + (dx, dy)·side, crop side = scale·side.


@dataclass(frozen=True)
class Framing:
    scale: float
    dx: float
    dy: float


# Measured by `calibrate_framing` (below) on the first 24 UTKFace `train/` crops pasted at each of `SIZES` into
# synthetic photos (docs/restore.md): HOG found 140/144, crop side / box side median 1.103 (IQR 1.02–1.19; dlib's boxes
# come in discrete sizes), centre offset (−0.005, −0.006)·side; Haar found 137/144, 0.985 (IQR 0.93–1.04),
# (0.008, 0.078)·side.
UTKFACE_FRAMING = {"hog": Framing(1.103, -0.005, -0.006), "haar": Framing(0.985, 0.008, 0.078)}


def crop_window(box: Box, framing: Framing, photo_hw: tuple[int, int]) -> tuple[int, int, int, bool]:
    """(left, top, m, shifted): the integer square window of side m framing ``box``; moved (and shrunk if needed) to
    lie inside the photo (``shifted`` then True — the face is then off-centre in the crop)."""
    H, W = photo_hw
    cx, cy = box.centre
    side = framing.scale * box.side
    cx, cy = cx + framing.dx * box.side, cy + framing.dy * box.side
    m = max(4, int(round(side)))
    m = min(m, H, W)
    left, top = int(round(cx - m / 2)), int(round(cy - m / 2))
    l2, t2 = min(max(left, 0), W - m), min(max(top, 0), H - m)
    return l2, t2, m, (l2, t2) != (left, top) or m != int(round(side))


def similarity(left: int, top: int, m: int, resolution: int) -> dict:
    """The crop → photo similarity x = s·u + t (pixel centres) and its inverse, as 2×3 matrices."""
    s = m / resolution
    tx, ty = left + 0.5 * s - 0.5, top + 0.5 * s - 0.5
    return {"crop_to_photo": [[s, 0.0, tx], [0.0, s, ty]],
            "photo_to_crop": [[1 / s, 0.0, -tx / s], [0.0, 1 / s, -ty / s]],
            "window": {"left": left, "top": top, "size": m}, "crop_size": resolution, "rotation_deg": 0.0}


# ----------------------------------------------------------------------------
# Warps between the photo window and the crop (separable bicubic resampling; exact crop when m == R).


def warp_to_crop(photo: Tensor, left: int, top: int, m: int, resolution: int) -> Tensor:
    """[C, H, W] photo → [C, R, R] crop of window (left, top, m)."""
    win = photo[:, top:top + m, left:left + m].double()
    if m == resolution:
        return win.to(photo.dtype).clone()
    R = resample_matrix(m, resolution)
    return (R @ win @ R.T).to(photo.dtype)


def warp_mask_to_crop(mask: Tensor, left: int, top: int, m: int, resolution: int) -> Tensor:
    """[H, W] {0, 1} mask → [R, R]: a crop pixel is observed when every photo pixel its resampling kernel touches is."""
    win = mask[top:top + m, left:left + m].double()
    if m == resolution:
        return win.float().clone()
    support = (resample_matrix(m, resolution) != 0).double()
    return ((support @ (1 - win) @ support.T) == 0).float()


def noise_gain(m: int, resolution: int) -> float:
    """Std of white noise (σ = 1) after resampling an m-window to R (mean over crop pixels of ‖R_i‖·‖R_j‖)."""
    if m == resolution:
        return 1.0
    n = resample_matrix(m, resolution).norm(dim=1)
    return float(torch.outer(n, n).mean())


def resize(img: Tensor, h: int, w: int) -> Tensor:
    """[C, H, W] → [C, h, w] by separable bicubic resampling (anti-aliased when shrinking)."""
    C, H, W = img.shape
    if (H, W) == (h, w):
        return img.clone()
    return (resample_matrix(H, h) @ img.double() @ resample_matrix(W, w).T).to(img.dtype)


# ----------------------------------------------------------------------------
# Feathered paste-back: weight 1 inside, linear ramp to 0 over `feather` pixels at the window edge.


def feather_weights(m: int, feather: int) -> Tensor:
    """[m, m] weights min(ramp_x, ramp_y), ramp(i) = min(1, (min(i, m − 1 − i) + ½) / feather)."""
    i = torch.arange(m, dtype=torch.float64)
    ramp = ((torch.minimum(i, m - 1 - i) + 0.5) / max(feather, 1)).clamp(max=1.0)
    return torch.minimum(ramp[:, None], ramp[None, :]).float()


def paste_back(canvas: Tensor, face: Tensor, left: int, top: int, m: int, feather: int | None = None) -> Tensor:
    """[C, H, W] canvas with ``face`` ([C, R, R], resized to m×m) blended into window (left, top, m); pixels outside
    the window are unchanged. ``feather`` defaults to max(2, round(0.1·m))."""
    feather = max(2, round(0.1 * m)) if feather is None else feather
    out = canvas.clone()
    w = feather_weights(m, feather).to(canvas.dtype)
    win = out[:, top:top + m, left:left + m]
    out[:, top:top + m, left:left + m] = w * resize(face.to(canvas.dtype), m, m) + (1 - w) * win
    return out


def to_uint8_rgb(img: Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] (C = 1 or 3) → [H, W, 3] uint8."""
    x = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    return x.permute(1, 2, 0).contiguous().numpy()


# ----------------------------------------------------------------------------
# Calibration and measurement on synthetic photos: aligned crops pasted at several sizes into 320×240 scenes
# (colour gradient + smooth colour blobs + noise), detected exactly as at run time.

SIZES = (24, 32, 48, 64, 96, 128)


def synthetic_scene(face: np.ndarray, size: int, rng: np.random.Generator, hw=(240, 320)) -> tuple[np.ndarray, Box]:
    """An 8-bit [H, W, 3] scene with ``face`` ([R, R, 3] uint8) resized to size×size at a random place; its box."""
    from PIL import Image
    H, W = hw
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    c0, c1, c2 = rng.uniform(40, 215, (3, 3))
    img = c0 + np.multiply.outer(xx, c1 - c0) * 0.8 + np.multiply.outer(yy, c2 - c0) * 0.5
    blobs = rng.uniform(0, 255, (H // 16, W // 16, 3)).astype(np.uint8)
    blobs = np.asarray(Image.fromarray(blobs).resize((W, H), Image.BICUBIC), float)
    scene = np.clip(0.7 * img + 0.3 * blobs + rng.normal(0, 4, (H, W, 3)), 0, 255)
    x, y = int(rng.integers(0, W - size)), int(rng.integers(0, H - size))
    scene[y:y + size, x:x + size] = np.asarray(Image.fromarray(face).resize((size, size), Image.BICUBIC))
    return scene.astype(np.uint8), Box(x, y, x + size, y + size)


def calibrate_framing(crops: Tensor, detector: str, sizes=SIZES, seed: int = 7000) -> dict:
    """crops [N, 3, R, R] aligned faces (train split) → median crop-side / box-side and centre offset / box side."""
    scale, dx, dy = [], [], []
    for s in sizes:
        for i, x in enumerate(crops):
            scene, truth = synthetic_scene(to_uint8_rgb(x), s, np.random.default_rng(seed * s + i))
            boxes = [b for b in detect_faces(scene, detector) if iou(b, truth) > 0.2]
            if boxes:
                (cx, cy), (tx, ty), side = boxes[0].centre, truth.centre, boxes[0].side
                scale.append(truth.side / side)
                dx.append((tx - cx) / side)
                dy.append((ty - cy) / side)
    return {"detector": detector, "n": len(crops) * len(sizes), "found": len(scale),
            "scale": float(np.median(scale)), "scale_iqr": np.percentile(scale, [25, 75]).tolist(),
            "dx": float(np.median(dx)), "dy": float(np.median(dy))}


def measure_detector(crops: Tensor, detector: str, sizes=SIZES, seed: int = 1000) -> dict:
    """Per size: faces found (framed window IoU ≥ 0.5 with the pasted square), false positives, seconds per photo."""
    import time
    framing, rows = UTKFACE_FRAMING[detector], {}
    for s in sizes:
        found = false_pos = 0
        t0 = time.perf_counter()
        for i, x in enumerate(crops):
            scene, truth = synthetic_scene(to_uint8_rgb(x), s, np.random.default_rng(seed * s + i))
            hits = 0
            for b in detect_faces(scene, detector):
                left, top, m, _ = crop_window(b, framing, scene.shape[:2])
                ok = iou(Box(left, top, left + m, top + m), truth) >= 0.5 and hits == 0
                hits += ok
                false_pos += not ok
            found += hits
        rows[s] = {"found": found, "n": len(crops), "false_positives": false_pos,
                   "seconds_per_photo": (time.perf_counter() - t0) / len(crops)}
    return rows


# ----------------------------------------------------------------------------
# Fill unobserved pixels before detection (scratches break both detectors): grow the known region by 3×3 means,
# then a few Jacobi sweeps of the discrete Laplace equation inside the holes (harmonic fill).


def fill_holes(photo: Tensor, mask: Tensor, smooth: int = 20, max_grow: int = 256) -> Tensor:
    """photo [C, H, W], mask [H, W] in {0, 1} (1 = observed) → photo with the holes filled; observed pixels kept."""
    import torch.nn.functional as nnf
    obs = mask.bool()
    x, known = photo * mask, mask.clone().float()
    k = torch.ones(1, 1, 3, 3, dtype=photo.dtype)
    for i in range(max_grow + smooth):
        num = nnf.conv2d((x * known)[:, None], k, padding=1)[:, 0]
        den = nnf.conv2d(known[None, None], k, padding=1)[0, 0]
        x = torch.where(obs, photo, torch.where(den > 0, num / den.clamp_min(1e-12), x))
        if i >= max_grow or bool((den > 0).all()):
            known = torch.ones_like(known)
            smooth -= 1
            if smooth < 0:
                break
        else:
            known = (den > 0).float()
    return x
