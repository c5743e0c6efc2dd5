"""Latent data sets: synthetic z → h_k through the head, shards + manifest, resuming, inverted (ILO) path."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from sgilo.generator import fit_gaussianized_w, h_shape, head
from sgilo.solvers.schedules import with_rounds
from sgilo.training import latents as L
from conftest import make_tiny_generator


@pytest.fixture(scope="module")
def gen_fit():
    G = make_tiny_generator(32)
    return G, fit_gaussianized_w(G.mapping, 2000, generator=torch.Generator().manual_seed(0))


def test_synthetic_shards_manifest_and_values(tmp_path, gen_fit):
    G, fit = gen_fit
    out = L.make_latents(G, fit, tmp_path / "d", "synthetic", layer=2, n=10, shard_size=4, seed=3, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and [s["count"] for s in man["shards"]] == [4, 4, 2]
    z, _ = L.load_latents(out, "z")
    h, _ = L.load_latents(out, "h")
    assert z.shape == (10, G.num_ws, G.w_dim) and h.shape == (10, *h_shape(G.synthesis, 2))
    with torch.no_grad():
        ref = head(G.synthesis, fit(z[:4]), 2, noise_mode="const").h
    torch.testing.assert_close(h[:4], ref, rtol=1e-5, atol=1e-5)
    assert abs(float(z.mean())) < 0.2 and abs(float(z.std()) - 1) < 0.1             # z ~ N(0, I)
    with pytest.raises(ValueError, match="target"):
        L.make_latents(G, fit, tmp_path / "z0", "synthetic", layer=0, n=3, progress=False)
        L.load_latents(tmp_path / "z0", "h")


def test_resume_skips_finished_shards_and_reproduces_data(tmp_path, gen_fit, monkeypatch):
    G, fit = gen_fit
    full = L.make_latents(G, fit, tmp_path / "full", "synthetic", layer=1, n=9, shard_size=3, progress=False)
    calls, fail = [], [True]
    real = L.synthetic_latents

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2 and fail[0]:
            raise InterruptedError("simulated interruption")
        return real(*a, **k)

    monkeypatch.setattr(L, "synthetic_latents", flaky)
    with pytest.raises(InterruptedError):
        L.make_latents(G, fit, tmp_path / "part", "synthetic", layer=1, n=9, shard_size=3, progress=False)
    man = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert not man["complete"] and len(man["shards"]) == 1
    assert not list((tmp_path / "part").glob(".*tmp"))                                 # no half-written shard
    calls.clear()
    fail[0] = False
    L.make_latents(G, fit, tmp_path / "part", "synthetic", layer=1, n=9, shard_size=3, progress=False)
    assert len(calls) == 2                                                            # only the 2 missing shards
    for name in ("shard_00000", "shard_00001", "shard_00002"):
        a, b = load_file(str(full / f"{name}.safetensors")), load_file(str(tmp_path / "part" / f"{name}.safetensors"))
        assert torch.equal(a["z"], b["z"]) and torch.equal(a["h"], b["h"])
    with pytest.raises(ValueError, match="use another --out"):
        L.make_latents(G, fit, tmp_path / "part", "synthetic", layer=1, n=12, shard_size=3, progress=False)


def test_inverted_latents_with_ilo(tmp_path, gen_fit):
    pytest.importorskip("sgilo.solvers.ilo")
    G, fit = gen_fit
    with torch.no_grad():
        images = G(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    out = L.make_latents(G, fit, tmp_path / "inv", "inverted", layer=1, n=5, shard_size=2, images=images,
                         ilo_steps=(3, 2), progress=False)
    z, man = L.load_latents(out, "z")
    h, _ = L.load_latents(out, "h")
    assert man["params"]["n"] == 2 and z.shape == (2, G.num_ws, G.w_dim) and h.shape == (2, *h_shape(G.synthesis, 1))
    assert torch.isfinite(h).all()
    with pytest.raises(ValueError, match="needs images"):
        L.make_latents(G, fit, tmp_path / "inv2", "inverted", layer=1, n=2, progress=False)


def test_inverted_latents_with_a_given_ilo_config_record_it_and_cut_its_radii(tmp_path, gen_fit):
    """`--ilo-preset utkface64` inverts with ℓ1 balls on h_k (radius per round, cut to the rounds run); the manifest
    names the ILO settings and the first image, so a folder made with other settings is not resumed."""
    from sgilo.solvers.ilo import ILOConfig
    G, fit = gen_fit
    cfg = ILOConfig(l1_radius_h=(1e9, 30.0, 30.0, 30.0), geocross=0.0)
    assert with_rounds(cfg, (3, 2)).l1_radius_h == (1e9, 30.0) and with_rounds(cfg, (3, 2)).steps == (3, 2)
    assert with_rounds(replace(cfg, steps=(1, 1), l1_radius_h=(1e9, 5.0)), (1, 1, 1)).l1_radius_h == (1e9, 5.0, 5.0)
    with torch.no_grad():
        images = G(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    out = L.make_latents(G, fit, tmp_path / "inv", "inverted", layer=1, n=2, images=images, ilo_steps=(3, 2),
                         progress=False, ilo=cfg, ilo_name="utkface64", first_image=7)
    h, man = L.load_latents(out, "h")
    assert man["params"]["ilo"] == "utkface64" and man["params"]["first_image"] == 7 and torch.isfinite(h).all()
    with pytest.raises(ValueError, match="use another --out"):
        L.make_latents(G, fit, out, "inverted", layer=1, n=2, images=images, ilo_steps=(3, 2), progress=False)
    with pytest.raises(ValueError, match="needs images"):
        L.make_latents(G, fit, tmp_path / "e", "inverted", layer=1, n=2, images=images[:0], progress=False)
