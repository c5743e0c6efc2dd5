"""The output of every solver (CSGM, ILO, SGILO — Daras et al., ICML 2022): one typed dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from sgilo.generator.split import IntermediateState


# ----------------------------------------------------------------------------
# Result of `solve(y, operator, G, ...)`.


@dataclass
class Result:
    """Reconstruction and, for samplers, posterior samples.

    Shapes:
        x_hat: [B, C, H, W] mean image (the single output for CSGM / ILO).
        samples: [K, B, C, H, W] one image per chain, or None for point estimators.
        outputs: [K, B, C, H, W] every chain's / restart's final image (SGILO: the samples; CSGM/ILO: the R restarts,
            x_hat being the one with the lowest measurement loss), or None.
        std: [B, C, H, W] per-pixel std over the K samples, or None.
        z: [B, L, D] or [K·B, L, D] (chain-major: row c·B + b) final Gaussianised w+ codes.
        state: final `IntermediateState` (detached) — with `tail` it regenerates the samples; saved to continue a run.
        traces: 'data' [T, K, B] data-term values per step, 'pixels' [T, K, B, 4] pixel summaries, 'round' [T].
        seconds_per_round: wall time of each round.
        diagnostics: 'nfe' (generator-tail evaluations per image, `sgilo.solvers.rounds`), 'final_data_term' per
            row, 'stopped' (one line when a blow-up or non-finite iterate ended the run), 'notes' (logged lines),
            R̂/ESS and 'h_move' (SGILO).
    """

    x_hat: Tensor
    samples: Tensor | None
    std: Tensor | None
    z: Tensor
    state: IntermediateState
    traces: dict[str, Tensor]
    seconds_per_round: list[float]
    config: Any
    diagnostics: dict = field(default_factory=dict)
    outputs: Tensor | None = None

    def __post_init__(self) -> None:
        if self.outputs is None and self.samples is not None:
            self.outputs = self.samples


# ----------------------------------------------------------------------------
# Saved latents of a run (latents.safetensors), enough to continue it exactly where it stopped.


@dataclass(frozen=True)
class Latents:
    """The final iterate of a run: split layer k, Gaussianised codes z, and the state pieces not derived from z.

    Shapes: z [N, L, D] with N = B (CSGM/ILO) or K·B (SGILO, chain-major); h [N, C, r, r] or None (k = 0);
    skip [N, 3, r, r] or None; noises: one [N, 1, r_i, r_i] map per noise layer.
    """

    k: int
    z: Tensor
    h: Tensor | None
    skip: Tensor | None
    noises: tuple[Tensor, ...]

    @staticmethod
    def from_result(result: Result) -> Latents:
        st = result.state
        return Latents(k=st.k, z=result.z.detach(), h=st.h, skip=st.skip, noises=tuple(st.noises))
