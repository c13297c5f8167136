"""Two processes under torchrun (gloo on CPU): --resume continues a DDP run exactly, and the
trainer's rank check stops a run whose ranks hold different weights, naming the parameter."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import ROOT, read_jsonl, run_tool, torchrun

PYTHONPATH = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def losses(out: Path) -> dict[int, float]:
    return {r["iteration"]: r["total_loss"] for r in read_jsonl(out / "metrics.jsonl")}


@pytest.mark.slow  # two torchrun launches of 2 processes: 40-60 s on 2 busy cores
def test_two_process_resume_is_exact(tiny_config, tmp_path):
    """A 2-process run to iteration 4 (checkpoint at 2) against a 2-process run resumed from that
    checkpoint, copied into a fresh directory as the only one there: what a run killed after
    its checkpoint at iteration 2 leaves. Fresh processes must rebuild everything from the
    file: weights, momentum, schedule, both ranks' RNG states and data shards."""
    path, _ = tiny_config
    tool = ROOT / "tools/train.py"
    common = [tool, "--config", path, "--device", "cpu", "solver.max_iter=4"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run_tool(torchrun(*common, "--output-dir", full), env_extra=PYTHONPATH)
    resumed.mkdir()
    shutil.copy(full / "model_0000002.pth", resumed)
    (resumed / "last_checkpoint").write_text("model_0000002.pth\n")
    r = run_tool(torchrun(*common, "--output-dir", resumed, "--resume"), env_extra=PYTHONPATH)
    assert "resumed from" in r.stderr and "at iteration 2" in r.stderr

    a = torch.load(full / "model_final.pth", weights_only=True)
    b = torch.load(resumed / "model_final.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 4
    assert a["model"].keys() == b["model"].keys()
    start = torch.load(full / "model_0000002.pth", weights_only=True)["model"]
    assert any(not torch.equal(start[k], a["model"][k]) for k in start)  # iterations 3-4 trained
    # bit-identical: gloo sums the two ranks' gradients in a fixed order, one thread per rank,
    # and every random draw is restored, so nothing is left to differ
    for k, v in a["model"].items():
        assert torch.equal(b["model"][k], v), f"{k} differs after the resume"
    momentum_a, momentum_b = (c["optimizer"]["state"].values() for c in (a, b))
    for p, q in zip(momentum_a, momentum_b, strict=True):
        assert torch.equal(p["momentum_buffer"], q["momentum_buffer"])
    assert len(a["rng"]) == len(b["rng"]) == 2
    for x, y in zip(a["rng"], b["rng"], strict=True):
        assert torch.equal(x["torch"], y["torch"])  # both ranks' generators where they would be
    # the same batches: the losses of iterations 3 and 4 are the same numbers
    la, lb = losses(full), losses(resumed)
    assert sorted(lb) == [3, 4] and all(lb[i] == la[i] for i in (3, 4)), (la, lb)


# tools/train.py, where rank 1 moves one weight by one ulp just before the checkpoint of
# iteration 2: DDP never re-synchronises parameters, so the ranks stay apart unless checked
PERTURB_RANK_1 = """
import sys

import torch

from detection.engine import trainer
from detection.cli.train import main

save = trainer.Trainer.save


def perturbed_save(self, name, **kwargs):
    if self.info.rank == 1 and self.iteration == 2:
        with torch.no_grad():
            p = dict(self.model.named_parameters())[sys.argv[1]]
            p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(1e9))
    return save(self, name, **kwargs)


trainer.Trainer.save = perturbed_save
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow  # one torchrun launch of 2 processes: 20-30 s on 2 busy cores
def test_ranks_with_different_weights_stop_the_run(tiny_config, tmp_path):
    path, out = tiny_config
    script = tmp_path / "perturb_rank_1.py"
    script.write_text(PERTURB_RANK_1)
    name = "roi_heads.predictor.cls_score.bias"
    r = run_tool(
        torchrun(script, name, "--config", path, "--device", "cpu", "solver.max_iter=4"),
        env_extra=PYTHONPATH,
        check=False,
    )
    assert r.returncode != 0
    assert (
        "training stopped: the processes hold different weights at iteration 2: "
        f"'{name}' (6,) on rank(s) [1] differs from rank 0's (1 of "
    ) in r.stderr, r.stderr[-3000:]
    assert "Not saving model_0000002.pth." in r.stderr
    # the check ran before anything was written: no checkpoint holds the diverged weights
    assert not list(out.glob("model_*.pth")) and not (out / "last_checkpoint").exists()
