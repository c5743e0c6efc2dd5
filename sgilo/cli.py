"""The `sgilo` command: one sub-command per verb, each a thin wrapper that builds configs and calls the library.

Commands are registered in this file only; each command's body lives in the library (no logic here beyond parsing).
"""

from __future__ import annotations

import logging
import sys

import click


# ----------------------------------------------------------------------------
# User errors → one line and exit status 2; bugs keep their traceback. Library log lines → one plain line each.


class SgiloGroup(click.Group):
    """The `sgilo` group. The rule for errors (see `sgilo.errors`):

    * user errors print ONE line ``sgilo: error: <message>`` and exit with status 2: a `ValueError` (bad input —
      a wrong value, a corrupt or foreign file; `sgilo.errors.UserError` is one) or an `OSError` (file system: a
      missing, unreadable or unwritable file or folder). Click's own usage errors keep click's format.
    * anything else (TypeError, KeyError, AttributeError, RuntimeError, …) is a bug in our code and propagates with
      its traceback. Library code therefore reports bad input as ValueError/UserError, never as TypeError/KeyError.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ValueError, OSError) as e:
            click.echo(f"sgilo: error: {_message(e)}", err=True)
            sys.exit(2)


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.strerror}: {e.filename}"
    return str(e)


class _EchoHandler(logging.Handler):
    """Log records of the ``sgilo`` loggers (INFO and above) as one plain line on stderr (click.echo, so test
    runners that swap the streams see them). Installed by the single-process commands (`log_to_console`); the
    training commands configure logging per rank themselves."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def log_to_console() -> None:
    logger = logging.getLogger("sgilo")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        handler = _EchoHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@click.group(cls=SgiloGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sgilo")
def main() -> None:
    """sgilo — posterior sampling for imaging inverse problems in the intermediate latent space of StyleGAN-2
    with score-based priors (SGILO, Daras et al., ICML 2022), plus the CSGM and ILO baselines."""


# ----------------------------------------------------------------------------
# Commands (each ≤ 30 lines; bodies live in the library).
# [commands are inserted below this line]
# Theory experiments with random ReLU generators (issue 7): field, escape, mixing, concentration.
@main.command("theory")
@click.argument("name", type=click.Choice(["field", "escape", "mixing", "concentration", "all"]))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for NAME.json and NAME.png.")
@click.option("--quick", is_flag=True, help="Small sizes (seconds), for smoke tests.")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed of every experiment.")
def theory_cmd(name: str, out: str, quick: bool, seed: int) -> None:
    """Random-ReLU-generator Langevin experiments; e.g. `sgilo theory all --out runs/theory`."""
    from sgilo.theory.experiments import run_theory

    for n, res in run_theory(name, out, quick=quick, seed=seed).items():
        click.echo(f"{n}: {out}/{n}.json, {out}/{n}.png ({res['wall_seconds']} s)")


@main.command("bench")
@click.option("--data", required=True, type=click.Path(), help="Dataset zip/folder with train/ and test/ splits.")
@click.option("--split", default="test", show_default=True, help="Evaluation split (tuning only ever uses train/).")
@click.option("--tasks", default="main", show_default=True,
              help="Task presets or groups (main, sparse, csgm-protocol, quick, all).")
@click.option("--solvers", default="csgm,ilo,sgilo", show_default=True,
              help="Comma list of bench solvers: csgm, ilo, sgilo, their ablation variants (docs/benchmark.md), "
                   "lasso-dct, lasso-wavelet; an unknown name lists them.")
@click.option("--n-images", default=None, type=int, help="Images of the split [default: the preset's].")
@click.option("--seeds", default=1, show_default=True, help="Seeds 0..S-1 per cell.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (resumable).")
@click.option("--quick", is_flag=True,
              help="Preset 'quick': 8 images, the 'quick' tasks unless --tasks is given, fewer steps.")
@click.option("--preset", default=None,
              help="Solver preset: default, tuned (full tuned budgets), paper, quick or smoke (overrides --quick).")
@click.option("--model", default="default", show_default=True, help="Generator name or path.")
@click.option("--prior", "priors", multiple=True, default=("default",), show_default=True,
              help="'default', 'none' or a prior path (repeatable).")
@click.option("--batch", default=None, type=int, help="Images per solver call [default: the preset's].")
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.option("--no-figures", is_flag=True, help="Skip figures/ (summary.json and summary.md are always written).")
@click.option("--budget", default=None, type=click.IntRange(min=1),
              help="Generator evaluations per image for every generative solver (equal-budget steps).")
@click.option("--chains", default=3, show_default=True, type=click.IntRange(min=1),
              help="K under --budget: CSGM/ILO restarts, SGILO chains.")
def bench_cmd(data, split, tasks, solvers, n_images, seeds, out, quick, preset, model, priors, batch, device,
              no_figures, budget, chains):
    """Benchmark grid over (image, task, solver, seed). Example:
    torchrun --nproc-per-node 2 -m sgilo bench --data ../shared/data/utkface64.zip --quick --out runs/bench"""
    import torch

    from sgilo.bench.presets import expand_tasks
    from sgilo.bench.run import BenchConfig, run_bench
    ctx = click.get_current_context()
    tasks = "quick" if quick and ctx.get_parameter_source("tasks").name == "DEFAULT" else tasks
    cfg = BenchConfig(data=data, out=out, split=split, tasks=expand_tasks(tasks), solvers=tuple(solvers.split(",")),
                      n_images=n_images, seeds=seeds, preset=preset or ("quick" if quick else "default"), model=model,
                      priors=tuple(priors), batch=batch, figures=not no_figures, budget=budget, chains=chains)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    records = run_bench(cfg, device)
    if records is not None:
        click.echo(f"{len(records)} cells -> {out}/results.jsonl, summary.json, summary.md, figures/")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@main.command("bench-speed")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (speed.json, speed.md).")
@click.option("--quick", is_flag=True, help="B in {1, 8}, K in {1, 4}, 2 timed steps: about 1-2 minutes on a CPU.")
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.option("--steps", default=None, type=int, help="Timed steps per setting [default: 5, quick 2].")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch intra-op threads for the run [default: torch's]; 1 on a shared or busy CPU.")
def bench_speed_cmd(out, quick, device, steps, threads):
    """Seconds per SGILO step (generator / score / other), FLOP/s against a conv peak measured in the same run,
    fp32 vs bf16, naive/ours. Example: sgilo bench-speed --quick --out runs/speed"""
    import dataclasses

    import torch

    from sgilo.bench.speed import QUICK, SpeedConfig, run_speed
    cfg = QUICK if quick else SpeedConfig()
    cfg = dataclasses.replace(cfg, steps=steps) if steps else cfg
    cfg = dataclasses.replace(cfg, threads=threads) if threads else cfg
    rep = run_speed(cfg, out, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    click.echo(f"{rep['generator']}\n" + "\n".join(f"{k}: {v:.3f}" for k, v in rep["headline"].items()))


@main.command("bench-tune")
@click.option("--data", required=True, type=click.Path(), help="Dataset zip/folder; only its train/ split is read.")
@click.option("--task", required=True, help="Operator name (inpaint-random, superres, cs-gaussian, ...).")
@click.option("--param", "params", multiple=True, help="Task parameter NAME=VALUE (repeatable), e.g. observed=0.05.")
@click.option("--solver", required=True,
              help="A generative solver of sgilo bench: csgm, ilo, sgilo or an ablation variant (docs/benchmark.md); "
                   "an unknown name lists them.")
@click.option("--grid", default="{}", show_default=True,
              help='JSON {field: [values]} of solver-config overrides, e.g. \'{"eta": [1e-5, 3e-5]}\'.')
@click.option("--n-images", default=4, show_default=True, type=click.IntRange(min=1), help="train/ images.")
@click.option("--preset", default="default", show_default=True, help="Solver preset the grid overrides.")
@click.option("--model", default="default", show_default=True, help="Generator name or path.")
@click.option("--prior", "priors", multiple=True, default=("default",), show_default=True,
              help="'default', 'none' or a prior path (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for tune.jsonl (resumable).")
@click.option("--budget", default=None, type=click.IntRange(min=1), help="Equal-budget steps (as sgilo bench).")
@click.option("--chains", default=3, show_default=True, type=click.IntRange(min=1), help="K under --budget.")
def bench_tune_cmd(data, task, params, solver, grid, n_images, preset, model, priors, seed, out, budget, chains):
    """Grid-tune a solver on train/ images (never test/). Example: sgilo bench-tune --data faces.zip
    --task inpaint-random --param observed=0.05 --solver sgilo --grid '{"eta": [1e-5, 3e-5]}' --out runs/tune"""
    import json

    from sgilo.bench.tune import tune
    kw = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--param")
        kw[name.replace("-", "_")] = json.loads(value)
    try:
        grid_d = json.loads(grid)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"expected a JSON object, got {grid!r} ({e})", param_hint="--grid") from e
    if not isinstance(grid_d, dict):
        raise click.BadParameter(f"expected a JSON object, got {grid!r}", param_hint="--grid")
    tune(data, task, kw, solver, grid_d, out, n_images=n_images, preset=preset, model=model, priors=tuple(priors),
         seed=seed, budget=budget, chains=chains)
    click.echo(f"-> {out}/tune.jsonl, {out}/tune_table.md")


# ----------------------------------------------------------------------------
# sgilo solve / sgilo demo (issue 6; bodies in sgilo.app.solve and sgilo.app.demo).

try:  # task presets and their shared options (sgilo.bench.tasks)
    from sgilo.bench.tasks import task_options as _solve_task_options
except ImportError:  # pragma: no cover - before the operators issue lands
    def _solve_task_options(f):
        return f


@main.command("solve")
@click.option("--image", required=True, help="Ground-truth image (PNG/JPEG); it is measured with the task operator.")
@_solve_task_options
@click.option("--solver", type=click.Choice(["csgm", "ilo", "sgilo"]), default="sgilo", show_default=True)
@click.option("--samples", type=int, default=None, help="K chains (sgilo) / restarts (csgm).",
              show_default="4 chains for sgilo, 2 restarts for csgm, from the preset")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--model", default="default", show_default=True, help="'default' or a generator path.")
@click.option("--prior", default="default", show_default=True,
              help="'default' (the bundled priors), 'none', a bundled name (z, h1, ...), a prior file or a folder.")
@click.option("--steps", default=None, help="Steps per round, e.g. 100,100,100.")
@click.option("--eta", type=float, default=None, help="SGILO Langevin step size.")
@click.option("--mode", type=click.Choice(["langevin", "reference"]), default=None)
@click.option("--preset", default="auto", show_default=True,
              help="Solver settings: utkface64 (tuned for the bundled model), paper, or auto (utkface64 for the "
                   "bundled model, else paper).")
@click.option("--lpips-weights", default=None, help="Local LPIPS-VGG weights (.safetensors): lpips metric.")
@click.option("--lpips-weight", type=float, default=None, help="Weight of LPIPS in the data term (needs the file).")
@click.option("--geocross", type=float, default=None, help="GeoCross weight [default: the solver's].")
@click.option("--init", default=None, help="Continue from a run folder / its latents.safetensors.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
              help="Generator tail precision [default: the preset's; auto = bf16 only where native].")
@click.option("--step-control", type=click.Choice(["none", "curvature"]), default=None,
              help="SGILO step control [default: the preset's; curvature in utkface64].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (checked before solving).")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run in --out (else refused).")
def solve_cmd(image, solver, samples, seed, model, prior, steps, eta, mode, preset, lpips_weights, lpips_weight,
              geocross, init, precision, step_control, device, out, overwrite, task, **task_kw):
    """Reconstruct an image: sgilo solve --image face.png --task inpaint-random --observed 0.05 --out runs/x"""
    from sgilo.app.presets import resolve_preset
    from sgilo.app.solve import make_config, solve_image
    from sgilo.bench.tasks import make_operator, task_params
    log_to_console()
    try:
        steps_t = tuple(int(s) for s in steps.split(",")) if steps else None
    except ValueError:
        raise ValueError(f"--steps: expected comma-separated integers such as 100,100,100, got {steps!r}") from None
    config = make_config(solver, samples, steps_t, seed, eta, mode, lpips_weight=lpips_weight, geocross=geocross,
                         preset=resolve_preset(preset, model), precision=precision, step_control=step_control)
    info: dict = {}

    def make_op(shape):
        info.update(task_params(task, shape, seed, **task_kw))
        return make_operator(task, shape, seed, **task_kw)
    report = solve_image(image, make_op, solver, config, out, model, prior, info, seed, lpips_weights, init,
                         device=device, overwrite=overwrite)
    m = report["metrics"]["mean"]
    click.echo(f"{solver}: PSNR {m.get('psnr', float('nan')):.2f} dB, SSIM {m.get('ssim', float('nan')):.3f} of the "
               f"{'posterior mean' if 'psnr_sample' in m else 'estimate'}, residual {m['residual']:.4f}; "
               f"wrote {out}/result.json")


@main.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier demo in --out (else refused).")
def demo_cmd(out, seed, overwrite):
    """Inpainting + super-resolution with CSGM, ILO and SGILO on bundled images: sgilo demo --out demo_out"""
    from sgilo.app.demo import demo_notice, run_demo
    log_to_console()
    notice = demo_notice()
    if notice:
        click.echo(notice)
    run_demo(out, seed, progress=True, echo=click.echo, overwrite=overwrite)


@main.command("make-latents")
@click.option("--model", default="default", show_default=True, help="Generator: 'default' (bundled) or a model PATH.")
@click.option("--kind", type=click.Choice(["synthetic", "inverted"]), default="synthetic", show_default=True,
              help="synthetic: z ~ N(0, I) through the head (reference syn_ nets); inverted: ILO of --images.")
@click.option("--layer", default=1, show_default=True, type=click.IntRange(min=0), help="Split layer k (0: z only).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Data set folder (shards + manifest).")
@click.option("--n", default=20000, show_default=True, type=click.IntRange(min=1), help="Number of latents.")
@click.option("--shard-size", default=1024, show_default=True, type=click.IntRange(min=1))
@click.option("--images", default=None, type=click.Path(exists=True), help="Image folder/zip (train split), inverted.")
@click.option("--ilo-steps", default="50,50,25,25", show_default=True, help="ILO Adam steps per round (inverted).")
@click.option("--ilo-preset", type=click.Choice(["paper", "utkface64"]), default="paper", show_default=True,
              help="ILO settings of the inversions (inverted): 'paper' (no l1 balls, GeoCross 0.01) or 'utkface64' "
                   "(l1 radius 30 on h_k, GeoCross 0, bf16 where native; docs/tuning.md).")
@click.option("--skip", default=0, show_default=True, type=click.IntRange(min=0),
              help="Images of the train split skipped before the first one inverted (e.g. to keep tuning faces out).")
@click.option("--seed", default=0, show_default=True)
def make_latents_cmd(model, kind, layer, out, n, shard_size, images, ilo_steps, ilo_preset, skip, seed):
    """Write a latent data set for score-prior training; re-running resumes (finished shards are kept).
    Example: sgilo make-latents --kind synthetic --layer 2 --out ~/latents/h2 --n 20000"""
    from sgilo.app.presets import PRESETS
    from sgilo.generator import load_generator
    from sgilo.training.latents import make_latents
    G, fit = load_generator(model)
    imgs = None
    if images is not None:
        from sgilo.utils.datasets import load_image_set, to_float
        imgs = to_float(load_image_set(images, G.img_resolution, "train", limit=skip + n))
        if skip >= imgs.shape[0]:
            raise click.BadParameter(f"expected fewer than the {imgs.shape[0]} train images of {images}, got {skip}",
                                     param_hint="--skip")
        imgs = imgs[skip:]
    steps = tuple(int(s) for s in ilo_steps.split(","))
    ilo = None if ilo_preset == "paper" else PRESETS[ilo_preset]["ilo"]
    path = make_latents(G, fit, out, kind, layer, n, shard_size, seed, str(model), imgs, steps, ilo=ilo,
                        ilo_name=ilo_preset, first_image=skip)
    click.echo(f"latents ({kind}, layer {layer}) -> {path}/manifest.json")


@main.command("train-score")
@click.option("--latents", required=True, help="Latent data set folder; several (e.g. synthetic,inverted): comma-separated.")
@click.option("--target", type=click.Choice(["z", "h"]), default="z", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder; the prior is OUT/prior.*")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--steps", default=20000, show_default=True, type=click.IntRange(min=0),
              help="Optimisation steps; 0 exports the skip alone (with --structured-rank: the PCA Gaussian prior).")
@click.option("--batch", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=3e-4, show_default=True, type=float)
@click.option("--ema-decay", default=0.999, show_default=True, type=float)
@click.option("--d-model", default=128, show_default=True)
@click.option("--depth", default=4, show_default=True)
@click.option("--heads", default=4, show_default=True)
@click.option("--patch", default=1, show_default=True, help="h only: p×p patch tokens (e.g. 2 for 8×8 maps).")
@click.option("--scaler", type=click.Choice(["standard", "minmax"]), default="standard", show_default=True)
@click.option("--likelihood-weighting", is_flag=True, help="λ(t) = β(t) instead of the ε-loss.")
@click.option("--t-sampling", type=click.Choice(["mixed", "uniform"]), default="mixed", show_default=True,
              help="t ~ U(eps, 1) ('uniform') or half log-uniform ('mixed': more small-t samples).")
@click.option("--no-gaussian-skip", is_flag=True, help="Plain ε-network (no σ(t)·u skip; the reference's form).")
@click.option("--structured-rank", default=0, show_default=True, type=click.IntRange(min=0),
              help="Skip = a rank-r PCA Gaussian of the latents (exact ε of it), the network learns the rest; 0 = "
                   "the per-feature skip σ(t)·u.")
@click.option("--ckpt-every", default=1000, show_default=True)
@click.option("--ckpt-minutes", default=10.0, show_default=True)
@click.option("--fp32-export", is_flag=True, help="Export fp32 weights (default fp16).")
@click.option("--seed", default=0, show_default=True)
def train_score_cmd(latents, target, out, resume, steps, batch, lr, ema_decay, d_model, depth, heads, patch, scaler,
                    likelihood_weighting, t_sampling, no_gaussian_skip, structured_rank, ckpt_every, ckpt_minutes,
                    fp32_export, seed):
    """Train a latent score prior by denoising score matching (VP-SDE); works under torchrun. Example:
    sgilo train-score --latents ~/latents/h2 --target h --out ~/runs/prior_h2 --steps 20000 --resume"""
    from sgilo.training.ddp import cleanup
    from sgilo.training.score import ScoreTrainConfig, train
    cfg = ScoreTrainConfig(latents=latents, out=out, target=target, steps=steps, batch=batch, lr=lr,
                           ema_decay=ema_decay, d_model=d_model, depth=depth, heads=heads, patch=patch, scaler=scaler,
                           likelihood_weighting=likelihood_weighting, t_sampling=t_sampling,
                           gaussian_skip=not no_gaussian_skip, structured_rank=structured_rank, ckpt_every=ckpt_every,
                           ckpt_minutes=ckpt_minutes, export_fp16=not fp32_export, seed=seed)
    stem = train(cfg, resume=resume)
    cleanup()
    click.echo(f"prior -> {stem}.safetensors, {stem}.json")


@main.command("sample")
@click.option("--model", default="default", show_default=True, help="Generator: 'default' (bundled) or a model PATH.")
@click.option("--prior", default=None,
              help="Latent prior: 'default' (the bundled prior of --layer), a bundled name (z, h1, h2, ...) or a "
                   "prior PATH; not given = the generator alone.")
@click.option("--layer", default=0, show_default=True, type=click.IntRange(min=0),
              help="Split layer of --prior default: 0 = z, k = h_k.")
@click.option("--n", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--truncation", default=1.0, show_default=True, help="Truncation ψ (generator-only sampling).")
@click.option("--naturalize", is_flag=True, help="Hot-start an off-manifold latent and show before/after pairs.")
@click.option("--start", type=click.Choice(["ones", "noisy"]), default="ones", show_default=True,
              help="--naturalize start: the all-ones z (reference) or a random latent + NOISE x per-feature std.")
@click.option("--noise", default=3.0, show_default=True, type=click.FloatRange(min=0), help="Noise for --start noisy.")
@click.option("--steps", default=500, show_default=True, help="PC steps (prior sampling) or hot-start steps.")
@click.option("--snr", default=0.05, show_default=True, help="Langevin corrector signal-to-noise ratio.")
@click.option("--t-start", default=0.5, show_default=True, help="Hot-start time t (perturbed to t first).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default="grid.png", show_default=True, type=click.Path(dir_okay=False), help="Grid PNG.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file (else refused).")
def sample_cmd(model, prior, layer, n, truncation, naturalize, start, noise, steps, snr, t_start, seed, out, overwrite):
    """Draw an image grid from the generator, or from a latent prior decoded through the generator tail. Example:
    sgilo sample --prior h2 --n 16 --out h2.png   |   sgilo sample --prior z --naturalize --n 8"""
    import torch

    from sgilo.app.models import load_one_prior
    from sgilo.app.outputs import check_out_file
    from sgilo.generator import load_generator
    from sgilo.priors.decode import naturalize_pairs, sample_images
    from sgilo.utils.images import save_image_grid
    log_to_console()
    latent_prior = None if prior is None else load_one_prior(prior, layer)      # a bad --prior: one line listing
    check_out_file(out, overwrite)                                              # before the generator is loaded
    G, fit = load_generator(model)
    gen = torch.Generator().manual_seed(seed)
    if prior is None:
        imgs = G(torch.randn([n, G.z_dim], generator=gen), truncation_psi=truncation)
    elif naturalize:
        before, after = naturalize_pairs(G, fit, latent_prior, n, gen, start=start, noise=noise, t=t_start,
                                         n_steps=steps, snr=snr, perturb=True)
        imgs = torch.stack([before, after], 1).flatten(0, 1)                     # [2n, C, H, W] pairs
    else:
        imgs = sample_images(G, fit, latent_prior, n, gen, n_steps=steps, snr=snr)
    save_image_grid(imgs, out, nrow=8 if not naturalize else 2 * min(4, n))
    click.echo(f"{imgs.shape[0]} images -> {out}")


@main.command("convert")
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["auto", "nvlabs", "rosinality"]), default="auto", show_default=True,
              help="Source format: NVlabs stylegan2-ada/stylegan3 .pkl (G_ema) or rosinality stylegan2-pytorch .pt.")
@click.option("--fit/--no-fit", default=True, show_default=True, help="Store the Gaussianised-w+ fit (μ, σ).")
@click.option("--fit-samples", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Mapping samples for the Gaussianised-w+ fit.")
@click.option("--seed", default=0, show_default=True, help="Seed of the fit's latent samples.")
def convert_cmd(src, dst, fmt, fit, fit_samples, seed):
    """Convert a StyleGAN-2 checkpoint to our format (DST.safetensors + DST.json) without running pickled code.
    Example: sgilo convert stylegan2-ffhq-256x256.pkl models/ffhq256"""
    import torch

    from sgilo.generator.convert import convert_checkpoint
    info = convert_checkpoint(src, dst, fmt=fmt, fit_samples=fit_samples if fit else 0,
                              generator=torch.Generator().manual_seed(seed))
    fit_msg = "yes" if info["gaussian_fit"] else "no"
    click.echo(f"converted {info['file']} ({info['format']}, {info['resolution']}px, {info['parameters']:,} "
               f"parameters, Gaussianised-w+ fit: {fit_msg}) -> {info['safetensors']}, {info['json']}")


@main.command("train-generator")
@click.option("--data", required=True, type=click.Path(), help="Image folder or dataset zip (only the train split is used).")
@click.option("--out", required=True, type=click.Path(), help="Run folder (keep it outside the repository).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--resolution", default=64, show_default=True, help="Training resolution in pixels (a power of two).")
@click.option("--kimg", default=600.0, show_default=True, help="Training length in thousands of images.")
@click.option("--batch", default=32, show_default=True, help="Total batch over all processes.")
@click.option("--channel-base", default=2048, show_default=True,
              help="G and D channels per block: min(channel_base / resolution, channel_max).")
@click.option("--channel-max", default=128, show_default=True, help="Largest channel count of any block.")
@click.option("--z-dim", default=256, show_default=True, help="Latent size of z and w (NVlabs FFHQ: 512).")
@click.option("--mapping-layers", default=4, show_default=True, help="Depth of the mapping network (NVlabs FFHQ: 8).")
@click.option("--r1-gamma", default=0.05, show_default=True, help="R1 regularisation weight γ (lazy, every 16 steps).")
@click.option("--augment", default="color,translation,cutout", show_default=True, help="DiffAugment policy ('' = off).")
@click.option("--ckpt-minutes", default=5.0, show_default=True, help="Checkpoint (and sample grid) interval, minutes.")
@click.option("--max-minutes", default=None, type=float, help="Stop (with a checkpoint) after this many minutes.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="Autocast precision: auto = bf16 only where it is native (AMX / AVX-512 BF16 CPUs, CUDA), else fp32 "
                   "(the rule of `sgilo solve`; emulated bf16 is 7-10x slower).")
@click.option("--fp32", is_flag=True, hidden=True, help="Same as --precision fp32 (kept for old scripts).")
@click.option("--seed", default=0, show_default=True, help="Seed of the initial weights and the training stream.")
def train_generator_cmd(data, out, resume, resolution, kimg, batch, channel_base, channel_max, z_dim, mapping_layers,
                        r1_gamma, augment, ckpt_minutes, max_minutes, precision, fp32, seed):
    """Train a StyleGAN-2 generator (DiffAugment, lazy R1, EMA). Example:
    sgilo train-generator --data ../shared/data/utkface64.zip --out ~/runs/utkface64 --resume"""
    import torch

    from sgilo.solvers.rounds import resolve_precision
    from sgilo.training.ddp import configure_logging, init_from_env
    from sgilo.training.generator import TrainConfig, train
    configure_logging(init_from_env()[0])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = resolve_precision("fp32" if fp32 else precision, device) == "bf16"
    cfg = TrainConfig(data=data, out=out, resolution=resolution, kimg=kimg, batch=batch, channel_base=channel_base,
                      channel_max=channel_max, z_dim=z_dim, w_dim=z_dim, mapping_layers=mapping_layers,
                      r1_gamma=r1_gamma, augment=augment, ckpt_minutes=ckpt_minutes, bf16=bf16, seed=seed)
    train(cfg, resume=resume, max_seconds=None if max_minutes is None else max_minutes * 60)


@main.command("export-generator")
@click.option("--checkpoint", required=True, type=click.Path(exists=True), help="Run checkpoint (RUN/checkpoint.pt).")
@click.option("--out", required=True, type=click.Path(), help="Output model NAME (writes NAME.safetensors + NAME.json).")
@click.option("--data", default=None, type=click.Path(), help="Dataset zip/folder with a test split, for the SWD table.")
@click.option("--stats", default=None, type=click.Path(), help="Write training stats and the SWD table to this JSON.")
@click.option("--fit-samples", default=100_000, show_default=True, help="Samples for the Gaussianised-w+ fit.")
def export_generator_cmd(checkpoint, out, data, stats, fit_samples):
    """Export a run's EMA generator (fp16 safetensors + JSON, with its Gaussianised-w+ fit) and measure its SWD."""
    from sgilo.training.export import export_run
    result = export_run(checkpoint, out, data=data, fit_samples=fit_samples, stats_path=stats)
    for name, row in result.get("swd", {}).get("rows", {}).items():
        click.echo(f"SWD x1e3 {name:40s} mean {row['mean']:.2f}  " +
                   "  ".join(f"{r}px {v:.2f}" for r, v in row["levels"].items()))


from sgilo.cli_calibrate import calibrate_cmd  # noqa: E402  (issue 17: sgilo calibrate)
main.add_command(calibrate_cmd)

from sgilo.cli_restore import restore_cmd, serve_cmd  # noqa: E402  (issue 18: restore, serve)
main.add_command(restore_cmd)
main.add_command(serve_cmd)

if __name__ == "__main__":
    main()
