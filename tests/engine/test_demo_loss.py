"""The demo config's training loss falls by half within its first hundred iterations (issue 6).

Faster R-CNN's total loss first falls fast (the RPN learns objectness, the RoI classifier the
background prior), then partly rises again as the RPN proposes more foreground RoIs, whose
classification and box losses are larger: from random initialisation the ResNet-18 FPN demo
detector's total ends the 300 demo iterations well below its first value, but above its lowest.
This test checks the fall, and that the RPN really learned where the objects are (objectness
loss down by 80%)."""

import pytest
from helpers import ROOT, read_jsonl, run_tool


@pytest.mark.slow
def test_demo_loss_halves(tiny_config):
    _, out = tiny_config  # the fixture points RESDET_DATASETS at the session's shapes data
    run_tool(
        [
            ROOT / "tools/train.py",
            "--config",
            ROOT / "configs/shapes/demo_R18_FPN.yaml",
            "--device",
            "cpu",
            "--output-dir",
            out,
            "solver.max_iter=100",
            "solver.log_period=1",
            "solver.checkpoint_period=1000",
            "test.eval_period=-1",
        ],
        env_extra={"OMP_NUM_THREADS": "2"},
    )
    records = [r for r in read_jsonl(out / "metrics.jsonl") if "total_loss" in r]
    assert [r["iteration"] for r in records] == list(range(1, 101))
    total = [r["total_loss"] for r in records]
    smoothed = [sum(total[i - 10 : i]) / 10 for i in range(10, len(total) + 1)]
    print(f"loss at iteration 1: {total[0]:.3f}; lowest 10-iteration mean: {min(smoothed):.3f}")
    assert min(smoothed) <= 0.5 * total[0]
    rpn = [r["loss_rpn_cls"] for r in records]
    assert sum(rpn[-10:]) / 10 <= 0.2 * rpn[0]
