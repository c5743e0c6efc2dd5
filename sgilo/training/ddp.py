"""Process-group set-up for `torchrun` data-parallel training (gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist


# ----------------------------------------------------------------------------
# Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).


def init_from_env() -> tuple[int, int, torch.device]:
    """Returns (rank, world size, device). Single process when WORLD_SIZE is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and os.environ.get("SGILO_FORCE_CPU", "") != "1"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


# ----------------------------------------------------------------------------
# Log INFO on rank 0 only, so several processes do not repeat every line.


def configure_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")


# ----------------------------------------------------------------------------
# Synchronise all processes (no-op for one process).


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ----------------------------------------------------------------------------
# Leave the process group if we joined one.


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
