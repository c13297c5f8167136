"""Process-group helpers: torchrun environment, ranks, gather / broadcast, reductions.

With NCCL, object collectives need the current CUDA device set (init_distributed does it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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


class RanksDivergedError(RuntimeError):
    """The processes of a job hold different weights where they must hold the same."""


# the integer type of each float type's width: a float tensor's bits summed as integers
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def tensor_checksum(tensor: torch.Tensor) -> torch.Tensor:
    """A 0-dim int64 checksum of `tensor`'s bits, on its device.

    The values are read as integers of their width and summed in int64: integer addition is
    exact and associative, so the checksum does not depend on the reduction order (thread
    count, kernel, device) and changes when any single element changes by as little as one ulp,
    which a float sum can miss or produce by rounding alone.
    """
    t = tensor.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    elif t.is_floating_point():
        t = t.view(_BITS[t.element_size()])  # same width: any strides (channels_last) allowed
    return t.sum(dtype=torch.int64)


def check_ranks_agree(named_tensors: Iterable[tuple[str, torch.Tensor]], where: str = "") -> int:
    """Check that every process holds bit-identical tensors (DDP's promise for parameters).

    Collective: every rank must call it with the same names in the same order. Each rank's
    checksums (tensor_checksum, one int64 per tensor) are all-gathered, so every rank compares
    and every rank raises the same RanksDivergedError, naming the first tensor that differs and
    the ranks that disagree with rank 0; none is left waiting in a later collective. Without a
    process group there is nothing to compare. Returns the number of tensors checked.
    `where` (e.g. "at iteration 6") goes into the message.
    """
    names, tensors = [], []
    for name, tensor in named_tensors:
        names.append(name)
        tensors.append(tensor)
    if not is_distributed() or not tensors:
        return len(tensors)
    sums = torch.stack([tensor_checksum(t) for t in tensors])
    # NCCL gathers CUDA tensors only, gloo CPU ones: the parameters' device suits both
    parts = [torch.empty_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, sums)
    table = torch.stack(parts).cpu()  # (world_size, tensors): one copy for every comparison
    differs = (table != table[0]).any(dim=0)
    if not differs.any():
        return len(tensors)
    i = int(differs.nonzero()[0])
    ranks = (table[:, i] != table[0, i]).nonzero().flatten().tolist()
    shape = tuple(tensors[i].shape)
    raise RanksDivergedError(
        f"the processes hold different weights{' ' + where if where else ''}: {names[i]!r} "
        f"{shape} on rank(s) {ranks} differs from rank 0's ({int(differs.sum())} of "
        f"{len(names)} tensors differ). DDP keeps the ranks equal only when they start from the "
        "same weights and apply every step together: look for parameter initialisation that "
        "is not seeded alike on every rank, a parameter changed outside the optimizer step, "
        "or a rank that skipped or repeated a step. Resume from a checkpoint written before "
        "the divergence once the cause is fixed."
    )


def cleanup() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
