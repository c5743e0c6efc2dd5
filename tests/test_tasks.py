"""Task presets: every name builds, defaults resolve, parameters are JSON-able, bad input fails in one line."""

from __future__ import annotations

import json

import click
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sgilo.bench.tasks import TASKS, make_operator, task_options, task_params
from sgilo.operators import LinearOperator

SHAPE = (3, 16, 16)


@pytest.mark.parametrize("task", [t for t in TASKS if t != "inpaint-mask"])
def test_every_task_builds(task):
    op = make_operator(task, SHAPE, seed=0, sigma=0.1)
    assert isinstance(op, LinearOperator) and op.sigma == 0.1
    y = op.measure(torch.zeros(2, *SHAPE), generator=torch.Generator().manual_seed(0))
    assert y.shape[0] == 2
    json.dumps(task_params(task, SHAPE, 0, sigma=0.1))


def test_defaults_resolved():
    assert task_params("inpaint-box", (3, 64, 64), 0)["box"] == [16, 16, 48, 48]
    p = task_params("inpaint-random", (3, 64, 64), 0)
    assert p["observed"] == 0.05 and p["n_observed"] == 205
    assert task_params("superres", (3, 64, 64), 0)["factor"] == 4
    assert task_params("cs-gaussian", (3, 64, 64), 0)["m"] == 614
    assert task_params("cs-circulant", (3, 64, 64), 0, ratio=20 / 12288)["m"] == 20
    assert task_params("deblur", (3, 64, 64), 0)["kernel_sigma"] == 1.0
    assert task_params("denoise", (3, 64, 64), 0, sigma=None)["sigma"] == 0.1
    assert "factor" not in task_params("colorize", (3, 64, 64), 0, factor=8)  # unused options are ignored


def test_same_seed_same_operator():
    a = make_operator("inpaint-random", SHAPE, seed=3, observed=0.2)
    b = make_operator("inpaint-random", SHAPE, seed=3, observed=0.2)
    assert torch.equal(a.mask, b.mask)


def test_inpaint_mask_task(tmp_path):
    img = Image.new("L", (16, 16), 255)
    img.save(tmp_path / "m.png")
    assert make_operator("inpaint-mask", SHAPE, 0, mask=str(tmp_path / "m.png")).observed_fraction == 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="nope"), "unknown task 'nope'"),
    (dict(task="inpaint-random", observed=0.0), "0 < p <= 1"),
    (dict(task="inpaint-random", observed=1.01), "0 < p <= 1"),
    (dict(task="cs-gaussian", ratio=1.5), "1 <= m <= n"),
    (dict(task="cs-circulant", ratio=1e-6), "1 <= m <= n"),
    (dict(task="superres", factor=3), "does not divide"),
    (dict(task="inpaint-mask"), "--mask"),
    (dict(task="inpaint-box", box=(0, 0, 20, 4)), "box"),
    (dict(task="deblur", kernel_sigma=-1.0), "kernel-sigma"),
    (dict(task="denoise", sigma=-0.1), "--sigma"),
])
def test_bad_task_inputs(kwargs, match):
    task = kwargs.pop("task")
    with pytest.raises(ValueError, match=match) as e:
        make_operator(task, SHAPE, 0, **kwargs)
    assert "\n" not in str(e.value)


def test_wrong_mask_and_non_image(tmp_path):
    Image.new("L", (8, 8), 255).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="wrong mask size"):
        make_operator("inpaint-mask", SHAPE, 0, mask=str(tmp_path / "small.png"))
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="expected an image file"):
        make_operator("inpaint-mask", SHAPE, 0, mask=str(tmp_path / "x.png"))


def test_task_options_click():
    @click.command()
    @task_options
    def cmd(task, observed, box, mask, factor, ratio, kernel_sigma, sigma):
        p = task_params(task, SHAPE, 0, observed=observed, box=box, mask=mask, factor=factor, ratio=ratio,
                        kernel_sigma=kernel_sigma, sigma=sigma)
        click.echo(json.dumps(p))

    out = CliRunner().invoke(cmd, ["--task", "inpaint-box", "--box", "1,2,5,6", "--sigma", "0.05"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"task": "inpaint-box", "image_shape": [3, 16, 16], "seed": 0,
                                      "box": [1, 2, 5, 6], "sigma": 0.05}
    assert CliRunner().invoke(cmd, ["--box", "1,2,3"]).exit_code == 2
    out = CliRunner().invoke(cmd, ["--task", "superres"])
    assert json.loads(out.output)["factor"] == 4
