"""`sgilo restore` and `sgilo serve` (issue 18): restore faces in the user's own degraded photos; a local web page.

Thin click wrappers; the bodies are `sgilo.app.restore.restore_photos` and `sgilo.app.serve.launch`. Registered in
`sgilo.cli` (which turns ValueError/OSError into one line ``sgilo: error: …``).
"""

from __future__ import annotations

import click

# The library's `sgilo.app.restore.TASKS` and `sgilo.app.faces.DETECTORS` (repeated so that `import sgilo.cli` stays
# light; tests/test_restore.py checks they agree).
TASKS = ("superres", "inpaint-mask", "colorize", "denoise", "deblur")
DETECTORS = ("hog", "haar")


def _steps(steps: str | None):
    try:
        return tuple(int(s) for s in steps.split(",")) if steps else None
    except ValueError:
        raise ValueError(f"--steps: expected comma-separated integers such as 200,100, got {steps!r}") from None


@click.command("restore")
@click.argument("photos", nargs=-1, required=True, type=click.Path())
@click.option("--task", required=True, type=click.Choice(list(TASKS)), help="What the photo is an observation of.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (one sub-folder per photo).")
@click.option("--mask", type=click.Path(dir_okay=False), default=None,
              help="inpaint-mask: mask image of the photo's size, white = observed.")
@click.option("--factor", type=float, default=None,
              help="superres: output scale [default: model resolution / face window, any ratio].")
@click.option("--sigma", type=float, default=None,
              help="Noise std in [-1, 1] units [default: 0; denoise: estimated from the photo (Haar MAD)].")
@click.option("--kernel-sigma", type=float, default=None, help="deblur: Gaussian blur std in photo pixels.")
@click.option("--aligned", is_flag=True, help="The photo is already an aligned face crop: skip detection.")
@click.option("--detector", type=click.Choice(list(DETECTORS)), default="hog", show_default=True,
              help="hog: dlib's HOG detector; haar: OpenCV's Haar cascade.")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Restore at most N faces per photo.")
@click.option("--samples", type=click.IntRange(min=1), default=None, help="K posterior samples [default: preset's].")
@click.option("--steps", default=None, help="SGILO steps per round, e.g. 200,100 [default: preset's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--model", default="default", show_default=True, help="'default' or a generator path.")
@click.option("--prior", default="default", show_default=True, help="'default', 'none' or a prior file/folder.")
@click.option("--preset", default="auto", show_default=True, help="Solver preset: utkface64, paper or auto.")
@click.option("--device", default=None, help="cpu or cuda [default: cpu].")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run in --out.")
def restore_cmd(photos, task, out, mask, factor, sigma, kernel_sigma, aligned, detector, max_faces, samples, steps,
                seed, model, prior, preset, device, overwrite):
    """Restore the faces of degraded photos (the photo IS the observation). Examples:
    sgilo restore small.png --task superres --out r/   |   sgilo restore old.png --task inpaint-mask --mask m.png
    --out r/   |   sgilo restore crop16.png --task superres --aligned --out r/"""
    from sgilo.app.restore import RestoreTask, restore_photos
    spec = RestoreTask(task, factor=factor, mask=mask, sigma=sigma, kernel_sigma=kernel_sigma)
    reports = restore_photos(photos, out, spec, model=model, prior=prior, preset=preset, steps=_steps(steps),
                             samples=samples, seed=seed, aligned=aligned, detector=detector, max_faces=max_faces,
                             overwrite=overwrite, device=device, echo=click.echo)
    click.echo(f"{len(reports)} photo(s) restored -> {out}/<photo>/restored.png, sheet.png, result.json")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--steps", default=None, help="SGILO steps per round [default: preset's].")
@click.option("--samples", type=click.IntRange(min=2), default=4, show_default=True, help="Posterior samples K.")
@click.option("--model", default="default", show_default=True)
@click.option("--prior", default="default", show_default=True)
def serve_cmd(host, port, steps, samples, model, prior):
    """A local web page: upload a photo, pick the task, see the restoration, samples and uncertainty. Needs
    `pip install sgilo[app]` (Gradio). Example: sgilo serve --port 7860"""
    from sgilo.app.serve import launch
    launch(host=host, port=port, steps=_steps(steps), samples=samples, model=model, prior=prior)
