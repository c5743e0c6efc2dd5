"""Per-sample random streams for the solvers of SGILO (Daras et al., ICML 2022) and its baselines.

Every row of a solver batch (chain c, image b) owns a `torch.Generator`, as EDM's `StackedRandomGenerator` does, so a
chain's trajectory never depends on how many other rows run beside it. Two ways to key the rows:

* per-image seeds (the project rule "a seed per sample"): image b carries its own seed s_b and chain c of it draws from
  the stream ``(s_b, c)`` — independent of the batch size *and* of the image's position in the batch, so a benchmark
  gives identical numbers for any chunking into batches and any number of ranks;
* default (no per-image seeds): the stream of row (c, b) is ``(seed, c, b)``, keyed by position in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


# ----------------------------------------------------------------------------
# A 63-bit seed for row (chain, index) derived from the user seed (numpy SeedSequence hashing, no collisions in practice).


def row_seed(seed: int, chain: int, index: int) -> int:
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(chain), int(index)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# ----------------------------------------------------------------------------
# A 63-bit seed for chain `chain` of an image with its own seed (a 2-word key, so it never equals a row_seed).


def chain_seed(image_seed: int, chain: int) -> int:
    state = np.random.SeedSequence([int(image_seed) & (2**63 - 1), int(chain)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# ----------------------------------------------------------------------------
# One torch.Generator per batch row; draws are concatenated along dim 0.


class StackedGenerator:
    """Per-row generators for a batch laid out chain-major: row ``c·B + b`` is chain c of image b.

    Row c·B + b is seeded from ``chain_seed(image_seeds[b], c)`` when per-image seeds are given, else from
    ``row_seed(seed, c, b)``. Shapes: `randn(shape)` returns [N, *shape] with N = chains · batch.
    """

    def __init__(self, seed: int, chains: int, batch: int, device: torch.device | str = "cpu",
                 image_seeds: Sequence[int] | None = None) -> None:
        if chains < 1 or batch < 1:
            raise ValueError(f"chains and batch must be >= 1, got chains={chains}, batch={batch}")
        if image_seeds is not None and len(image_seeds) != batch:
            raise ValueError(f"seeds: expected one seed per image ({batch}), got {len(image_seeds)}")
        self.seed, self.chains, self.batch = int(seed), int(chains), int(batch)
        self.image_seeds = None if image_seeds is None else [int(s) for s in image_seeds]
        self.device = torch.device(device)
        key = ((lambda c, b: row_seed(seed, c, b)) if image_seeds is None
               else (lambda c, b: chain_seed(self.image_seeds[b], c)))
        self.gens = [torch.Generator(device=self.device).manual_seed(key(c, b))
                     for c in range(chains) for b in range(batch)]

    def __len__(self) -> int:
        return len(self.gens)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        rows = [torch.randn(list(shape), generator=g, device=self.device, dtype=dtype) for g in self.gens]
        return torch.stack(rows)                                          # [N, *shape]

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self.gens):
            raise ValueError(f"randn_like: batch dimension {x.shape[0]} does not match the {len(self.gens)} row generators")
        return self.randn(x.shape[1:], x.dtype).to(x.device)


# ----------------------------------------------------------------------------
# Standard normal noise like x from a stacked generator, a single generator or the global RNG.


def randn_like(x: Tensor, generator: StackedGenerator | torch.Generator | None = None) -> Tensor:
    if isinstance(generator, StackedGenerator):
        return generator.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
