"""The `sgilo` command: one sub-command per verb, each a thin wrapper that builds configs and calls the library.

Commands are registered in this file only; each command's body lives in the library (no logic here beyond parsing).
"""

from __future__ import annotations

import sys

import click


# ----------------------------------------------------------------------------
# Turn library exceptions into one clear line and a non-zero exit.


class SgiloGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ValueError, FileNotFoundError, KeyError, TypeError, RuntimeError, OSError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            click.echo(f"sgilo: error: {msg}", err=True)
            sys.exit(2)


@click.group(cls=SgiloGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sgilo")
def main() -> None:
    """sgilo — posterior sampling for imaging inverse problems in the intermediate latent space of StyleGAN-2
    with score-based priors (SGILO, Daras et al., ICML 2022), plus the CSGM and ILO baselines."""


# ----------------------------------------------------------------------------
# Commands (each ≤ 30 lines; bodies live in the library).
# [commands are inserted below this line]


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
    click.echo(f"converted {info['file']} ({info['format']}, {info['resolution']}px, {info['parameters']:,} parameters, "
               f"Gaussianised-w+ fit: {'yes' if info['gaussian_fit'] else 'no'}) -> {info['safetensors']}, {info['json']}")


@main.command("train-generator")
@click.option("--data", required=True, type=click.Path(), help="Image folder or dataset zip (only the train split is used).")
@click.option("--out", required=True, type=click.Path(), help="Run folder (keep it outside the repository).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--resolution", default=64, show_default=True)
@click.option("--kimg", default=600.0, show_default=True, help="Training length in thousands of images.")
@click.option("--batch", default=32, show_default=True)
@click.option("--channel-base", default=2048, show_default=True)
@click.option("--channel-max", default=128, show_default=True)
@click.option("--z-dim", default=256, show_default=True)
@click.option("--mapping-layers", default=4, show_default=True)
@click.option("--r1-gamma", default=0.05, show_default=True)
@click.option("--augment", default="color,translation,cutout", show_default=True, help="DiffAugment policy ('' = off).")
@click.option("--ckpt-minutes", default=5.0, show_default=True)
@click.option("--max-minutes", default=None, type=float, help="Stop (with a checkpoint) after this many minutes.")
@click.option("--fp32", is_flag=True, help="Disable bf16 autocast.")
@click.option("--seed", default=0, show_default=True)
def train_generator_cmd(data, out, resume, resolution, kimg, batch, channel_base, channel_max, z_dim, mapping_layers,
                        r1_gamma, augment, ckpt_minutes, max_minutes, fp32, seed):
    """Train a StyleGAN-2 generator (DiffAugment, lazy R1, EMA). Example:
    sgilo train-generator --data ../shared/data/utkface64.zip --out ~/runs/utkface64 --resume"""
    from sgilo.training.generator import TrainConfig, train
    from sgilo.training.launch import init_distributed
    init_distributed()
    cfg = TrainConfig(data=data, out=out, resolution=resolution, kimg=kimg, batch=batch, channel_base=channel_base,
                      channel_max=channel_max, z_dim=z_dim, w_dim=z_dim, mapping_layers=mapping_layers,
                      r1_gamma=r1_gamma, augment=augment, ckpt_minutes=ckpt_minutes, bf16=not fp32, seed=seed)
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


if __name__ == "__main__":
    main()
