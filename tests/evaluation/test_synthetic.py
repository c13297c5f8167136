"""The synthetic COCO data that times evaluations, and the backends' agreement check."""

from __future__ import annotations

import json

from detection.benchmark.evaluation import same_metrics, time_evaluation
from detection.evaluation import coco_evaluate
from detection.evaluation.synthetic import synthetic_ground_truth, synthetic_results


def test_synthetic_ground_truth_and_results(tmp_path):
    gt_path = synthetic_ground_truth(tmp_path / "gt.json", 40, seed=3)
    assert gt_path.read_text() == synthetic_ground_truth(tmp_path / "again.json", 40, 3).read_text()
    gt = json.loads(gt_path.read_text())
    assert len(gt["images"]) == 40 and len(gt["categories"]) == 80
    assert 4 < len(gt["annotations"]) / 40 < 11  # about 7.3 boxes per image
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 480
    results = synthetic_results(gt_path, seed=0)
    # one jittered detection per box, two false positives per image
    assert len(results) == len(gt["annotations"]) + 2 * 40
    ap = coco_evaluate(gt_path, results)["AP"]
    assert 20 < ap < 100  # like a real detector's: far from both extremes


def test_time_evaluation_record(tmp_path):
    gt_path = synthetic_ground_truth(tmp_path / "gt.json", 10)
    said = []
    out = time_evaluation(gt_path, None, seed=0, iters=1, progress=said.append)
    assert out["num_images"] == 10 and out["iters"] == 1
    assert out["pycocotools"]["median_s"] > 0 and "pycocotools 1/1" in said
    if "faster" in out:
        assert out["same_metrics"] is True


def test_same_metrics_treats_missing_values_strictly():
    a = {"AP": 10.0, "AP50": 20.0, "AP75": None, "APs": None, "APm": 1.0, "APl": 2.0}
    assert same_metrics(a, dict(a))
    assert same_metrics(a, {**a, "AP": 10.0 + 1e-9})
    assert not same_metrics(a, {**a, "AP": 10.1})
    assert not same_metrics(a, {**a, "APs": 0.0})  # None against a number differs
    assert not same_metrics({**a, "APs": 0.0}, a)
