"""Exact head/tail split of the synthesis network (ILO, Daras et al. 2021): recomposition at every cut point, the
reference code's dropped-skip behaviour (docs/original-code.md#bug-1), `advance`, and which w+ rows the tail reads."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_generator

from sgilo.generator import advance, h_shape, head, tail


def inputs(G, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ws = torch.randn(batch, G.num_ws, G.w_dim, generator=g)            # independent w+ rows
    return ws, G.synthesis.make_noises(batch, "random", generator=g)


def tail_from_empty_skip(syn, h, ws, noises, k):
    """Reference-style tail (sgilo/ilo code): blocks k.. with the RGB skip image starting from nothing."""
    x, img = h, None
    for j in range(k, syn.num_blocks):
        rows = ws[:, 0:2] if j == 0 else ws[:, 2 * j - 1:2 * j + 2]
        layer_noises = noises[0:1] if j == 0 else noises[2 * j - 1:2 * j + 1]
        x, img = syn.block(j)(x, img, rows, layer_noises)
    return img


# ----------------------------------------------------------------------------


@pytest.mark.parametrize("res", [32, 64, 256])
def test_exact_recomposition_every_k(res):
    G = make_tiny_generator(res)
    syn = G.synthesis
    ws, noises = inputs(G)
    ref = syn(ws, noises=noises)
    assert ref.shape == (2, 3, res, res)
    for k in range(syn.num_blocks + 1):
        state = head(syn, ws, k, noises=noises)
        expected = h_shape(syn, k)
        assert (state.h is None) if expected is None else (tuple(state.h.shape) == (2, *expected))
        torch.testing.assert_close(tail(syn, state), ref, atol=1e-6, rtol=0, msg=f"k={k}")


@pytest.mark.parametrize("res", [32, 64])
def test_dropped_skip_reproduces_reference_bug(res):
    G = make_tiny_generator(res)
    syn = G.synthesis
    ws, noises = inputs(G)
    ref = syn(ws, noises=noises)
    torch.testing.assert_close(tail(syn, head(syn, ws, 0, noises=noises, carry_skip=False)), ref)
    for k in range(1, syn.num_blocks):
        state = head(syn, ws, k, noises=noises, carry_skip=False)
        assert state.skip is None
        out = tail(syn, state)
        assert (out - ref).abs().max() > 1e-3, f"k={k}: dropping the skip image should change the output"
        torch.testing.assert_close(out, tail_from_empty_skip(syn, state.h, ws, noises, k), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="skip"):
        tail(syn, head(syn, ws, syn.num_blocks, noises=noises, carry_skip=False))


def test_advance_equals_head_at_next_k():
    G = make_tiny_generator(64)
    syn = G.synthesis
    ws, noises = inputs(G)
    state = head(syn, ws, 0, noises=noises)
    for k in range(syn.num_blocks):
        state = advance(syn, state)
        direct = head(syn, ws, k + 1, noises=noises)
        assert state.k == k + 1
        torch.testing.assert_close(state.h, direct.h, atol=0, rtol=0)
        torch.testing.assert_close(state.skip, direct.skip, atol=0, rtol=0)
    with pytest.raises(ValueError, match="0..5"):
        advance(syn, state)


def test_tail_reads_only_rows_from_2k_minus_1():
    G = make_tiny_generator(32)
    syn = G.synthesis
    ws, noises = inputs(G)
    for k in range(1, syn.num_blocks):
        state = head(syn, ws, k, noises=noises)
        out = tail(syn, state)
        ws2 = ws.clone()
        ws2[:, :2 * k - 1] = 0.0                                      # rows used only by blocks < k
        state.ws = ws2
        torch.testing.assert_close(tail(syn, state), out, atol=0, rtol=0)
        ws2[:, 2 * k - 1] += 1.0                                      # row shared by block k-1's toRGB and block k
        assert not torch.equal(tail(syn, state), out)


def test_gradients_flow_to_intermediate_state_only(tiny_generator):
    syn = tiny_generator.synthesis
    ws, noises = inputs(tiny_generator)
    state = head(syn, ws, 2, noises=noises).detach()
    state.h.requires_grad_(True)
    state.ws.requires_grad_(True)
    tail(syn, state).square().mean().backward()
    assert state.h.grad is not None and state.h.grad.abs().sum() > 0 and state.ws.grad[:, 3:].abs().sum() > 0
    assert all(p.grad is None for p in syn.parameters())


def test_bad_split_point_and_shapes(tiny_generator):
    syn = tiny_generator.synthesis
    ws, noises = inputs(tiny_generator)
    with pytest.raises(ValueError, match="0..4, got 5"):
        head(syn, ws, 5)
    with pytest.raises(ValueError, match="ws"):
        head(syn, ws[:, :3], 1)
    state = head(syn, ws, 2, noises=noises)
    state.h = state.h[:, :, :4]
    with pytest.raises(ValueError, match="h_2"):
        tail(syn, state)
