"""`sgilo calibrate`: simulation-based calibration of SGILO, or (--conformal) fitting its interval scales on train/.

Registered on the `sgilo` group at the end of `sgilo.cli`; the bodies live in `sgilo.app.calibrate`.
"""

from __future__ import annotations

import click

try:  # task presets and their shared options (sgilo.bench.tasks)
    from sgilo.bench.tasks import task_options
except ImportError:  # pragma: no cover
    def task_options(f):
        return f


@click.command("calibrate")
@task_options
@click.option("--n", "n", default=20, show_default=True, type=click.IntRange(min=2), help="SBC replicates N.")
@click.option("--draws", default=8, show_default=True, type=click.IntRange(min=1),
              help="SBC: posterior draws L per replicate (SGILO chains); ranks are 0..L.")
@click.option("--pixels", default=64, show_default=True, type=click.IntRange(min=1), help="SBC: random pixels P.")
@click.option("--steps", default=None, help="SBC: SGILO steps per round, e.g. 100,50 [default: the preset's].")
@click.option("--preset", default=None,
              help="SBC: solver preset of sgilo.app.presets [utkface64]; --conformal: bench preset [default].")
@click.option("--conformal", is_flag=True, help="Fit the 50 %/90 % interval scales per task (needs --data).")
@click.option("--data", default=None, type=click.Path(), help="--conformal: dataset zip/folder.")
@click.option("--split", default="train", show_default=True, help="--conformal: calibration split (never test).")
@click.option("--tasks", default="main", show_default=True, help="--conformal: task presets or groups.")
@click.option("--n-images", default=20, show_default=True, type=click.IntRange(min=1), help="--conformal: faces.")
@click.option("--model", default="default", show_default=True, help="Generator name or path.")
@click.option("--prior", default="default", show_default=True, help="'default', 'none' or a prior path.")
@click.option("--batch", default=4, show_default=True, type=click.IntRange(min=1), help="Images per solver call.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.option("--overwrite", is_flag=True, help="Replace the files of an existing --out folder.")
@click.option("--out", required=True, type=click.Path(), help="Output folder (refused if it exists).")
def calibrate_cmd(n, draws, pixels, steps, preset, conformal, data, split, tasks, n_images, model, prior, batch, seed,
                  device, overwrite, out, task, **task_kw):
    """SBC: sgilo calibrate --task inpaint-random --observed 0.03 --n 20 --draws 8 --out runs/sbc
    | conformal: sgilo calibrate --conformal --data faces.zip --tasks main --n-images 20 --out runs/cal"""
    import torch

    from sgilo.app.calibrate import run_conformal, run_sbc
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if conformal:
        if data is None:
            raise click.UsageError("--conformal needs --data (a dataset zip/folder with a train/ split)")
        run_conformal(data, out, tasks, split, n_images, preset=preset or "default", model=model, prior=prior,
                      seed=seed, batch=batch, overwrite=overwrite, device=device, echo=click.echo)
        click.echo(f"-> {out}/interval_calibration.json")
        return
    try:
        steps_t = tuple(int(s) for s in steps.split(",")) if steps else None
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 100,50, got {steps!r}",
                                 param_hint="--steps") from None
    kw = {k: v for k, v in task_kw.items() if v is not None}
    res = run_sbc(task, kw, out, n, draws, model=model, prior=prior, preset=preset or "utkface64", steps=steps_t,
                  seed=seed, pixels=pixels, batch=batch, overwrite=overwrite, device=device, echo=click.echo)
    for name, s in res["summaries"].items():
        d = s["direction"]
        click.echo(f"{name:14s} p = {s['test']['p_value']:.3g}  {s['verdict']}  (z_outer {d['z_outer']:+.1f}, "
                   f"z_mean {d['z_mean']:+.1f})" + ("" if s["independent"] else "  [pooled: dependent, p not valid]"))
    click.echo(f"-> {out}/sbc.json, {out}/sbc.png")
