"""Process-group helpers: torchrun environment, ranks, gather / broadcast, reductions.

With NCCL, object collectives need the current CUDA device set (init_distributed does it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """This process's place in the job: global rank, number of processes, rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    NCCL on CUDA (each rank on GPU LOCAL_RANK), gloo on CPU. Without torchrun (WORLD_SIZE unset
    or 1) no process group is made.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for but CUDA is not available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank, world_size, local_rank)


def device_of(info: DistInfo, device: str) -> str:
    """This rank's device: cuda -> cuda:LOCAL_RANK, anything else as it is."""
    if device == "cuda":
        return f"cuda:{info.local_rank % torch.cuda.device_count()}"
    return device


def is_distributed() -> bool:
    """True when a process group with more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every process's `obj` on rank 0, in rank order; None on the other ranks."""
    if not is_distributed():
        return [obj]
    rank = dist.get_rank()
    parts: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, parts, dst=0)
    return parts


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait for every process (nothing to wait for in one process)."""
    if get_world_size() > 1:
        dist.barrier()


def reduce_mean(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """The mean over processes of scalar tensors (one collective for all of them)."""
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in keys])
    if get_world_size() > 1:
        dist.all_reduce(stacked)
        stacked /= get_world_size()
    return dict(zip(keys, stacked.tolist(), strict=True))


def cleanup() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
