"""Evaluation diagnostics: exact counts on a set with known errors, pycocotools as the peer."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from evaluation_helpers import write_json
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.evaluation import analyze_detections, format_analysis, write_analysis
from detection.evaluation.diagnostics_report import pr_file_names

CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 7, "name": "traffic light"}]
CAT, DOG, LIGHT = 1, 2, 7
# image id -> (file name, [(category, xywh, iscrowd)])
GT = {
    1: ("one.jpg", [(CAT, [10, 10, 50, 50], 0), (DOG, [100, 10, 50, 50], 0),
                    (LIGHT, [10, 100, 50, 50], 0)]),
    2: ("two.jpg", [(CAT, [20, 20, 60, 60], 0), (DOG, [150, 50, 40, 40], 0)]),
    3: ("three.jpg", [(CAT, [0, 0, 100, 100], 1), (DOG, [60, 60, 30, 30], 0)]),
    4: ("four.jpg", []),
}  # fmt: skip
# (image, category, xywh, score, what it is at threshold 0.5)
DETECTIONS = [
    (1, CAT, [10, 10, 50, 50], 0.9, "TP cat"),
    (1, DOG, [105, 12, 50, 50], 0.8, "TP dog (IoU 0.76)"),
    (1, CAT, [10, 100, 50, 50], 0.7, "confusion: a traffic light detected as a cat"),
    (1, CAT, [12, 12, 50, 50], 0.6, "duplicate of the cat: a false detection"),
    (2, LIGHT, [20, 20, 60, 60], 0.99, "on the cat, which the cat detection below takes"),
    (2, CAT, [22, 20, 60, 60], 0.95, "TP cat"),
    (2, LIGHT, [200, 150, 40, 40], 0.55, "on nothing: a false detection"),
    (2, DOG, [150, 50, 40, 40], 0.3, "below the threshold: the dog counts as missed"),
    (3, CAT, [0, 0, 100, 100], 0.9, "on a crowd region of its class: ignored"),
    (3, DOG, [10, 10, 30, 30], 0.85, "on no dog: a false detection; the dog is missed"),
]


def gt_json() -> dict:
    images = [{"id": i, "file_name": f, "width": 300, "height": 200} for i, (f, _) in GT.items()]
    boxes = [(i, *ann) for i, (_, anns) in GT.items() for ann in anns]
    annotations = [
        {"id": n + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
         "iscrowd": crowd}
        for n, (i, c, b, crowd) in enumerate(boxes)
    ]  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": CATS}


def results() -> list[dict]:
    return [
        {"image_id": i, "category_id": c, "bbox": [float(v) for v in b], "score": s}
        for i, c, b, s, _ in DETECTIONS
    ]


@pytest.fixture
def known(tmp_path):
    return write_json(tmp_path / "gt.json", gt_json())


def test_known_confusions_counted_exactly(known):
    a = analyze_detections(known, results(), score_thresh=0.5)
    labels = ["cat", "dog", "traffic light", "background"]
    assert a["confusion"]["rows"] == a["confusion"]["columns"] == labels
    assert a["confusion"]["matrix"] == [
        [2, 0, 0, 0],  # cats: both found
        [0, 1, 0, 2],  # dogs: one found, two missed
        [1, 0, 0, 0],  # the traffic light detected as a cat
        [1, 1, 2, 0],  # false detections: a duplicate cat, a dog, two traffic lights
    ]
    per_class = a["per_class"]
    expected = {  # gt, detections, TP, FP, FN, precision, recall
        "cat": (2, 4, 2, 2, 0, 0.5, 1.0),
        "dog": (3, 2, 1, 1, 2, 0.5, 1 / 3),
        "traffic light": (1, 2, 0, 2, 1, 0.0, 0.0),
    }
    for name, values in expected.items():
        c = per_class[name]
        got = (c["gt"], c["detections"], c["TP"], c["FP"], c["FN"], c["precision"], c["recall"])
        assert got == pytest.approx(values), name
    assert [c["category_id"] for c in per_class.values()] == [CAT, DOG, LIGHT]
    total = a["total"]
    assert (total["gt"], total["detections"], total["TP"], total["FP"], total["FN"]) == (
        6, 8, 3, 5, 3,
    )  # fmt: skip
    assert a["ignored_detections"] == 1
    assert a["num_images"] == 4 and a["score_thresh"] == 0.5 and a["iou_thresh"] == 0.5
    assert a["top_confusions"][:2] == [  # most frequent first, then in matrix order
        {"gt": "dog", "detected": "background", "count": 2},
        {"gt": "background", "detected": "traffic light", "count": 2},
    ]
    worst = [(w["image_id"], w["file_name"], w["errors"], w["missed"], w["false_detections"],
              w["confused"], w["gt"], w["detections"]) for w in a["worst_images"]]  # fmt: skip
    assert worst == [
        (2, "two.jpg", 3, 1, 2, 0, 2, 3),
        (1, "one.jpg", 2, 0, 1, 1, 3, 4),
        (3, "three.jpg", 2, 1, 1, 0, 1, 1),
    ]  # image 4 has no error
    assert [
        w["image_id"] for w in analyze_detections(known, results(), worst=1)["worst_images"]
    ] == [2]


def test_threshold_and_image_subset(known):
    # at 0.25 the low-scoring dog on image 2 is found
    a = analyze_detections(known, results(), score_thresh=0.25)
    assert a["per_class"]["dog"]["TP"] == 2 and a["confusion"]["matrix"][1] == [0, 2, 0, 1]
    # at 0.96 only the two detections above remain: the traffic light on the cat now takes it
    # in the class-agnostic pass, since no cat detection does in the per-class one
    a = analyze_detections(known, results(), score_thresh=0.96)
    assert a["confusion"]["matrix"] == [[0, 0, 1, 1], [0, 0, 0, 3], [0, 0, 0, 1], [0, 0, 0, 0]]
    # only image 3: its dog and its false dog; the crowd and the detection on it are ignored
    a = analyze_detections(known, results(), image_ids=[3])
    assert a["num_images"] == 1
    assert a["confusion"]["matrix"] == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert a["pr_curves"]["cat"] is None  # no (non-crowd) cat in image 3
    assert a["per_class"]["cat"]["AP50"] is None and a["per_class"]["cat"]["recall"] is None


def cocoeval(gt_path, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        e = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), iouType="bbox")
        e.evaluate()
        e.accumulate()
    return e


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_curves_and_recall_equal_cocoeval(handmade, backend):
    """The PR curves are COCOeval's; at threshold 0 the recall of the counts is COCOeval's
    recall at IoU .5 (the hand-made set keeps under 100 detections per image)."""
    gt_path, dets = handmade
    a = analyze_detections(gt_path, dets, score_thresh=0.0, backend=backend)
    peer = cocoeval(gt_path, dets)
    k_of = {c: k for k, c in enumerate(peer.params.catIds)}
    for name, c in a["per_class"].items():
        k = k_of[c["category_id"]]
        recall = peer.eval["recall"][0, k, 0, 2]
        if recall < 0:  # no ground truth
            assert c["recall"] is None and a["pr_curves"][name] is None and c["gt"] == 0
            continue
        assert c["recall"] == pytest.approx(recall, abs=1e-12), name
        curve = a["pr_curves"][name]
        for key, t in (("precision50", 0), ("precision75", 5)):
            np.testing.assert_allclose(curve[key], peer.eval["precision"][t, :, k, 0, 2], atol=1e-6)
        np.testing.assert_allclose(curve["recall"], peer.params.recThrs)
        assert c["AP50"] == pytest.approx(100 * peer.eval["precision"][0, :, k, 0, 2].mean())
    # rows sum to the non-crowd ground truth, columns to the detections not on crowd regions
    gt = json.loads(gt_path.read_text())
    matrix = np.array(a["confusion"]["matrix"])
    for k, cat in enumerate(c["category_id"] for c in a["per_class"].values()):
        boxes = [g for g in gt["annotations"] if g["category_id"] == cat and not g["iscrowd"]]
        assert matrix[k].sum() == len(boxes)
    assert matrix[:, :-1].sum() == len(dets) - a["ignored_detections"]


def test_per_class_ap_by_size_equals_cocoeval_of_that_class(handmade):
    """AP, APs, APm, APl of each class are pycocotools' summary restricted to that category."""
    gt_path, dets = handmade
    a = analyze_detections(gt_path, dets, score_thresh=0.0)
    for name, c in a["per_class"].items():
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(gt_path))
            e = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), iouType="bbox")
            e.params.catIds = [c["category_id"]]
            e.evaluate()
            e.accumulate()
            e.summarize()
        for key, i in (("AP", 0), ("APs", 3), ("APm", 4), ("APl", 5)):
            want = None if e.stats[i] < 0 else 100 * e.stats[i]
            assert c[key] == (None if want is None else pytest.approx(want)), (name, key)


