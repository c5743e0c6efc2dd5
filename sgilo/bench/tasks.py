"""Task presets for SGILO (Daras et al., ICML 2022) and baselines: name → forward operator with resolved parameters.

`make_operator(task, image_shape, seed, ...)` builds the operator of a named inverse problem; `task_params(...)`
returns the same resolved parameters as a JSON-able dict (for result files); `task_options` adds the shared click
options used by `sgilo solve` and `sgilo bench`. Options that do not apply to a task are ignored (and left out of
`task_params`), so one command line can drive several tasks.

| task            | parameters (default)                                 | measurement y          |
|-----------------|------------------------------------------------------|------------------------|
| inpaint-box     | box x0,y0,x1,y1 = hole (centred half-size box)       | [B, C, H, W], 0 in hole |
| inpaint-random  | observed p (0.05), seed                              | [B, C, H, W]            |
| inpaint-mask    | mask PATH (required; white = observed)               | [B, C, H, W]            |
| superres        | factor (4)                                           | [B, C, H/f, W/f]        |
| denoise         | sigma (0.1 when not given)                           | [B, C, H, W]            |
| cs-gaussian     | ratio m/n (0.05), seed                               | [B, m]                  |
| cs-circulant    | ratio m/n (0.05), seed                               | [B, m]                  |
| colorize        | –                                                    | [B, 1, H, W]            |
| deblur          | kernel_sigma (1.0)                                   | [B, C, H, W]            |

Every task takes `sigma` (Gaussian measurement noise std, default 0; denoise defaults to 0.1 since it is pointless
without noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import click

from sgilo.operators.base import GaussianNoise, LinearOperator, as_image_shape
from sgilo.operators.blur import Deblur
from sgilo.operators.cs import CompressedSensingCirculant, CompressedSensingGaussian
from sgilo.operators.inpainting import Inpainting, default_box
from sgilo.operators.pointwise import Colorization, Denoising
from sgilo.operators.resampling import SuperResolution

DEFAULTS = {"observed": 0.05, "factor": 4, "ratio": 0.05, "kernel_sigma": 1.0, "denoise_sigma": 0.1}


# ----------------------------------------------------------------------------
# Builders: (image_shape, seed, resolved params) → operator without noise.


def _inpaint_box(shape, seed, p):
    return Inpainting.box(shape[1:], p["box"])


def _inpaint_random(shape, seed, p):
    return Inpainting.random(shape[1:], p["observed"], seed)


def _inpaint_mask(shape, seed, p):
    return Inpainting.from_image(p["mask"], shape[1:])


def _superres(shape, seed, p):
    return SuperResolution(p["factor"], shape)


def _denoise(shape, seed, p):
    return Denoising()


def _cs_gaussian(shape, seed, p):
    return CompressedSensingGaussian(p["m"], shape, seed)


def _cs_circulant(shape, seed, p):
    return CompressedSensingCirculant(p["m"], shape, seed)


def _colorize(shape, seed, p):
    if shape[0] != 3:
        raise ValueError(f"colorize: expected a 3-channel image shape, got {shape}")
    return Colorization()


def _deblur(shape, seed, p):
    return Deblur(p["kernel_sigma"], shape)


TASKS: dict[str, Callable[[tuple[int, int, int], int, dict], LinearOperator]] = {
    "inpaint-box": _inpaint_box,
    "inpaint-random": _inpaint_random,
    "inpaint-mask": _inpaint_mask,
    "superres": _superres,
    "denoise": _denoise,
    "cs-gaussian": _cs_gaussian,
    "cs-circulant": _cs_circulant,
    "colorize": _colorize,
    "deblur": _deblur,
}


# ----------------------------------------------------------------------------
# Resolve defaults and validate the parameters that apply to `task`.


def task_params(task: str, image_shape: tuple[int, int, int], seed: int, *, observed: float | None = None,
                box: tuple[int, int, int, int] | None = None, mask: str | None = None, factor: int | None = None,
                ratio: float | None = None, kernel_sigma: float | None = None, sigma: float | None = 0.0) -> dict:
    """The resolved, JSON-able parameters of a task (only those that apply to it), e.g.
    ``{"task": "cs-gaussian", "image_shape": [3, 64, 64], "seed": 0, "ratio": 0.05, "m": 614, "sigma": 0.0}``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}, expected one of: {', '.join(TASKS)}")
    shape = as_image_shape(image_shape)
    n = math.prod(shape)
    if sigma is None:
        sigma = DEFAULTS["denoise_sigma"] if task == "denoise" else 0.0
    if not (sigma >= 0 and sigma < float("inf")):
        raise ValueError(f"--sigma: expected a finite number >= 0, got {sigma!r}")
    out: dict = {"task": task, "image_shape": list(shape), "seed": int(seed)}
    if task == "inpaint-box":
        out["box"] = list(default_box(*shape[1:]) if box is None else (int(v) for v in box))
        if len(out["box"]) != 4:
            raise ValueError(f"--box: expected x0,y0,x1,y1, got {box!r}")
    elif task == "inpaint-random":
        out["observed"] = DEFAULTS["observed"] if observed is None else float(observed)
        if not (0 < out["observed"] <= 1):
            raise ValueError(f"--observed: expected a fraction 0 < p <= 1, got {out['observed']!r}")
        out["n_observed"] = max(1, round(out["observed"] * shape[1] * shape[2]))
    elif task == "inpaint-mask":
        if mask is None:
            raise ValueError("inpaint-mask: expected --mask PATH (a mask image, white = observed), got none")
        out["mask"] = str(mask)
    elif task == "superres":
        out["factor"] = DEFAULTS["factor"] if factor is None else factor
        if not isinstance(out["factor"], int) or out["factor"] < 1:
            raise ValueError(f"--factor: expected an integer >= 1, got {out['factor']!r}")
        if shape[1] % out["factor"] or shape[2] % out["factor"]:
            raise ValueError(f"--factor {out['factor']} does not divide the image size {shape[1]}x{shape[2]}")
    elif task in ("cs-gaussian", "cs-circulant"):
        out["ratio"] = DEFAULTS["ratio"] if ratio is None else float(ratio)
        out["m"] = round(out["ratio"] * n)
        if not (1 <= out["m"] <= n):
            raise ValueError(f"--ratio {out['ratio']!r} gives m = {out['m']} measurements; expected 1 <= m <= n = {n}")
    elif task == "deblur":
        out["kernel_sigma"] = DEFAULTS["kernel_sigma"] if kernel_sigma is None else float(kernel_sigma)
        if not (out["kernel_sigma"] > 0 and out["kernel_sigma"] < float("inf")):
            raise ValueError(f"--kernel-sigma: expected a finite number > 0, got {out['kernel_sigma']!r}")
    out["sigma"] = float(sigma)
    return out


