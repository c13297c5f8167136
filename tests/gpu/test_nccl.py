"""Two processes, one GPU each, under torchrun with NCCL: the ranks end training with
bit-identical weights (and the trainer's own rank check, an NCCL all-gather, passes at every
checkpoint). Skipped without CUDA (conftest) or with fewer than 2 GPUs."""

import os

import pytest
import torch
from gpu_helpers import load
from helpers import ROOT, free_port, run_tool

# tools/train.py, plus each rank's final weights and device
TRAIN_AND_DUMP = """
import sys
from pathlib import Path

import torch

from detection.engine import trainer
from detection.cli.train import main

dump, argv = Path(sys.argv[1]), sys.argv[2:]
train = trainer.Trainer.train


def train_and_dump(self):
    result = train(self)
    device = str(next(self.model.parameters()).device)
    state = {"device": device, "model": self.model.state_dict()}
    torch.save(state, dump / f"final_rank{self.info.rank}.pth")
    return result


trainer.Trainer.train = train_and_dump
sys.exit(main(argv))
"""


def test_two_gpu_nccl_training_ends_with_equal_weights(tiny_config, tmp_path):
    gpus = torch.cuda.device_count()
    if gpus < 2:
        pytest.skip(f"the NCCL run needs 2 GPUs (one per process); this machine has {gpus}")
    path, out = tiny_config
    script = tmp_path / "train_and_dump.py"
    script.write_text(TRAIN_AND_DUMP)
    port = free_port()
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
              "127.0.0.1", "--master_port", port]  # fmt: skip
    run_tool(
        [*launch, script, tmp_path, "--config", path, "--device", "cuda", "solver.max_iter=6"],
        env_extra={"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        timeout=300,
    )
    ranks = [load(tmp_path / f"final_rank{r}.pth") for r in (0, 1)]
    assert [r["device"] for r in ranks] == ["cuda:0", "cuda:1"]
    saved = load(out / "model_final.pth")
    assert saved["iteration"] == 6
    initial = load(out / "model_0000002.pth")["model"]
    assert any(not torch.equal(initial[k], saved["model"][k]) for k in initial)  # it trained
    for k, v in ranks[0]["model"].items():
        assert torch.equal(ranks[1]["model"][k], v), f"the ranks differ in {k}"
        assert torch.equal(saved["model"][k], v), k
