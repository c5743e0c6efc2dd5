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


if __name__ == "__main__":
    main()
