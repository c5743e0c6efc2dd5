"""Score-prior training: export, exact resume from a checkpoint, config checks, 2-process DDP (gloo on CPU)."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from sgilo.checkpoints import torch_load_safe
from sgilo.generator import fit_gaussianized_w
from sgilo.priors import load_prior
from sgilo.training.latents import make_latents
from sgilo.training.score import ScoreTrainConfig, train
from conftest import make_tiny_generator

TINY = dict(d_model=32, depth=1, heads=2, batch=16, ckpt_every=10, log_every=5, warmup=5, lr=1e-3)


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    G = make_tiny_generator(32)
    fit = fit_gaussianized_w(G.mapping, 2000, generator=torch.Generator().manual_seed(0))
    return make_latents(G, fit, tmp_path_factory.mktemp("lat") / "d", "synthetic", layer=1, n=64, shard_size=32,
                        progress=False)


@pytest.mark.parametrize("target", ["z", "h"])
def test_train_exports_prior_and_curve(tmp_path, latents, target):
    cfg = ScoreTrainConfig(latents=str(latents), out=str(tmp_path / "o"), target=target, steps=20, **TINY)
    stem = train(cfg, progress=False)
    prior = load_prior(stem)
    assert prior.kind == target and prior.layer == (0 if target == "z" else 1)
    x = torch.randn(2, *prior.latent_shape)
    assert prior.score(x, 0.5).shape == x.shape and torch.isfinite(prior.score(x, 0.5)).all()
    log = json.loads((tmp_path / "o" / "log.json").read_text())
    assert log["steps"] == 20 and log["n_latents"] == 64 and log["final_loss"] > 0
    assert (tmp_path / "o" / "loss.png").stat().st_size > 1000
    assert json.loads((tmp_path / "o" / "prior.json").read_text())["extra"]["steps"] == 20


def test_resume_continues_exactly(tmp_path, latents):
    full = ScoreTrainConfig(latents=str(latents), out=str(tmp_path / "a"), target="h", steps=20, **TINY)
    train(full, progress=False)
    half = ScoreTrainConfig(latents=str(latents), out=str(tmp_path / "b"), target="h", steps=10, **TINY)
    train(half, progress=False)
    assert torch_load_safe(tmp_path / "b" / "checkpoint.pt")["step"] == 10
    train(ScoreTrainConfig(latents=str(latents), out=str(tmp_path / "b"), target="h", steps=20, **TINY), resume=True,
          progress=False)
    a, b = torch_load_safe(tmp_path / "a" / "checkpoint.pt"), torch_load_safe(tmp_path / "b" / "checkpoint.pt")
    assert b["step"] == 20 and len(a["losses"]) == len(b["losses"])
    for key in ("net", "ema"):
        for k in a[key]:
            torch.testing.assert_close(a[key][k], b[key][k], rtol=0, atol=0)
    bad = ScoreTrainConfig(latents=str(latents), out=str(tmp_path / "b"), target="h", steps=30, **{**TINY, "depth": 2})
    with pytest.raises(ValueError, match="cannot resume"):
        train(bad, resume=True, progress=False)


def _ddp_worker(rank: int, world: int, port: int, cfg: ScoreTrainConfig) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), SGILO_FORCE_CPU="1", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    train(cfg, progress=False)
    import torch.distributed as dist
    dist.destroy_process_group()


@pytest.mark.slow  # ≈ 15 s on 2 shared cores: two fresh interpreters import torch
def test_ddp_two_processes_gloo(tmp_path, latents):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ScoreTrainConfig(latents=str(latents), out=str(tmp_path / "ddp"), target="z", steps=6, **TINY)
    mp.spawn(_ddp_worker, args=(2, port, cfg), nprocs=2, join=True)
    log = json.loads((tmp_path / "ddp" / "log.json").read_text())
    assert log["processes"] == 2 and log["steps"] == 6


def test_cli_make_latents_train_score_and_sample(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from sgilo.cli import main
    from sgilo.generator import save_generator
    G = make_tiny_generator(32)
    save_generator(tmp_path / "G", G, fit_gaussianized_w(G.mapping, 2000, generator=torch.Generator().manual_seed(0)))
    run = CliRunner().invoke
    r = run(main, ["make-latents", "--model", str(tmp_path / "G"), "--layer", "2", "--out", str(tmp_path / "lat"),
                   "--n", "40", "--shard-size", "16"])
    assert r.exit_code == 0, r.output
    r = run(main, ["train-score", "--latents", str(tmp_path / "lat"), "--target", "h", "--out", str(tmp_path / "run"),
                   "--steps", "5", "--batch", "8", "--d-model", "32", "--depth", "1", "--heads", "2"])
    assert r.exit_code == 0, r.output
    prior = str(tmp_path / "run" / "prior")
    for extra, n_img in ([], 4), (["--prior", prior, "--steps", "5"], 4), (["--prior", prior, "--naturalize",
                                                                             "--steps", "3"], 8), \
            (["--prior", prior, "--naturalize", "--start", "noisy", "--noise", "2", "--steps", "3"], 8):
        out = tmp_path / f"grid{len(extra)}.png"
        r = run(main, ["sample", "--model", str(tmp_path / "G"), "--n", "4", "--out", str(out), *extra])
        assert r.exit_code == 0, r.output
        assert f"{n_img} images" in r.output
        with Image.open(out) as im:
            assert im.size[0] > 32
    r = run(main, ["sample", "--model", str(tmp_path / "G"), "--prior", "h9", "--n", "2"])
    assert r.exit_code == 2 and "bundled prior 'h9'" in r.output


def test_naturalize_noisy_start_changes_the_image():
    # an (untrained, Gaussian-skip) h-prior on the tiny generator's h_1; bad start names fail with one line
    from sgilo.generator import fit_gaussianized_w, head
    from sgilo.priors import LatentPrior, LatentScaler, LatentScoreNet, ScoreNetConfig, VPSDE
    from sgilo.priors.decode import naturalize_pairs
    G = make_tiny_generator(32)
    fit = fit_gaussianized_w(G.mapping, 2000, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    h = head(G.synthesis, fit(torch.randn(500, G.num_ws, G.w_dim, generator=g)), 1, noise_mode="const").h
    net = LatentScoreNet(ScoreNetConfig(kind="h", latent_shape=tuple(h.shape[1:]), d_model=16, depth=1, heads=2)).eval()
    prior = LatentPrior(net, VPSDE(), LatentScaler(tuple(h.shape[1:])).fit(h), layer=1, gaussian_skip=True)
    before, after = naturalize_pairs(G, fit, prior, 3, torch.Generator().manual_seed(1), start="noisy", noise=5.0,
                                     t=0.5, n_steps=20)
    assert before.shape == after.shape == (3, 3, 32, 32) and torch.isfinite(after).all()
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match="naturalize start"):
        naturalize_pairs(G, fit, prior, 1, None, start="zeros")


# ----------------------------------------------------------------------------
# --structured-rank: the PCA Gaussian skip is fitted on the training latents; --steps 0 exports it without a network
# (its score is the exact −C_t⁻¹u / s of the fitted covariance); a trained network adds to it; several latent folders
# are concatenated.


def test_structured_skip_export_and_training(tmp_path, latents):
    from sgilo.priors.score import LatentPrior
    g0 = ScoreTrainConfig(latents=f"{latents},{latents}", out=str(tmp_path / "g"), target="h", steps=0,
                          structured_rank=8, **TINY)
    prior = load_prior(train(g0, progress=False))
    assert prior.net is None and prior.structured.rank == 8
    assert json.loads((tmp_path / "g" / "log.json").read_text())["n_latents"] == 128     # both folders
    x = prior.scaler.denormalize(torch.randn(3, *prior.latent_shape, generator=torch.Generator().manual_seed(0)))
    u = prior.scaler.normalize(x)
    lr = prior.structured
    a2 = float(torch.exp(2 * prior.sde.log_alpha(torch.tensor(0.05))))
    s2 = float(prior.sde.marginal_std(torch.tensor(0.05)) ** 2)
    want = -lr.apply(u, torch.reciprocal, a2, s2) / prior.scaler.scale
    torch.testing.assert_close(prior.score(x, 0.05), want, rtol=2e-3, atol=1e-4)
    net = ScoreTrainConfig(latents=str(latents), out=str(tmp_path / "n"), target="h", steps=10, structured_rank=8,
                           **TINY)
    trained = load_prior(train(net, progress=False))
    assert trained.net is not None and trained.structured.rank == 8
    assert isinstance(trained.gaussian_part(), LatentPrior) and trained.gaussian_part().net is None
    with pytest.raises(ValueError, match="standard"):
        train(ScoreTrainConfig(latents=str(latents), out=str(tmp_path / "m"), target="h", steps=0, structured_rank=8,
                               scaler="minmax", **TINY), progress=False)
