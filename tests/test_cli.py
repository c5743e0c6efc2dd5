"""The `sgilo` command: every sub-command has working --help; errors are one line with a non-zero exit."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sgilo.cli import main

COMMANDS = ["demo", "solve", "sample", "convert", "train-generator", "export-generator", "make-latents", "train-score",
            "theory", "bench", "bench-speed", "bench-tune"]


def test_top_level_help_lists_every_command():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in res.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_help(cmd):
    res = CliRunner().invoke(main, [cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("Usage: ") and "error" not in res.output.lower(), res.output


def test_library_error_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["export-generator", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "g")])
    assert res.exit_code != 0
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("sgilo: error:"), res.output


def test_make_latents_skip_past_the_split_is_one_clear_line(tmp_path):
    """``--skip`` beyond the train split named what was expected and what was received (it used to end in the
    library's 'needs images ... got 0')."""
    import numpy as np
    from PIL import Image
    (tmp_path / "faces" / "train").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(tmp_path / "faces" / "train" / f"{i}.png")
    res = CliRunner().invoke(main, ["make-latents", "--kind", "inverted", "--images", str(tmp_path / "faces"),
                                    "--skip", "5", "--n", "2", "--out", str(tmp_path / "lat")])
    assert res.exit_code == 2 and "--skip" in res.output and "fewer than the 2 train images" in res.output, res.output
    assert not (tmp_path / "lat").exists()
