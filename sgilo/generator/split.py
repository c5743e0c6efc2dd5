"""Splitting the synthesis network at block k: G = G_tail,k ∘ G_head,k (ILO, Daras et al. 2021, Sec. 3).

`head(synthesis, ws, k)` runs blocks 0..k-1 and returns an `IntermediateState`: the features h_k entering block k, the
RGB skip image accumulated by blocks < k, the w+ rows and the noise maps. `tail(synthesis, state)` runs blocks k..end.
With ``carry_skip=True`` (default) ``tail(head(ws, k)) == synthesis(ws)`` exactly for every k.

``carry_skip=False`` reproduces the reference implementations (sgilo and ilo), which start the tail with an empty skip
image and so silently drop the low-resolution toRGB contributions of blocks < k
(docs/original-code.md#splitting-the-generator, a bug: the image jumps at every round boundary). It exists for parity
with published numbers only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from sgilo.generator.stylegan2 import SynthesisNetwork
from sgilo.utils.shapes import assert_shape


# ----------------------------------------------------------------------------
# The state at the cut: everything the tail needs.


@dataclass
class IntermediateState:
    """Intermediate state of the synthesis network before block ``k``.

    Shapes:
        h: [B, C_{k-1}, r_{k-1}, r_{k-1}] features entering block k (None when k = 0: block 0 uses the learned const).
        skip: [B, 3, r_{k-1}, r_{k-1}] RGB image accumulated by blocks < k (None when k = 0 or carry_skip is off).
        ws: [B, num_ws, w_dim] w+ rows (all of them; blocks >= k read rows 2k-1 onwards).
        noises: per-layer noise maps [B|1, 1, r, r] (or None) for every layer, in flat order.
    """

    k: int
    h: Tensor | None
    skip: Tensor | None
    ws: Tensor
    noises: list[Tensor | None]

    def detach(self) -> IntermediateState:
        d = (lambda t: None if t is None else t.detach())
        return replace(self, h=d(self.h), skip=d(self.skip), ws=self.ws.detach(), noises=[d(n) for n in self.noises])


# ----------------------------------------------------------------------------
# Check that k is a valid cut point (0 = before the first block, num_blocks = after the last).


def _check_k(synthesis: SynthesisNetwork, k: int) -> None:
    if not isinstance(k, int) or k < 0 or k > synthesis.num_blocks:
        raise ValueError(f"split layer k must be an integer in 0..{synthesis.num_blocks}, got {k!r}")


# ----------------------------------------------------------------------------
# G_head,k: blocks 0..k-1.


def head(synthesis: SynthesisNetwork, ws: Tensor, k: int, noises: list[Tensor | None] | None = None,
         carry_skip: bool = True, noise_mode: str = "const", generator: torch.Generator | None = None) -> IntermediateState:
    """Run blocks 0..k-1 of the synthesis network.

    Shapes: ws [B, num_ws, w_dim]. Returns the `IntermediateState` before block k.
    """
    _check_k(synthesis, k)
    assert_shape(ws, [None, synthesis.num_ws, synthesis.w_dim], "ws")
    if noises is None:
        noises = synthesis.make_noises(ws.shape[0], noise_mode, generator, ws.device)
    h, skip = synthesis.run_blocks(ws, None, None, noises, 0, k)
    return IntermediateState(k=k, h=h, skip=skip if carry_skip else None, ws=ws, noises=list(noises))


# ----------------------------------------------------------------------------
# G_tail,k: blocks k..end; returns the image.


def tail(synthesis: SynthesisNetwork, state: IntermediateState) -> Tensor:
    """Run blocks k..end from ``state``. Returns the image [B, C, R, R]."""
    _check_k(synthesis, state.k)
    if state.k == synthesis.num_blocks:
        if state.skip is None:
            raise ValueError("tail at k = num_blocks needs the skip image (carry_skip=True)")
        return state.skip
    if state.k > 0:
        c, r = synthesis.block(state.k).in_channels, synthesis.block_resolutions[state.k] // 2
        assert_shape(state.h, [state.ws.shape[0], c, r, r], f"h_{state.k}")
    _, img = synthesis.run_blocks(state.ws, state.h, state.skip, state.noises, state.k, synthesis.num_blocks)
    return img


# ----------------------------------------------------------------------------
# Advance a state by one block (ILO's move from round k to round k+1, without an image jump).


def advance(synthesis: SynthesisNetwork, state: IntermediateState, carry_skip: bool = True) -> IntermediateState:
    """Apply block k to the state, giving the state before block k+1 (same ws and noises)."""
    _check_k(synthesis, state.k + 1)
    h, skip = synthesis.run_blocks(state.ws, state.h, state.skip, state.noises, state.k, state.k + 1)
    return IntermediateState(k=state.k + 1, h=h, skip=skip if carry_skip else None, ws=state.ws, noises=state.noises)


# ----------------------------------------------------------------------------
# Shape of h_k for a given cut (None for k = 0).


def h_shape(synthesis: SynthesisNetwork, k: int) -> tuple[int, int, int] | None:
    _check_k(synthesis, k)
    if k == 0:
        return None
    r = synthesis.block_resolutions[k - 1]
    return (synthesis.cfg.channels(r), r, r)
