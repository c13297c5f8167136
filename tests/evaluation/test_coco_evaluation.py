"""coco_evaluate against pycocotools itself; perfect and empty detectors; result conversion."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import pytest
import torch
from evaluation_helpers import CATEGORIES, handmade_gt
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.evaluation import coco_evaluate, detections_to_coco, format_table

NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def pycocotools_stats(ann_path, detections, cat_ids=None, img_ids=None):
    """COCOeval's stats, as pycocotools' documentation runs it."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_path))
        dt = gt.loadRes(copy.deepcopy(detections))
        ev = COCOeval(gt, dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_metrics_equal_pycocotools(handmade):
    ann, dets = handmade
    metrics = coco_evaluate(ann, dets)
    stats = pycocotools_stats(ann, dets)
    for i, name in enumerate(NAMES):
        assert stats[i] >= 0, name  # the hand-made set has ground truth of every area
        assert metrics[name] == pytest.approx(stats[i] * 100, abs=1e-6), name
    assert 5 < metrics["AP"] < 95  # neither trivial extreme
    assert len({round(metrics[n], 3) for n in NAMES}) == len(NAMES)


def test_per_category_equals_single_category_evaluation(handmade):
    ann, dets = handmade
    per_category = coco_evaluate(ann, dets)["per_category"]
    # names in category-id order; 90 has no ground truth (detections only): null
    assert list(per_category) == ["cat", "dog", "zebra", "unicorn"]
    assert per_category["unicorn"] is None
    for cat in CATEGORIES[:3]:
        stats = pycocotools_stats(ann, dets, cat_ids=[cat["id"]])
        assert per_category[cat["name"]] == pytest.approx(stats[0] * 100, abs=1e-6)


def test_class_names_and_image_subset(handmade):
    ann, dets = handmade
    metrics = coco_evaluate(
        ann, dets, class_names=["c", "d"], category_ids=[3, 17], image_ids=[1, 2, 4]
    )
    stats = pycocotools_stats(ann, dets, img_ids=[1, 2, 4])
    assert [metrics[n] for n in NAMES] == pytest.approx([s * 100 for s in stats[:6]], abs=1e-6)
    assert list(metrics["per_category"]) == ["c", "d"]
    out = io.StringIO()
    coco_evaluate(ann, dets, summary=out)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in out.getvalue()


def test_results_are_not_modified(handmade):
    ann, dets = handmade
    before = copy.deepcopy(dets)
    coco_evaluate(ann, dets)
    assert dets == before  # pycocotools' loadRes would add area/id/segmentation


def test_perfect_detector(handmade):
    ann, _ = handmade
    gt = handmade_gt()["annotations"]
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in gt
        if not a["iscrowd"]
    ]
    metrics = coco_evaluate(ann, perfect)
    for name in NAMES:
        assert metrics[name] == pytest.approx(100.0), name
    assert metrics["per_category"] == {
        "cat": pytest.approx(100.0),
        "dog": pytest.approx(100.0),
        "zebra": pytest.approx(100.0),
        "unicorn": None,
    }


def test_empty_detector(handmade):
    ann, _ = handmade
    metrics = coco_evaluate(ann, [])
    assert [metrics[n] for n in NAMES] == [0.0] * 6
    assert metrics["per_category"] == {"cat": 0.0, "dog": 0.0, "zebra": 0.0, "unicorn": None}
    table = format_table(metrics)
    assert "| 0.00 | 0.00 |" in table and "unicorn | n/a" in table


def test_results_must_match_the_ground_truth(handmade):
    ann, dets = handmade
    with pytest.raises(ValueError, match=r"image id\(s\) \[999\]"):
        coco_evaluate(ann, [*dets, {**dets[0], "image_id": 999}])
    with pytest.raises(ValueError, match=r"category id\(s\) \[4\]"):
        coco_evaluate(ann, [{**dets[0], "category_id": 4}])
    with pytest.raises(FileNotFoundError, match="data.test.annotations"):
        coco_evaluate(ann.parent / "missing.json", dets)


def test_detections_to_coco():
    output = {
        "boxes": torch.tensor([[10.0, 20.0, 50.0, 80.0], [0.5, 1.5, 2.0, 3.0]]),
        "scores": torch.tensor([0.9, 0.25]),
        "labels": torch.tensor([2, 1]),
    }
    results = detections_to_coco(5, output, {1: 42, 2: 3, 3: 17})
    assert [r["image_id"] for r in results] == [5, 5]
    assert results[0]["score"] == pytest.approx(0.9)
    assert results[0]["bbox"] == [10.0, 20.0, 40.0, 60.0]
    assert results[1]["bbox"] == [0.5, 1.5, 1.5, 1.5]
    assert [r["category_id"] for r in results] == [3, 42]
    assert results[1]["score"] == pytest.approx(0.25)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
    assert detections_to_coco(5, empty, {1: 42}) == []
    with pytest.raises(ValueError, match="label 4 .*model.roi_heads.num_classes"):
        detections_to_coco(5, {**output, "labels": torch.tensor([4, 1])}, {1: 42, 2: 3, 3: 17})


@pytest.mark.parametrize("subset", [False, True])
def test_faster_backend_equals_pycocotools(handmade, subset):
    """faster-coco-eval gives pycocotools' numbers, per category too, on an image subset too."""
    pytest.importorskip("faster_coco_eval")
    ann, dets = handmade
    kwargs = {"image_ids": sorted({d["image_id"] for d in dets})[:2]} if subset else {}
    reference = coco_evaluate(ann, dets, **kwargs)
    faster = coco_evaluate(ann, dets, backend="faster", **kwargs)
    assert faster.keys() == reference.keys()
    for name in NAMES:
        assert faster[name] == pytest.approx(reference[name], abs=1e-6), name
    for name, value in reference["per_category"].items():
        assert faster["per_category"][name] == pytest.approx(value, abs=1e-6), name
    out = io.StringIO()
    coco_evaluate(ann, dets, backend="faster", summary=out)
    assert "Average Precision" in out.getvalue()


def test_faster_backend_empty_and_perfect(handmade):
    pytest.importorskip("faster_coco_eval")
    ann, _ = handmade
    empty = coco_evaluate(ann, [], backend="faster")
    assert empty["AP"] == 0 and empty["AP50"] == 0
    with open(ann) as f:
        gt = json.load(f)
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in gt["annotations"]
        if not a.get("iscrowd")
    ]
    assert coco_evaluate(ann, perfect, backend="faster")["AP"] == pytest.approx(100)


def test_unknown_backend(handmade):
    ann, dets = handmade
    with pytest.raises(ValueError, match="backend"):
        coco_evaluate(ann, dets, backend="fastest")
