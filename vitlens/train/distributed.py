"""This process's place in a training job: one process, or one of several started by ``torchrun``."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's rank, the number of processes, and its device; ``torchrun`` sets RANK / WORLD_SIZE /
    LOCAL_RANK."""
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> Dist:
    """Join the torchrun job if there is one (nccl on CUDA, gloo on CPU) and pick this process's device.

    Args:
        device: ``cuda``, ``cpu``...; None: CUDA when available. On CUDA each process takes its LOCAL_RANK's GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank() if world > 1 else 0, world, device)
