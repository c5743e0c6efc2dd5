"""Image I/O: loading any size/mode into [-1, 1], masks, fixed-range saving, grids."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from sgilo.operators import Inpainting
from sgilo.utils.images import (
    load_image,
    load_mask,
    save_image,
    save_image_grid,
    to_uint8,
)


def test_roundtrip_exact_png(tmp_path):
    x = torch.randint(0, 256, (1, 3, 16, 16)).float() / 127.5 - 1
    save_image(x, tmp_path / "a.png")
    torch.testing.assert_close(load_image(tmp_path / "a.png", 16), x, atol=1e-6, rtol=0)


def test_fixed_range_no_stretch(tmp_path):
    x = torch.full((3, 4, 4), -0.5)
    x[:, 0, 0] = -0.4  # a per-image stretch would map this range to 0..255
    save_image(x, tmp_path / "dim.png")
    arr = np.asarray(Image.open(tmp_path / "dim.png"))
    assert arr.max() == 76 and arr.min() == 64  # round((x + 1) / 2 · 255)
    assert to_uint8(torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])).tolist() == [0, 0, 128, 255, 255]


def test_crop_resize_logs_once(tmp_path, caplog):
    img = np.zeros((30, 50, 3), np.uint8)
    img[:, 10:40] = 255  # the centre 30×30 is white, the side bands black
    Image.fromarray(img).save(tmp_path / "wide.png")
    with caplog.at_level(logging.INFO, logger="sgilo.utils.images"):
        x = load_image(tmp_path / "wide.png", 15)
    assert x.shape == (1, 3, 15, 15) and x.min() > 0.9
    assert len(caplog.records) == 1 and "centre-cropped" in caplog.records[0].getMessage()


def test_greyscale_and_rgba(tmp_path):
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png", 8).shape == (1, 3, 8, 8)
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black → white background
    rgba[:4, :, 3] = 255                  # top half opaque black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", 8)
    assert torch.all(x[:, :, :4] == -1) and torch.all(x[:, :, 4:] == 1)


def test_bad_files(tmp_path):
    (tmp_path / "not.png").write_text("hello")
    with pytest.raises(ValueError, match="expected an image file") as e:
        load_image(tmp_path / "not.png", 8)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png", 8)
    with pytest.raises(ValueError, match="extension"):
        save_image(torch.zeros(3, 4, 4), tmp_path / "x.txt")


def test_mask_loading(tmp_path):
    m = np.zeros((6, 9), np.uint8)
    m[:, :3] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png", (6, 9))
    assert mask.shape == (1, 1, 6, 9) and mask.sum() == 18 and mask[0, 0, :, :3].all()
    with pytest.raises(ValueError, match="wrong mask size"):
        load_mask(tmp_path / "m.png", (9, 6))
    op = Inpainting.from_image(tmp_path / "m.png", (6, 9))
    assert torch.equal(op.mask, mask)


def test_grid(tmp_path):
    x = torch.zeros(5, 3, 4, 6)
    save_image_grid(x, tmp_path / "grid.png", nrow=3, pad=2)
    arr = np.asarray(Image.open(tmp_path / "grid.png"))
    assert arr.shape == (2 * 6 + 2, 3 * 8 + 2, 3)
    assert arr[0, 0, 0] == 255 and arr[2, 2, 0] == 128
    save_image_grid(torch.zeros(4, 1, 4, 4), tmp_path / "g1.png")
    assert np.asarray(Image.open(tmp_path / "g1.png")).shape == (14, 14)


def test_grid_never_wider_than_its_images(tmp_path):
    """`sgilo sample --n 1` wrote a 530×68 strip (8 columns for one face): one image is saved as itself, and a grid
    has at most N columns."""
    x = torch.rand(1, 3, 5, 7) * 2 - 1
    save_image_grid(x, tmp_path / "one.png", nrow=8)
    assert np.asarray(Image.open(tmp_path / "one.png")).shape == (5, 7, 3)
    save_image_grid(torch.zeros(3, 3, 4, 4), tmp_path / "three.png", nrow=8, pad=2)
    assert np.asarray(Image.open(tmp_path / "three.png")).shape == (4 + 4, 3 * 6 + 2, 3)
