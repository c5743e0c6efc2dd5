"""Shape checks at public tensor boundaries (stylegan2-ada `misc.assert_shape` idea) and time broadcasting."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


# ----------------------------------------------------------------------------
# Check that `x` has the given shape; `None` entries match any size.


def assert_shape(x: Tensor, shape: Sequence[int | None], name: str = "tensor") -> None:
    """Raise ``ValueError`` naming expected and received shapes when ``x`` does not match ``shape``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != len(shape):
        raise ValueError(f"{name}: expected {len(shape)} dimensions {_fmt(shape)}, got shape {tuple(x.shape)}")
    for idx, (size, ref) in enumerate(zip(x.shape, shape, strict=True)):
        if ref is not None and size != ref:
            raise ValueError(f"{name}: wrong size for dimension {idx}: got {size}, expected {ref} "
                             f"(expected {_fmt(shape)}, got {tuple(x.shape)})")


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


# ----------------------------------------------------------------------------
# Append trailing singleton dims so a per-sample vector broadcasts against `ndim`-D tensors.


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """``t`` of shape [B] (or scalar) → [B, 1, ..., 1] with ``ndim`` dimensions."""
    if t.ndim > ndim:
        raise ValueError(f"append_dims: input has {t.ndim} dims, more than the target {ndim}")
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))
