"""Training faults: non-finite losses stop the run before any update and keep the last good
checkpoint; running out of memory names the batch and image sizes it happened at."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT

from detection.config import load_config
from detection.engine.trainer import Trainer
from detection.utils.checkpoint import Checkpointer


def test_non_finite_loss_stops_before_any_update(tiny_config):
    path, out = tiny_config
    trainer = Trainer(load_config(path, ["solver.max_iter=4"]))
    with torch.no_grad():
        trainer.model.roi_heads.predictor.cls_score.bias.fill_(float("nan"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(FloatingPointError, match=r"iteration 1: .*loss_cls=nan.*no update"):
        trainer.train()
    after = trainer.model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        # bit for bit, the injected NaNs included (NaN != NaN for torch.equal)
        torch.testing.assert_close(
            after[k], v, rtol=0, atol=0, equal_nan=True, msg=lambda m, k=k: f"{k}: {m}"
        )
    assert all(p.grad is None for p in trainer.model.parameters()), "a backward pass ran"
    assert not (out / "last_checkpoint").exists()


def test_divergence_keeps_the_last_good_checkpoint(tiny_config):
    path, out = tiny_config
    # a learning rate far too high: a real divergence, not an injected NaN
    cfg = load_config(
        path,
        [
            "solver.max_iter=40",
            "solver.checkpoint_period=1",
            "solver.warmup_iters=0",
            "solver.steps=[]",
            "solver.base_lr=1e6",
        ],
    )
    stop = r"non-finite (loss|weights) at iteration \d+"
    with pytest.raises(FloatingPointError, match=stop) as e:
        Trainer(cfg).train()
    assert "The last good checkpoint" in str(e.value)
    last = Checkpointer(out).last()
    assert last is not None
    ckpt = torch.load(last, weights_only=True)
    for k, v in ckpt["model"].items():
        assert torch.isfinite(v).all(), f"{last} holds non-finite {k}"
    assert int(ckpt["iteration"]) >= 1


# a CPU stand-in for CUDA's out-of-memory: the process may map only a little more memory
# than it has after building the trainer, so the first forward's allocations really fail
OOM = """
import re, resource, sys
from pathlib import Path
from detection.config import load_config
from detection.engine.failures import TrainingError
from detection.engine.trainer import Trainer
trainer = Trainer(load_config(sys.argv[1], sys.argv[2:]))
vm = int(re.search(r"VmSize:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
limit = vm * 1024 + 64 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    trainer.train()
except TrainingError as e:
    print(e)
    sys.exit(3)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="needs /proc and RLIMIT_AS")
def test_out_of_memory_names_batch_and_image_size(tiny_config):
    path, out = tiny_config
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            OOM,
            str(path),
            "input.min_size_train=[800]",
            "input.max_size_train=1333",
            "data.num_workers=0",
        ],
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 3, r.stdout + r.stderr[-3000:]
    assert "out of memory on cpu at iteration 1 with 2 images per process" in r.stdout
    assert "solver.ims_per_batch=2" in r.stdout and "short side [800] (at most 1333)" in r.stdout
    assert not Path(out / "last_checkpoint").exists()
