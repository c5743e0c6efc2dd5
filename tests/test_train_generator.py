"""Generator training: losses, resume after a hard kill, exact resume, 2-process (gloo) training, SWD sanity."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgilo.metrics.swd import laplacian_pyramid, swd
from sgilo.utils.datasets import load_image_set
from sgilo.training.generator import TrainConfig, load_ema_from_checkpoint, train

TINY = dict(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16, batch=4,
            ckpt_minutes=1000.0)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory) -> Path:
    """A dataset zip in the StyleGAN layout with 12 train and 4 test images (smooth random colour blobs)."""
    path = tmp_path_factory.mktemp("data") / "tiny.zip"
    rng = np.random.default_rng(0)
    entries = []
    with zipfile.ZipFile(path, "w") as z:
        for i in range(16):
            split = "train" if i < 12 else "test"
            base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
            img = np.asarray(Image.fromarray(base).resize((20, 16), Image.BILINEAR))  # non-square: centre-cropped
            name = f"{split}/{i:03d}.png"
            z.writestr(name, _png(img))
            entries.append({"file": name, "split": split})
        z.writestr("dataset.json", json.dumps({"name": "tiny", "resolution": 16, "images": entries}))
    return path


def test_load_image_set_splits(tiny_zip):
    train = load_image_set(tiny_zip, 16, "train")
    test = load_image_set(tiny_zip, 16, "test")
    assert train.shape == (12, 3, 16, 16) and test.shape == (4, 3, 16, 16) and train.dtype == torch.uint8
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_set(tiny_zip.parent / "missing.zip", 16)


def test_resume_is_exact(tiny_zip, tmp_path):
    torch.set_num_threads(1)
    base = TrainConfig(data=str(tiny_zip), out=str(tmp_path / "a"), kimg=8 * 4 / 1000, **TINY)
    train(base, progress=False)
    half = replace(base, out=str(tmp_path / "b"), kimg=4 * 4 / 1000)
    train(half, progress=False)
    train(replace(half, kimg=base.kimg), resume=True, progress=False)
    Ga, _, pa = load_ema_from_checkpoint(tmp_path / "a" / "checkpoint.pt")
    Gb, _, pb = load_ema_from_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert pa["nimg"] == pb["nimg"] == 32 and pa["step"] == pb["step"] == 8
    for (k, va), vb in zip(Ga.state_dict().items(), Gb.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sgilo", *args]


@pytest.mark.slow  # subprocesses / repeated bench runs: make test-slow
def test_kill_and_resume(tiny_zip, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train-generator", "--data", str(tiny_zip), "--out", str(out), "--resolution", "16", "--z-dim", "16",
            "--mapping-layers", "2", "--channel-base", "128", "--channel-max", "16", "--batch", "4",
            "--ckpt-minutes", "0.001"]
    proc = subprocess.Popen(_cli(*args, "--kimg", "100"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (out / "progress.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads((out / "progress.json").read_text())["nimg"]
    assert done > 0
    target = (done + 8) / 1000
    res = subprocess.run(_cli(*args, "--kimg", str(target), "--resume"), env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    _, _, prog = load_ema_from_checkpoint(out / "checkpoint.pt")
    assert prog["nimg"] >= done + 8
    assert "resumed from" in res.stderr + res.stdout


@pytest.mark.slow  # subprocesses / repeated bench runs: make test-slow
def test_two_process_training(tiny_zip, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "sgilo", "train-generator", "--data", str(tiny_zip), "--out", str(out), "--resolution", "16",
           "--z-dim", "16", "--mapping-layers", "2", "--channel-base", "128", "--channel-max", "16", "--batch", "4",
           "--kimg", "0.016"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    _, _, prog = load_ema_from_checkpoint(out / "checkpoint.pt")
    assert prog["nimg"] == 16 and prog["step"] == 4  # 4 steps of 2 processes x 2 images


def test_swd_orders_distributions():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 3, 32, 32, generator=g).clamp(-1, 1)
    b = torch.randn(16, 3, 32, 32, generator=g).clamp(-1, 1)
    c = (torch.randn(16, 3, 32, 32, generator=g) * 0.3 + 0.5).clamp(-1, 1)
    c[:, :, ::2] = -1.0  # stripes: different patch statistics
    same, diff = swd(a, b, patches_per_image=32)["mean"], swd(a, c, patches_per_image=32)["mean"]
    assert diff > 3 * same
    assert [lvl.shape[-1] for lvl in laplacian_pyramid(a)] == [32, 16]
