"""Process-group set-up for `torchrun` launches (gloo on CPU, NCCL on GPUs); a no-op for a single process."""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist


# ----------------------------------------------------------------------------
# Initialise torch.distributed from the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT).


def init_distributed() -> tuple[int, int]:
    """Returns (rank, world_size); sets up logging on rank 0 only."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    rank = dist.get_rank() if dist.is_initialized() else 0
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    return rank, world
