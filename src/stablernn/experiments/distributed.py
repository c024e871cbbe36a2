"""Data-parallel training with ``torch.distributed`` (DDP), launched by ``torchrun``.

``torchrun --nproc_per_node N -m stablernn train ...`` starts N processes; each sets up the
process group from the environment torchrun provides (backend NCCL on GPUs, gloo on CPUs). All
ranks draw the same shuffled order; each takes its share of every global batch
(``batch_size`` stays the global batch), and DDP averages the gradients, so N processes train
the same model as one process on the same global batch. Only rank 0 writes the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch (contiguous, sizes differ by at most one)."""
        return indices.tensor_split(self.world_size)[self.rank]

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.item()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device: torch.device) -> Context:
    """Join the process group when launched by torchrun; a one-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Context(dist.get_rank(), dist.get_world_size())


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
