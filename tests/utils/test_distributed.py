"""The ranks' weight check: bit checksums, and two gloo processes that agree after DDP steps and
are caught, naming the parameter, once one rank's weights move by one ulp."""

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from detection.utils.distributed import RanksDivergedError, check_ranks_agree, tensor_checksum


def test_checksum_sees_one_ulp_and_ignores_layout_and_order():
    x = torch.randn(2, 3, 5, 7)
    base = tensor_checksum(x)
    assert base.dtype == torch.int64 and base.dim() == 0
    # the same values in another memory layout, or summed in another order: the same checksum
    assert tensor_checksum(x.to(memory_format=torch.channels_last)) == base
    assert tensor_checksum(x.flatten().flip(0)) == base
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        y = x.to(dtype)
        z = y.clone()
        z.view(-1)[17] = torch.nextafter(z.view(-1)[17], torch.tensor(float("inf"), dtype=dtype))
        assert tensor_checksum(z) != tensor_checksum(y), dtype
    assert tensor_checksum(torch.tensor([True, False, True])) == 2


def test_one_process_has_nothing_to_compare():
    model = nn.Linear(3, 2)
    assert check_ranks_agree(model.named_parameters()) == 2


def _train_then_perturb(rank: int, init_file: str, out: str) -> None:
    """Rank `rank` of 2: three DDP steps on its own data, check; then rank 1's last bias moves
    by one ulp, check again. Each outcome is written to out/rank<r>_<phase>.txt."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # equal initial weights
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        ddp = nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        data = torch.Generator().manual_seed(rank)  # each rank its own shard
        for _ in range(3):
            optimizer.zero_grad()
            ddp(torch.randn(5, 4, generator=data)).square().mean().backward()
            optimizer.step()
        for phase in ("trained", "perturbed"):
            if phase == "perturbed" and rank == 1:
                with torch.no_grad():
                    model[2].bias[1] = torch.nextafter(model[2].bias[1], torch.tensor(1e9))
            try:
                outcome = f"ok {check_ranks_agree(model.named_parameters(), 'after step 3')}"
            except RanksDivergedError as e:
                outcome = f"error {e}"
            Path(out, f"rank{rank}_{phase}.txt").write_text(outcome)
        # both ranks are done with the group before either tears it down: a rank whose peer
        # has already closed its gloo connections can abort in the teardown (seen once under
        # load: "terminate called without an active exception", SIGABRT)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_agree_after_ddp_and_one_ulp_apart_is_caught(tmp_path):
    """About 10 s: two spawned processes import torch."""
    mp.spawn(_train_then_perturb, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        # DDP averaged the different gradients of the two shards: the ranks agree
        assert (tmp_path / f"rank{rank}_trained.txt").read_text() == "ok 4"
        # both ranks raise (none is left waiting), with the parameter and the odd rank named
        error = (tmp_path / f"rank{rank}_perturbed.txt").read_text()
        assert error.startswith("error the processes hold different weights after step 3: "), error
        assert "'2.bias' (2,) on rank(s) [1] differs from rank 0's (1 of 4 tensors differ)" in error
