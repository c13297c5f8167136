"""tools/benchmark.py end to end on tiny sizes (no timing asserted)."""

import json
from pathlib import Path

import pytest

from tools import benchmark as tool

ROOT = Path(__file__).resolve().parents[2]
FPN = ROOT / "configs/coco/faster_rcnn_R50_FPN_1x.yaml"
SMALL = ["input.min_size_test=96", "input.max_size_test=128", "model.rpn.post_nms_topk_test=50"]


def test_inference_vs_torchvision(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--config", str(FPN), "--size", "96", "128", "--iters", "2", "--warmup", "1"]
    assert tool.main([*args, "--vs-torchvision", "--json", str(out), *SMALL]) == 0
    result = json.loads(out.read_text())
    assert result["same_detections"] is True
    assert result["flops_per_image"] > 1e9 and result["matmul_peak_gflops"] > 0
    assert result["ours"]["images_per_s"] > 0 and result["torchvision"]["images_per_s"] > 0
    assert "ours/torchvision speed" in capsys.readouterr().out


def test_train_mode_and_errors(tmp_path):
    c4 = ROOT / "configs/coco/faster_rcnn_R18_C4_1x.yaml"
    args = ["--config", str(c4), "--mode", "train", "--size", "96", "128", "--iters", "1"]
    out = tmp_path / "t.json"
    assert tool.main([*args, "--warmup", "0", "--json", str(out), "--precision", "bf16"]) == 0
    assert json.loads(out.read_text())["ours"]["median_s"] > 0
    with pytest.raises(SystemExit) as e:
        tool.main([*args, "--vs-torchvision"])
    assert e.value.code == 2
