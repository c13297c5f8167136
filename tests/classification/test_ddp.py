"""Two processes under torchrun (gloo on CPU) train as one process does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from classification_helpers import write_image_folder
from helpers import run_tool, torchrun

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two torchrun processes: 20-40 s on 2 cores
def test_two_processes_train_as_one(tmp_path):
    """23 s on 2 busy cores (two torch processes start)."""
    root = write_image_folder(tmp_path / "images", size=32)
    config = tmp_path / "ddp.yaml"
    # GroupNorm and no augmentation: one process with 4 images per step and two with 2 each
    # compute the same mean gradient (BN's batch statistics, or per-rank crops, would differ)
    config.write_text(
        f"model: {{name: resnet18, norm: GN}}\n"
        f"data: {{dataset: imagefolder, root: {root}, num_workers: 0}}\n"
        "input: {train_scale: [], crop: 32, flip: false, test_scale: null, test_crop: 32}\n"
        "solver: {ims_per_batch: 4, base_lr: 0.05, max_epochs: null, max_iter: 3, steps: [2],\n"
        "         checkpoint_period: 2, log_period: 1}\n"
        "test: {eval_period: 0, ims_per_batch: 2}\n"
    )
    tool = ROOT / "tools" / "train_classifier.py"
    common = ["--config", config, "--device", "cpu"]
    run_tool([tool, *common, "--output-dir", tmp_path / "one"])
    run_tool(
        torchrun(
            tool,
            *common,
            "--output-dir",
            tmp_path / "two",
        ),
        env_extra={"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    one = torch.load(tmp_path / "one/model_final.pth", weights_only=True)
    two = torch.load(tmp_path / "two/model_final.pth", weights_only=True)
    assert len(two["rng"]) == 2  # both ranks' generators, for an exact resume
    for k, v in one["model"].items():
        torch.testing.assert_close(two["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    # the validation shards of both ranks add up to the whole set, once
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert m2["val"]["images"] == m1["val"]["images"] == 6
    assert m2["val"]["top1_err"] == pytest.approx(m1["val"]["top1_err"])
    assert m2["train"]["loss"] == pytest.approx(m1["train"]["loss"], rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "two").glob("*.pth")) == [
        "model_0000002.pth",
        "model_final.pth",
    ]
