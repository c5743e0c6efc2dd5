"""Our checkpoint format (safetensors + JSON): exact fp32 round trip, fp16 closeness, strict loading with errors that
name the key, format/version tags, atomic writes and weights-only `torch.load`."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import make_tiny_generator
from safetensors.torch import load_file, save_file

from sgilo.checkpoints import (atomic_write, load_model, load_state_dict_strict, model_paths, save_model,
                               torch_load_safe)
from sgilo.generator import GaussianizedW, bundled_available, load_generator, save_generator


def test_roundtrip_fp32_exact_with_fit(tmp_path):
    G = make_tiny_generator(32, seed=2)
    fit = GaussianizedW(torch.randn(32), torch.rand(32) + 0.5)
    save_generator(tmp_path / "g", G, gaussian_fit=fit, extra={"note": "test"})
    assert {p.name for p in tmp_path.iterdir()} == {"g.safetensors", "g.json"}
    G2, fit2 = load_generator(tmp_path / "g.json")
    assert G2.cfg == G.cfg
    for (k, a), (k2, b) in zip(G.state_dict().items(), G2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert torch.equal(fit2.mu, fit.mu) and torch.equal(fit2.sigma, fit.sigma)
    z = torch.randn(2, 32)
    assert torch.equal(G2(z), G(z))
    assert not G2.training and not any(p.requires_grad for p in G2.parameters())
    assert load_model(tmp_path / "g", "generator")[2] == {"note": "test"}


def test_roundtrip_fp16_close(tmp_path):
    G = make_tiny_generator(32, seed=2)
    save_generator(tmp_path / "g16", G, dtype=torch.float16)
    assert load_file(str(tmp_path / "g16.safetensors"))["synthesis.b32.conv1.weight"].dtype == torch.float16
    G2, fit = load_generator(tmp_path / "g16", frozen=False)
    assert fit is None and any(p.requires_grad for p in G2.parameters())
    assert all(v.dtype == torch.float32 for v in G2.state_dict().values())
    z = torch.randn(2, 32)
    ref = G(z)
    assert (G2(z) - ref).norm() / ref.norm() < 5e-3


def test_strict_load_errors_name_the_key():
    G = make_tiny_generator(32)
    sd = dict(G.state_dict())
    missing = {k: v for k, v in sd.items() if k != "synthesis.b8.conv0.weight"}
    with pytest.raises(KeyError, match="missing key 'synthesis.b8.conv0.weight'"):
        load_state_dict_strict(G, missing, "ckpt")
    with pytest.raises(KeyError, match="unexpected key 'synthesis.b64.const'"):
        load_state_dict_strict(G, sd | {"synthesis.b64.const": torch.zeros(1)}, "ckpt")
    with pytest.raises(ValueError, match=r"'mapping.w_avg' has shape \(31,\), expected \(32,\)"):
        load_state_dict_strict(G, sd | {"mapping.w_avg": torch.zeros(31)}, "ckpt")


def test_load_generator_rejects_tampered_files(tmp_path):
    G = make_tiny_generator(32)
    save_generator(tmp_path / "g", G)
    st, js = model_paths(tmp_path / "g")
    tensors = load_file(str(st))
    save_file(tensors | {"synthesis.extra": torch.zeros(2)}, str(st))
    with pytest.raises(KeyError, match="synthesis.extra"):
        load_generator(tmp_path / "g")
    meta = json.loads(js.read_text())
    js.write_text(json.dumps(meta | {"format": "sgilo/prior"}))
    with pytest.raises(ValueError, match="expected format 'sgilo/generator'"):
        load_generator(tmp_path / "g")
    js.write_text(json.dumps(meta | {"version": 99}))
    with pytest.raises(ValueError, match="unsupported version 99"):
        load_generator(tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_generator(tmp_path / "nothere")


def test_default_model_missing_is_clear(monkeypatch, tmp_path):
    import sgilo.generator.io as gio
    monkeypatch.setitem(gio.BUNDLED, "default", tmp_path / "absent" / "generator")
    assert not bundled_available()
    with pytest.raises(FileNotFoundError, match="bundled model 'default'"):
        load_generator("default")


def test_bundled_model_loads_frozen_with_fit():
    if not bundled_available():
        pytest.skip("bundled model not in this checkout")
    G, fit = load_generator("default")
    assert G.img_resolution == 64 and fit is not None and fit.mu.shape == (G.w_dim,)
    assert not any(p.requires_grad for p in G.parameters())
    with torch.no_grad():
        x = G.synthesis(fit(torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))))
    assert x.shape == (2, 3, 64, 64) and torch.isfinite(x).all()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.json"
    save_model(tmp_path / "x", "thing", {"a": 1}, {"t": torch.ones(2)})
    before = target.read_text()

    def boom(p):
        open(p, "w").write("partial")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["x.json", "x.safetensors"]


def test_torch_load_safe_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    torch.save({"ok": torch.ones(1), "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="posix.system"):
        torch_load_safe(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.save({"step": 3, "w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch_load_safe(tmp_path / "ok.pt")["step"] == 3