def test_write_analysis_files(known, tmp_path):
    a = analyze_detections(known, results(), image_ids=[1, 2])
    out = tmp_path / "eval" / "analysis"
    written = write_analysis(a, out)
    # no curve for a class without ground truth in the images: none here, all three have boxes
    names = {"analysis.json", "summary.md", "confusion_matrix.png", "pr_cat.png", "pr_dog.png",
             "pr_traffic_light.png"}  # fmt: skip
    assert {p.name for p in out.iterdir()} == names == set(written["files"])
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()
            assert image.width > 300 and image.height > 300
    record = json.loads((out / "analysis.json").read_text())
    assert record["confusion"] == a["confusion"] and record["per_class"] == a["per_class"]
    assert record["pr_files"]["traffic light"] == "pr_traffic_light.png"
    summary = (out / "summary.md").read_text()
    assert summary == written["summary"] == format_analysis(a)
    assert "| traffic light | 1 | 2 | 0 | 2 | 1 | 0.0 | 0.0 |" in summary
    assert "| traffic light | 1 | 0 | 0 | 0 |" in summary  # its matrix row
    assert "| 2 | two.jpg | 3 | 1 | 2 | 0 | 2 | 3 |" in summary
    # rewriting leaves no temporary behind
    write_analysis(a, out)
    assert {p.name for p in out.iterdir()} == names


def test_pr_file_names_are_safe_and_unique():
    names = pr_file_names(["traffic light", "a/b", "A/B", "", "../x", "émoji"], [1, 2, 3, 4, 5, 6])
    assert names == {
        "traffic light": "pr_traffic_light.png",
        "a/b": "pr_a_b_id2.png",
        "A/B": "pr_A_B_id3.png",
        "": "pr_id4.png",
        "../x": "pr_x.png",
        "émoji": "pr_moji.png",
    }


def test_bad_input(known):
    for thresh in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="score threshold must be in"):
            analyze_detections(known, results(), score_thresh=thresh)
    with pytest.raises(ValueError, match=r"category id\(s\) \[99\]"):
        analyze_detections(known, [{**results()[0], "category_id": 99}])
    with pytest.raises(ValueError, match=r"image ids \[5\] are not in"):
        analyze_detections(known, results(), image_ids=[1, 5])
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        analyze_detections(known.parent / "missing.json", results())
