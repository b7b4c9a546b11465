r"""Training on several GPUs: data parallelism in a few lines.

Data parallelism runs one copy of the model per GPU (a *rank*). Every step each rank
takes its own share of the batch, computes its gradient, and the ranks average their
gradients (an all-reduce) before the optimiser steps, so every copy moves the same way:

    g = (1/W) Σ_r g_r,   g_r = ∇ (1/b) Σ_{i ∈ share r} ℓ_i,   b = B / W

which is the gradient of the mean loss over the whole batch of B, as on one GPU.
PyTorch's ``DistributedDataParallel`` (DDP) does the averaging during ``backward()``.

``torchrun --nproc_per_node=W ...`` starts W processes and tells each who it is through
the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``);
:func:`init_distributed` reads that and joins the group. Without torchrun it does
nothing and everything runs as one process, so the same script runs both ways.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Who this process is: ``rank`` of ``world_size``, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes files; the others stay quiet."""
        return self.rank == 0


def is_distributed() -> bool:
    """True inside an initialised process group (e.g. under torchrun after :func:`init_distributed`)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) when not distributed."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True on rank 0, and always when not distributed."""
    return rank_and_world()[0] == 0


def init_distributed(backend: str | None = None, device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment, if any.

    The backend is NCCL on CUDA and gloo on the CPU (``backend`` overrides); with CUDA
    each process takes GPU ``LOCAL_RANK``. ``device`` ("cpu" or "cuda", e.g. from
    ``COURSE_DEVICE``) chooses between them where both exist (default: CUDA if there is a
    GPU); asking for CUDA without one is a ValueError. Without ``WORLD_SIZE`` in the
    environment (a plain ``python`` run) this returns rank 0 of 1 and starts nothing.
    Calling it again once the group exists just describes it.
    """
    kind = torch.device(device).type if device else None
    if kind not in (None, "cpu", "cuda"):
        raise ValueError(f"training under torchrun runs on 'cpu' or 'cuda', got device {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    cuda = torch.cuda.is_available() and kind != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not is_distributed():
        if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
            here = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu") if kind else None
            return DistInfo(device=here)
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE is set, but this PyTorch build has no torch.distributed")
        if cuda:
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    rank, world = rank_and_world()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    """Leave the process group (a no-op when there is none)."""
    if is_distributed():
        dist.destroy_process_group()