# ----------------------------------------------------------------------------
# Build the operator of a named task with Gaussian noise σ.


def make_operator(task: str, image_shape: tuple[int, int, int], seed: int, *, observed: float | None = None,
                  box: tuple[int, int, int, int] | None = None, mask: str | None = None, factor: int | None = None,
                  ratio: float | None = None, kernel_sigma: float | None = None,
                  sigma: float | None = 0.0) -> LinearOperator:
    """`TASKS[task]` with the parameters of `task_params` (same arguments). `sigma=None` means the task's default."""
    p = task_params(task, image_shape, seed, observed=observed, box=box, mask=mask, factor=factor, ratio=ratio,
                    kernel_sigma=kernel_sigma, sigma=sigma)
    op = TASKS[task](as_image_shape(image_shape), int(seed), p)
    if p["sigma"] > 0:
        op.noise = GaussianNoise(p["sigma"])
    return op


# ----------------------------------------------------------------------------
# click: parse "x0,y0,x1,y1".


class BoxParam(click.ParamType):
    name = "x0,y0,x1,y1"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            box = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            box = ()
        if len(box) != 4:
            self.fail(f"expected four integers x0,y0,x1,y1, got {value!r}", param, ctx)
        return box


# ----------------------------------------------------------------------------
# The shared task options of `sgilo solve` and `sgilo bench`.


def task_options(fn: Callable) -> Callable:
    """Add --task, --observed, --box, --mask, --factor, --ratio, --kernel-sigma, --sigma (keyword names as in
    `make_operator`; unset options are None and take the task's default)."""
    options = [
        click.option("--task", type=click.Choice(list(TASKS)), default="inpaint-box", show_default=True,
                     help="Inverse problem preset."),
        click.option("--observed", type=float, default=None,
                     help=f"inpaint-random: fraction of observed pixels 0 < p <= 1 [default: {DEFAULTS['observed']}]."),
        click.option("--box", type=BoxParam(), default=None,
                     help="inpaint-box: the hole, columns x0:x1, rows y0:y1 [default: centred half-size box]."),
        click.option("--mask", type=click.Path(dir_okay=False), default=None,
                     help="inpaint-mask: mask image of the model's size, white = observed."),
        click.option("--factor", type=int, default=None,
                     help=f"superres: downsampling factor dividing the size [default: {DEFAULTS['factor']}]."),
        click.option("--ratio", type=float, default=None,
                     help=f"cs-gaussian/cs-circulant: m/n, m = round(ratio·C·H·W) [default: {DEFAULTS['ratio']}]."),
        click.option("--kernel-sigma", type=float, default=None,
                     help=f"deblur: Gaussian kernel std in pixels [default: {DEFAULTS['kernel_sigma']}]."),
        click.option("--sigma", type=float, default=None,
                     help=f"Gaussian measurement noise std in [-1, 1] units, any task [default: 0; denoise: "
                          f"{DEFAULTS['denoise_sigma']}]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
