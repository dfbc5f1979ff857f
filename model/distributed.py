"""Multi-GPU through torchrun: the process group from its environment, and this process's place in it.

Launch ``torchrun --nproc_per_node N -m grit_pipeline.cli train ...``; torchrun sets RANK,
WORLD_SIZE and LOCAL_RANK. Without them (a plain ``grit train``) this is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    """This process's rank among ``world`` processes, and its GPU on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 logs and writes checkpoints."""
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")


def init_distributed() -> Dist:
    """torchrun's environment -> a process group (NCCL on GPU, gloo on CPU); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(int(os.environ["RANK"]), world, local)


def wrap(model: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there are several processes, else ``model``."""
    if dist.world == 1:
        return model
    device_ids = [dist.local_rank] if torch.cuda.is_available() else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
