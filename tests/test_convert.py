"""Checkpoint converters: tiny fake NVlabs pickles and rosinality state dicts, parity against reference forwards
written here (fused grouped modulated convs, explicit zero-insertion FIR), the allow-list unpickler, `sgilo convert`."""

from __future__ import annotations

import argparse
import builtins
import os
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import make_tiny_generator

from sgilo.cli import main
from sgilo.generator import load_generator
from sgilo.generator.convert import load_foreign_generator, rosinality_config
from sgilo.generator.safe_pickle import UnsafePickleError, load_pickle

# ----------------------------------------------------------------------------
# Reference maths (independent of sgilo.generator.stylegan2).


def fir4() -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    return k / k.sum()


def ref_upfirdn(x, f, up, p0, p1):
    B, C, H, W = x.shape
    if up > 1:
        y = x.new_zeros(B, C, H * up, W * up)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, [p0, p1, p0, p1])
    return F.conv2d(x, f.flip(0, 1)[None, None].expand(C, 1, *f.shape), groups=C)


def ref_modconv(x, weight, style, demod, up=False, kernel=None):
    """Grouped (fused) modulated conv: weight [O, I, k, k], style [B, I]; kernel = FIR already × up² (rosinality)."""
    B, (O, I, k, _) = x.shape[0], weight.shape
    w = weight[None] * style[:, None, :, None, None]                          # [B, O, I, k, k]
    if demod:
        w = w * (w.square().sum([2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    x = x.reshape(1, B * I, *x.shape[2:])
    if up:
        x = F.conv_transpose2d(x, w.transpose(1, 2).reshape(B * I, O, k, k), stride=2, groups=B)
        return ref_upfirdn(x.reshape(B, O, *x.shape[2:]), kernel, 1, 1, 1)
    return F.conv2d(x, w.reshape(B * O, I, k, k), padding=k // 2, groups=B).reshape(B, O, *x.shape[2:])


def lrelu(x, b):
    return F.leaky_relu(x + b.reshape(1, -1, *[1] * (x.ndim - 2)), 0.2) * 2 ** 0.5


def ref_mapping(z, layers, lr):
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for w, b in layers:
        x = lrelu(x @ (w * lr / w.shape[1] ** 0.5).t(), b * lr)
    return x


def nvlabs_forward(p, z, psi, num_blocks, n_map):
    """NVlabs formulation (styles scaled for toRGB, no weight gain on demodulated convs), const noise."""
    w = ref_mapping(z, [(p[f"mapping.fc{i}.weight"], p[f"mapping.fc{i}.bias"]) for i in range(n_map)], 0.01)
    w = p["mapping.w_avg"] + psi * (w - p["mapping.w_avg"])
    styles = (lambda pre: w @ (p[pre + ".affine.weight"] / w.shape[1] ** 0.5).t() + p[pre + ".affine.bias"])

    def layer(pre, x, up):
        out = ref_modconv(x, p[pre + ".weight"], styles(pre), True, up, 4 * p[pre + ".resample_filter"])
        return lrelu(out + p[pre + ".noise_strength"] * p[pre + ".noise_const"], p[pre + ".bias"])

    def torgb(pre, x):
        out = ref_modconv(x, p[pre + ".weight"], styles(pre) / x.shape[1] ** 0.5, False)
        return out + p[pre + ".bias"].reshape(1, -1, 1, 1)

    x = layer("synthesis.b4.conv1", p["synthesis.b4.const"][None].repeat(z.shape[0], 1, 1, 1), False)
    img = torgb("synthesis.b4.torgb", x)
    for k in range(1, num_blocks):
        pre = f"synthesis.b{4 * 2 ** k}"
        x = layer(pre + ".conv1", layer(pre + ".conv0", x, True), False)
        img = ref_upfirdn(img, 4 * p[pre + ".resample_filter"], 2, 2, 1) + torgb(pre + ".torgb", x)
    return img


def rosinality_forward(sd, z, truncation, latent_avg, n_up, n_mlp):
    """rosinality formulation: weight scale 1/sqrt(fan_in) inside the modulated conv, kernels stored × 4."""
    w = ref_mapping(z, [(sd[f"style.{i}.weight"], sd[f"style.{i}.bias"]) for i in range(1, n_mlp + 1)], 0.01)
    w = latent_avg + truncation * (w - latent_avg)
    mod = (lambda pre: w @ (sd[pre + ".modulation.weight"] / w.shape[1] ** 0.5).t() + sd[pre + ".modulation.bias"])

    def styled(pre, x, noise, up):
        weight = sd[pre + ".conv.weight"][0] / (x.shape[1] * 9) ** 0.5
        out = ref_modconv(x, weight, mod(pre + ".conv"), True, up, sd.get(pre + ".conv.blur.kernel"))
        return lrelu(out + sd[pre + ".noise.weight"] * noise, sd[pre + ".activate.bias"])

    def to_rgb(pre, x, skip):
        weight = sd[pre + ".conv.weight"][0] / x.shape[1] ** 0.5
        out = ref_modconv(x, weight, mod(pre + ".conv"), False) + sd[pre + ".bias"]
        return out if skip is None else out + ref_upfirdn(skip, sd[pre + ".upsample.kernel"], 2, 2, 1)

    out = styled("conv1", sd["input.input"].repeat(z.shape[0], 1, 1, 1), sd["noises.noise_0"], False)
    skip = to_rgb("to_rgb1", out, None)
    for i in range(n_up):
        out = styled(f"convs.{2 * i}", out, sd[f"noises.noise_{2 * i + 1}"], True)
        out = styled(f"convs.{2 * i + 1}", out, sd[f"noises.noise_{2 * i + 2}"], False)
        skip = to_rgb(f"to_rgbs.{i}", out, skip)
    return skip


# ----------------------------------------------------------------------------
# Fake NVlabs persistence records, pickled through fake `torch_utils.persistence` / `dnnlib.util` modules.


class Record:
    def __init__(self, class_name, state, marker):
        self.class_name, self.state = class_name, state
        self.module_src = f"open({str(marker)!r}, 'w').write('module_src was executed')\n"

    def __reduce__(self):
        fn = sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj
        return fn, (dict(type="class", version=4, module_src=self.module_src, class_name=self.class_name,
                         state=self.state),)


def fake_modules(monkeypatch):
    pkg, persistence = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called when pickling")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = persistence
    dnn, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    util.EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
    dnn.util = util
    for name, mod in [("torch_utils", pkg), ("torch_utils.persistence", persistence), ("dnnlib", dnn),
                      ("dnnlib.util", util)]:
        monkeypatch.setitem(sys.modules, name, mod)
    return util.EasyDict


def to_record(module, marker, init_kwargs=None):
    params = OrderedDict((n, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
                         for n, p in module._parameters.items())
    state = {"training": False, "_parameters": params,
             "_buffers": OrderedDict((n, b.clone()) for n, b in module._buffers.items()),
             "_non_persistent_buffers_set": set(), "_forward_hooks": OrderedDict(), "_init_args": (),
             "_init_kwargs": init_kwargs or {}, "weight_gain": np.float64(0.125), "activation": "lrelu",
             "_modules": OrderedDict((n, to_record(m, marker)) for n, m in module._modules.items())}
    return Record(type(module).__name__, state, marker)


def write_nvlabs_pkl(path, G, monkeypatch, marker, ada_style=True, protocol=4, **overrides):
    with monkeypatch.context() as mp:
        EasyDict = fake_modules(mp)
        c = G.cfg
        syn = EasyDict(channel_base=np.int64(c.channel_base), channel_max=c.channel_max, num_fp16_res=4,
                       conv_clamp=None)
        kw = EasyDict(z_dim=c.z_dim, c_dim=0, w_dim=c.w_dim, img_resolution=c.img_resolution, img_channels=3,
                      mapping_kwargs=EasyDict(num_layers=c.mapping_layers))
        kw.update(dict(synthesis_kwargs=syn) if ada_style else syn)
        kw.update(overrides)
        other = make_tiny_generator(c.img_resolution, seed=99, mapping_layers=c.mapping_layers)
        data = {"G": to_record(other, marker, kw), "D": to_record(torch.nn.Linear(2, 2), marker),
                "G_ema": to_record(G, marker, kw), "augment_pipe": None,
                "training_set_kwargs": EasyDict(path="data.zip", resolution=c.img_resolution)}
        path.write_bytes(pickle.dumps(data, protocol=protocol))


def randomised(G):
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.3 if "mapping" not in name else 10.0).add_(1.0 if "affine" in name else 0.0)
    return G


# ----------------------------------------------------------------------------
# NVlabs pickle -> our generator equals the NVlabs-style reference forward, and module_src never runs.


@pytest.mark.parametrize("res,ada_style,protocol", [(32, True, 4), (64, False, 2)])
def test_nvlabs_pickle_parity(tmp_path, monkeypatch, res, ada_style, protocol):
    marker = tmp_path / "module_src_ran"
    G = randomised(make_tiny_generator(res, seed=3))
    write_nvlabs_pkl(tmp_path / "net.pkl", G, monkeypatch, marker, ada_style, protocol)
    assert "torch_utils.persistence" not in sys.modules
    Gc = load_foreign_generator(tmp_path / "net.pkl")
    assert not marker.exists()
    assert Gc.cfg == G.cfg and not any(p.requires_grad for p in Gc.parameters())
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    ref = nvlabs_forward({k: v.float() for k, v in G.state_dict().items()}, z, 0.7, G.synthesis.num_blocks,
                         G.cfg.mapping_layers)
    torch.testing.assert_close(Gc(z, truncation_psi=0.7, noise_mode="const"), ref, atol=1e-4, rtol=1e-4)


def test_nvlabs_config_errors(tmp_path, monkeypatch):
    G = make_tiny_generator(32)
    write_nvlabs_pkl(tmp_path / "cond.pkl", G, monkeypatch, tmp_path / "m", c_dim=10)
    with pytest.raises(ValueError, match="c_dim"):
        load_foreign_generator(tmp_path / "cond.pkl")
    write_nvlabs_pkl(tmp_path / "wrongres.pkl", G, monkeypatch, tmp_path / "m", img_resolution=64)
    with pytest.raises(KeyError, match="missing key 'synthesis.b64"):
        load_foreign_generator(tmp_path / "wrongres.pkl")


def test_stylegan3_generator_is_rejected_clearly(tmp_path, monkeypatch):
    G = torch.nn.Module()
    G.mapping, G.synthesis = torch.nn.Module(), torch.nn.Module()
    G.synthesis.input = torch.nn.Linear(2, 2)
    with monkeypatch.context() as mp:
        fake_modules(mp)
        (tmp_path / "sg3.pkl").write_bytes(pickle.dumps({"G_ema": to_record(G, tmp_path / "m")}))
    with pytest.raises(ValueError, match="StyleGAN3"):
        load_foreign_generator(tmp_path / "sg3.pkl")


# ----------------------------------------------------------------------------
# Malicious pickles are refused before anything runs.


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("kind", ["system", "exec", "nested"])
def test_malicious_pickle_refused(tmp_path, monkeypatch, kind):
    marker = tmp_path / "pwned"
    if kind == "system":
        payload, name = {"G_ema": Evil(os.system, f"touch {marker}")}, "posix.system"
    elif kind == "exec":
        payload, name = [Evil(builtins.exec, f"open({str(marker)!r}, 'w')")], "builtins.exec"
    else:
        with monkeypatch.context() as mp:
            fake_modules(mp)
            rec = Record("Generator", {"_init_kwargs": {"evil": Evil(os.system, f"touch {marker}")}}, marker)
            payload, name = {"G_ema": pickle.dumps(rec)}, "posix.system"
        (tmp_path / "evil.pkl").write_bytes(payload["G_ema"])
    if kind != "nested":
        (tmp_path / "evil.pkl").write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match=name.replace(".", r"\.")):
        load_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()


def _build_pickle(target_global: bytes, attr: str) -> bytes:
    """GLOBAL target; BUILD with slot state {attr: _codecs.encode} (protocol 2 opcodes written by hand)."""
    name = attr.encode()
    return (b"\x80\x02c" + target_global + b"\nN}X" + len(name).to_bytes(4, "little") + name
            + b"c_codecs\nencode\ns\x86b.")


@pytest.mark.parametrize("target", [b"dnnlib.util\nEasyDict", b"_codecs\nencode", b"collections\nOrderedDict"])
def test_build_on_allowed_classes_and_functions_is_refused(tmp_path, monkeypatch, target):
    # Without the BUILD restriction this pickle replaces e.g. EasyDict.__getattr__ for the whole process.
    from sgilo.generator import safe_pickle as sp
    module, name = target.decode().split("\n")
    obj = sp.ALLOWED[(module, name)]
    before = obj.__dict__.get("__getattr__")
    monkeypatch.setattr(obj, "__getattr__", before, raising=False) if before is not None else None
    (tmp_path / "build.pkl").write_bytes(_build_pickle(target, "__getattr__"))
    with pytest.raises(UnsafePickleError, match="BUILD is only allowed on objects constructed by this pickle"):
        load_pickle(tmp_path / "build.pkl")
    assert obj.__dict__.get("__getattr__") is before
    assert sp.EasyDict(a=1).a == 1


def test_build_on_objects_the_pickle_made_still_works(tmp_path):
    # numpy arrays and dtypes (REDUCE then BUILD/__setstate__) and plain objects rebuilt by copyreg are legitimate.
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    for protocol in (2, 4):
        (tmp_path / "a.pkl").write_bytes(pickle.dumps({"a": arr, "d": np.dtype(">i2")}, protocol=protocol))
        out = load_pickle(tmp_path / "a.pkl")
        assert np.array_equal(out["a"], arr) and out["d"] == np.dtype(">i2")
    assert np.dtype("float32").byteorder == "="                     # the shared dtype object was not touched


# ----------------------------------------------------------------------------
# rosinality state dicts (built here with rosinality names) -> our generator equals the rosinality-style forward.


ROS_CHANNELS = {4: 32, 8: 32, 16: 16, 32: 8}


def make_rosinality_sd(chans=ROS_CHANNELS, dim=16, n_mlp=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rn = (lambda *s, std=1.0: torch.randn(*s, generator=g) * std)
    sd = {}
    for i in range(1, n_mlp + 1):
        sd[f"style.{i}.weight"], sd[f"style.{i}.bias"] = rn(dim, dim, std=100.0), rn(dim, std=10.0)
    sd["input.input"] = rn(1, chans[4], 4, 4)

    def styled(pre, cin, cout, up):
        sd[pre + ".conv.weight"] = rn(1, cout, cin, 3, 3)
        sd[pre + ".conv.modulation.weight"], sd[pre + ".conv.modulation.bias"] = rn(cin, dim), 1 + rn(cin, std=0.2)
        if up:
            sd[pre + ".conv.blur.kernel"] = fir4() * 4
        sd[pre + ".noise.weight"], sd[pre + ".activate.bias"] = rn(1, std=0.2), rn(cout, std=0.2)

    def to_rgb(pre, cin, up):
        sd[pre + ".conv.weight"] = rn(1, 3, cin, 1, 1)
        sd[pre + ".conv.modulation.weight"], sd[pre + ".conv.modulation.bias"] = rn(cin, dim), 1 + rn(cin, std=0.2)
        sd[pre + ".bias"] = rn(1, 3, 1, 1, std=0.2)
        if up:
            sd[pre + ".upsample.kernel"] = fir4() * 4

    res = sorted(chans)
    styled("conv1", chans[4], chans[4], False)
    to_rgb("to_rgb1", chans[4], False)
    sd["noises.noise_0"] = rn(1, 1, 4, 4)
    for i, r in enumerate(res[1:]):
        styled(f"convs.{2 * i}", chans[r // 2], chans[r], True)
        styled(f"convs.{2 * i + 1}", chans[r], chans[r], False)
        to_rgb(f"to_rgbs.{i}", chans[r], True)
        sd[f"noises.noise_{2 * i + 1}"], sd[f"noises.noise_{2 * i + 2}"] = rn(1, 1, r, r), rn(1, 1, r, r)
    return sd


def test_rosinality_parity(tmp_path):
    sd, latent_avg = make_rosinality_sd(), torch.randn(16)
    torch.save({"g_ema": sd, "latent_avg": latent_avg, "args": argparse.Namespace(size=32)}, tmp_path / "ros.pt")
    G = load_foreign_generator(tmp_path / "ros.pt")
    c = G.cfg
    got = (c.img_resolution, c.z_dim, c.w_dim, c.mapping_layers, c.channel_base, c.channel_max)
    assert got == (32, 16, 16, 3, 256, 32)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    ref = rosinality_forward(sd, z, 0.7, latent_avg, n_up=3, n_mlp=3)
    torch.testing.assert_close(G(z, truncation_psi=0.7, noise_mode="const"), ref, atol=1e-4, rtol=1e-4)


def test_rosinality_without_latent_avg_estimates_w_avg(tmp_path):
    sd = make_rosinality_sd()
    torch.save({"g_ema": sd}, tmp_path / "train.pt")
    G = load_foreign_generator(tmp_path / "train.pt")
    z = torch.randn(20000, 16, generator=torch.Generator().manual_seed(5))
    w = ref_mapping(z, [(sd[f"style.{i}.weight"], sd[f"style.{i}.bias"]) for i in range(1, 4)], 0.01)
    torch.testing.assert_close(G.mapping.w_avg, w.mean(0), atol=0.05 * w.std(0).max().item(), rtol=0)


@pytest.mark.parametrize("edit,match", [
    (lambda sd: sd.update({"convs.0.extra.weight": torch.zeros(1)}), "unmapped key 'convs.0.extra.weight'"),
    (lambda sd: sd.update({"convs.1.activate.bias": torch.zeros(5)}), "convs.1.activate.bias"),
    (lambda sd: sd.update({"noises.noise_9": torch.zeros(1, 1, 4, 4)}), "noises.noise_9"),
    (lambda sd: sd.update({"to_rgbs.0.upsample.kernel": torch.ones(4, 4)}), "to_rgbs.0.upsample.kernel"),
    (lambda sd: sd.pop("convs.3.noise.weight"), "missing key 'synthesis.b16.conv1.noise_strength'"),
])
def test_rosinality_bad_keys(tmp_path, edit, match):
    sd = make_rosinality_sd()
    edit(sd)
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(16)}, tmp_path / "bad.pt")
    with pytest.raises((KeyError, ValueError), match=match):
        load_foreign_generator(tmp_path / "bad.pt")


def test_rosinality_channels_must_fit_formula():
    with pytest.raises(ValueError, match="channel_base"):
        rosinality_config(make_rosinality_sd({4: 32, 8: 8, 16: 16, 32: 8}))


def test_rosinality_malicious_pt_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"g_ema": Evil(os.system, f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError, match="weights_only"):
        load_foreign_generator(tmp_path / "evil.pt")
    assert not marker.exists()


# ----------------------------------------------------------------------------
# `sgilo convert` end to end.


def test_cli_convert_both_formats(tmp_path, monkeypatch):
    G = randomised(make_tiny_generator(32, seed=4))
    write_nvlabs_pkl(tmp_path / "nv.pkl", G, monkeypatch, tmp_path / "m")
    torch.save({"g_ema": make_rosinality_sd(), "latent_avg": torch.zeros(16)}, tmp_path / "ros.pt")
    runner = CliRunner()
    r1 = runner.invoke(main, ["convert", str(tmp_path / "nv.pkl"), str(tmp_path / "out" / "nv"),
                              "--fit-samples", "512"])
    r2 = runner.invoke(main, ["convert", str(tmp_path / "ros.pt"), str(tmp_path / "ros.safetensors"), "--no-fit"])
    assert r1.exit_code == 0 and r2.exit_code == 0, (r1.output, r2.output)
    assert "nvlabs" in r1.output and "rosinality" in r2.output
    Gn, fit_n = load_generator(tmp_path / "out" / "nv")
    Gr, fit_r = load_generator(tmp_path / "ros")
    assert fit_n is not None and fit_r is None and fit_n.mu.shape == (G.w_dim,)
    z = torch.randn(2, G.z_dim)
    assert torch.equal(Gn(z), G(z))
    assert Gr.img_resolution == 32


def test_cli_convert_rejects_malicious(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": Evil(os.system, f"touch {marker}")}))
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "evil.pkl"), str(tmp_path / "out")])
    assert result.exit_code != 0 and not marker.exists()
    assert "posix.system" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()
