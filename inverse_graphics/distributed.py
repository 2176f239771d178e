"""Data-parallel training with torch.distributed, as torchrun starts it.

`torchrun --nproc_per_node N` (and its multi-node rendezvous options) sets RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT for every process; `process_group()` joins the group they describe
(NCCL when the processes train on CUDA, gloo on CPU). Without them it is one process and
nothing changes. The trainers (training.train_loop) wrap the model in DistributedDataParallel,
give every process its own share of the data (a DistributedSampler over a pool, or its own
prior samples seeded by rank), agree on when to stop or skip a step, and let only rank 0 write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"  # where the collectives' tensors live (NCCL needs them on the GPU)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, history, figures and logs."""
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """Whether any process says flag (every process must call it at the same point)."""
        if not self.active:
            return bool(flag)
        value = torch.tensor([int(bool(flag))], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def max(self, value: float) -> float:
        """The largest of every process's value (every process must call it at the same point)."""
        if not self.active:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather(self, value) -> list:
        """Every process's value (any picklable object), in rank order, on every process."""
        if not self.active:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def process_group(device: str = "cpu") -> ProcessGroup:
    """The group torchrun's environment describes, joined once (gloo on CPU, NCCL on CUDA); a
    single process when WORLD_SIZE is unset or 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return current()


def current() -> ProcessGroup:
    """This process's place, if the group is already joined (else a single process)."""
    if dist.is_available() and dist.is_initialized():
        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        return ProcessGroup(dist.get_rank(), dist.get_world_size(), device)
    return ProcessGroup()
