"""Result files of the theory experiments (Daras et al., ICML 2022, Sec. 4): ``NAME.json`` and ``NAME.png``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgilo.checkpoints import atomic_write, atomic_write_text  # noqa: E402


# ----------------------------------------------------------------------------
# Write the JSON result and the figure of one experiment atomically.


def save_result(out: str | Path, name: str, result: dict, fig: plt.Figure) -> dict:
    """Write ``out/name.json`` and ``out/name.png`` (small, 80 dpi) and close ``fig``."""
    out = Path(out)
    atomic_write_text(out / f"{name}.json", json.dumps(result, indent=1) + "\n")
    atomic_write(out / f"{name}.png", lambda p: fig.savefig(p, format="png", dpi=80, bbox_inches="tight"))
    plt.close(fig)
    return result
