"""Evaluation diagnostics: per-class precision / recall, confusions and PR curves.

`analyze_detections` looks at the detections scoring at least a threshold
(test.analyze_score_thresh, 0.5 by default) and matches them to the ground truth with
pycocotools' own matching (COCOeval.evaluateImg at one IoU threshold, 0.5): within an image,
detections in decreasing score order each take the unmatched ground-truth box of highest
IoU >= 0.5, boxes that are not crowd regions first; a detection on a crowd region (iscrowd=1)
is ignored, as COCO AP ignores it. No detection count limit applies (COCO AP's 100 per image
does not).

Matching rule, in two passes, so that every count has one meaning:

1. Per class (COCOeval with useCats=1): a detection matched to a ground-truth box of its own
   class is a true positive (TP). Every other detection above the threshold is a false
   positive (FP) of its class, and every ground-truth box left unmatched a false negative (FN)
   of its class: precision = TP / (TP + FP), recall = TP / (TP + FN).
2. Class-agnostic, on what pass 1 left (COCOeval with useCats=0 on the unmatched detections
   and the unmatched non-crowd ground truth): a leftover detection of class d that matches a
   leftover box of class g is a confusion g -> d.

The confusion matrix has a row per ground-truth class plus "background" and a column per
detected class plus "background": [g][g] = TP of g; [g][d] = confusions g -> d; [g][background]
= boxes of g that nothing detected (missed objects); [background][d] = detections of d on no
object (false detections, duplicates included; detections on a crowd region of another class
too). The [background][background] cell is always 0. So a row sums to the class's ground
truth (TP + FN), a column to its detections (TP + FP), and the per-class table and the matrix
agree. (One class-agnostic pass alone would let a confident detection of the wrong class take
a box that a detection of the right class also found, and the diagonal would no longer be TP.)

PR curves are COCOeval's (all detections, the standard 100 per image, area "all"):
eval["precision"] at IoU 0.5 and 0.75 over its 101 recall points, with AP50 / AP75 per class.
The worst images are those with the most errors: missed + false detections + confusions.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .coco import BACKENDS, _check_results, _empty_results, _faster_cocoeval, load_coco

BACKGROUND = "background"
ALL_AREAS = [0.0, 1e5**2]  # pycocotools' "all" area range


def analyze_detections(
    annotations: str | os.PathLike | COCO,
    results: Sequence[Mapping[str, Any]],
    *,
    score_thresh: float = 0.5,
    iou_thresh: float = 0.5,
    image_ids: Iterable[int] | None = None,
    class_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    worst: int = 20,
    backend: str = "pycocotools",
) -> dict[str, Any]:
    """Diagnostics of COCO `results` on the ground truth `annotations` (see the module doc).

    Args:
        score_thresh: detections scoring below it are left out of the counts (not the curves).
        image_ids: the evaluated images (default: every image of the json).
        class_names, category_ids: the classes, `class_names[i]` naming `category_ids[i]`
            (default: the json's categories in id order); other categories are left out.
        worst: how many images to list, most errors first.
        backend: COCOeval of the PR curves, "pycocotools" or "faster" (faster-coco-eval).

    Returns:
        A JSON-able dict: score_thresh, iou_thresh, num_images, classes, per_class {name: gt,
        detections, TP, FP, FN, precision, recall, AP50, AP75}, total, confusion {rows,
        columns, matrix}, ignored_detections, top_confusions, pr_curves, worst_images.
    """
    if not 0.0 <= score_thresh <= 1.0:  # NaN fails it too
        raise ValueError(f"the score threshold must be in [0, 1], got {score_thresh}")
    if not 0.0 < iou_thresh <= 1.0:
        raise ValueError(f"the IoU threshold must be in (0, 1], got {iou_thresh}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO evaluation backend {backend!r}; choose from {BACKENDS}")
    gt = annotations if isinstance(annotations, COCO) else load_coco(annotations)
    where = "the ground truth" if isinstance(annotations, COCO) else str(annotations)
    _check_results(gt, results, where)
    names, cat_ids = _classes(gt, class_names, category_ids)
    ids = _image_ids(gt, image_ids, where)

    counts = _count(gt, results, ids, cat_ids, score_thresh, iou_thresh)
    curves = _pr_curves(gt, results, ids, cat_ids, backend)
    matrix = counts["matrix"]
    labels = [*names, BACKGROUND]
    return {
        "score_thresh": float(score_thresh),
        "iou_thresh": float(iou_thresh),
        "num_images": len(ids),
        "classes": list(names),
        "per_class": _per_class(names, cat_ids, matrix, curves),
        "total": _counts_of(int(np.trace(matrix)), matrix[:-1].sum(), matrix[:, :-1].sum()),
        "confusion": {"rows": labels, "columns": labels, "matrix": matrix.tolist()},
        "ignored_detections": counts["ignored"],
        "top_confusions": _top_confusions(matrix, labels),
        "pr_curves": {name: curves[k] for k, name in enumerate(names)},
        "worst_images": _worst_images(gt, ids, counts["per_image"], worst),
    }


def _per_class(
    names: list[str], cat_ids: list[int], matrix: np.ndarray, curves: list[dict[str, Any] | None]
) -> dict[str, dict[str, Any]]:
    """{name: category_id, gt, detections, TP, FP, FN, precision, recall, AP50, AP75, AP,
    APs, APm, APl}."""
    out = {}
    for k, name in enumerate(names):
        curve = curves[k] or {}
        out[name] = {
            "category_id": cat_ids[k],
            **_counts_of(int(matrix[k, k]), matrix[k].sum(), matrix[:, k].sum()),
            "AP50": curve.get("AP50"),
            "AP75": curve.get("AP75"),
            **{key: curve.get(key) for key, _ in AREA_KEYS},
        }
    return out


def _counts_of(tp: int, gt: int, detections: int) -> dict[str, Any]:
    """gt, detections, TP / FP / FN and precision / recall (None where there is nothing to
    divide by: no detection, or no ground truth)."""
    gt, detections = int(gt), int(detections)
    return {
        "gt": gt,
        "detections": detections,
        "TP": tp,
        "FP": detections - tp,
        "FN": gt - tp,
        "precision": tp / detections if detections else None,
        "recall": tp / gt if gt else None,
    }


def _classes(
    gt: COCO, class_names: Sequence[str] | None, category_ids: Sequence[int] | None
) -> tuple[list[str], list[int]]:
    """(unique names, category ids) of the analysed classes; a name that several categories
    share gets its id appended, as in coco_evaluate's per-category AP."""
    cats = sorted(gt.dataset["categories"], key=lambda c: c["id"])
    by_id = {c["id"]: c["name"] for c in cats}
    ids = [c["id"] for c in cats] if category_ids is None else [int(c) for c in category_ids]
    unknown = [c for c in ids if c not in by_id]
    if unknown:
        raise ValueError(f"category ids {unknown[:5]} are not in the ground truth")
    names = [by_id[c] for c in ids] if class_names is None else list(class_names)
    if len(names) != len(ids):
        raise ValueError(f"{len(names)} class names for {len(ids)} categories")
    unique = [
        n if names.count(n) == 1 else f"{n} (id {c})" for n, c in zip(names, ids, strict=True)
    ]
    return unique, ids


def _image_ids(gt: COCO, image_ids: Iterable[int] | None, where: str) -> list[int]:
    if image_ids is None:
        return sorted(gt.getImgIds())
    ids = sorted({int(i) for i in image_ids})
    unknown = set(ids) - set(gt.getImgIds())
    if unknown:
        raise ValueError(f"image ids {sorted(unknown)[:5]} are not in {where}")
    return ids


def _select(
    gt: COCO,
    results: Sequence[Mapping[str, Any]],
    ids: list[int],
    cat_ids: list[int],
    score_thresh: float,
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(ground truth, detections scoring >= score_thresh) of the analysed images and classes."""
    wanted_images, wanted_cats = set(ids), set(cat_ids)
    gts = [a for i in ids for a in gt.imgToAnns.get(i, []) if a["category_id"] in wanted_cats]
    dets = [
        r
        for r in results
        if r["image_id"] in wanted_images
        and r["category_id"] in wanted_cats
        and r["score"] >= score_thresh
    ]
    return gts, dets


def _count(
    gt: COCO,
    results: Sequence[Mapping[str, Any]],
    ids: list[int],
    cat_ids: list[int],
    score_thresh: float,
    iou_thresh: float,
) -> dict[str, Any]:
    """The confusion matrix, ignored detections and per-image errors of the two passes."""
    images = [gt.imgs[i] for i in ids]
    categories = [{"id": c, "name": str(c)} for c in cat_ids]
    gts, dets = _select(gt, results, ids, cat_ids, score_thresh)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in gts], dtype=bool)

    # pass 1: per class
    dt_gt, dt_ignored, gt_hit = _match(images, categories, gts, dets, iou_thresh, True)
    tp = (dt_gt >= 0) & ~dt_ignored
    left_dt = np.flatnonzero(dt_gt < 0)
    left_gt = np.flatnonzero(~gt_hit & ~crowd)
    # pass 2: class-agnostic, on the leftovers
    dt2, _, gt2_hit = _match(
        images,
        categories,
        [gts[j] for j in left_gt],
        [dets[i] for i in left_dt],
        iou_thresh,
        False,
    )

    k_of = {c: k for k, c in enumerate(cat_ids)}
    gt_k = np.array([k_of[a["category_id"]] for a in gts], dtype=np.int64)
    dt_k = np.array([k_of[d["category_id"]] for d in dets], dtype=np.int64)
    background = len(cat_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    np.add.at(matrix, (dt_k[tp], dt_k[tp]), 1)
    confused = dt2 >= 0
    np.add.at(matrix, (gt_k[left_gt[dt2[confused]]], dt_k[left_dt[confused]]), 1)
    false = left_dt[~confused]
    np.add.at(matrix, (background, dt_k[false]), 1)
    missed = left_gt[~gt2_hit]
    np.add.at(matrix, (gt_k[missed], background), 1)

    row = {i: n for n, i in enumerate(ids)}
    gt_img = np.array([row[a["image_id"]] for a in gts], dtype=np.int64)
    dt_img = np.array([row[d["image_id"]] for d in dets], dtype=np.int64)
    per_image = {
        "missed": np.bincount(gt_img[missed], minlength=len(ids)),
        "false_detections": np.bincount(dt_img[false], minlength=len(ids)),
        "confused": np.bincount(dt_img[left_dt[confused]], minlength=len(ids)),
        "gt": np.bincount(gt_img[~crowd], minlength=len(ids)),
        "detections": np.bincount(dt_img[~dt_ignored], minlength=len(ids)),
    }
    return {"matrix": matrix, "ignored": int(dt_ignored.sum()), "per_image": per_image}


def _match(
    images: list[dict],
    categories: list[dict],
    gts: list[Mapping[str, Any]],
    dets: list[Mapping[str, Any]],
    iou_thresh: float,
    use_cats: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pycocotools' matching at one IoU: (index of the ground truth each detection matched, -1
    for none; whether the detection was ignored, i.e. matched a crowd region; whether each
    ground truth was matched)."""
    dt_gt = np.full(len(dets), -1, dtype=np.int64)
    dt_ignored = np.zeros(len(dets), dtype=bool)
    gt_hit = np.zeros(len(gts), dtype=bool)
    if not gts or not dets:
        return dt_gt, dt_ignored, gt_hit
    # fresh ids 1..N: pycocotools takes id 0 for "unmatched", and json ids need not be unique
    gt_coco = _index(images, categories, [_gt_entry(a, n + 1) for n, a in enumerate(gts)])
    dt_coco = _index(images, categories, [_dt_entry(d, n + 1) for n, d in enumerate(dets)])
    evaluator = COCOeval(gt_coco, dt_coco, iouType="bbox")
    p = evaluator.params
    p.imgIds = [im["id"] for im in images]
    p.iouThrs = np.array([iou_thresh])
    p.areaRng, p.areaRngLbl = [ALL_AREAS], ["all"]
    p.maxDets = [len(dets)]  # no per-image limit
    p.useCats = int(use_cats)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    for e in evaluator.evalImgs:
        if e is None:
            continue
        for j, det_id in enumerate(e["dtIds"]):
            dt_gt[det_id - 1] = int(e["dtMatches"][0, j]) - 1
            dt_ignored[det_id - 1] = bool(e["dtIgnore"][0, j])
        for j, gt_id in enumerate(e["gtIds"]):
            gt_hit[gt_id - 1] = bool(e["gtMatches"][0, j])
    return dt_gt, dt_ignored, gt_hit


def _gt_entry(ann: Mapping[str, Any], new_id: int) -> dict[str, Any]:
    w, h = ann["bbox"][2], ann["bbox"][3]
    return {
        "id": new_id,
        "image_id": ann["image_id"],
        "category_id": ann["category_id"],
        "bbox": list(ann["bbox"]),
        "area": ann.get("area", w * h),
        "iscrowd": int(bool(ann.get("iscrowd", 0))),
    }


def _dt_entry(det: Mapping[str, Any], new_id: int) -> dict[str, Any]:
    # area as pycocotools' loadRes sets it for boxes
    entry = _gt_entry(det, new_id)
    entry.update(area=det["bbox"][2] * det["bbox"][3], iscrowd=0, score=float(det["score"]))
    return entry


def _index(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _pr_curves(
    gt: COCO,
    results: Sequence[Mapping[str, Any]],
    ids: list[int],
    cat_ids: list[int],
    backend: str,
) -> list[dict[str, Any] | None]:
    """Per class, COCOeval's precision at its recall points, IoU .5 and .75 (area all, 100
    detections), and AP50 / AP75 in percent; None for a class without ground truth."""
    if backend == "faster":
        evaluator = _faster_cocoeval(gt, results)
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            # loadRes adds keys to the dicts it gets: give it copies
            dt = gt.loadRes([dict(r) for r in results]) if results else _empty_results(gt)
        evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.params.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    p = evaluator.params
    precision = evaluator.eval["precision"]  # [IoU, recall, category, area, max dets]
    t50, t75 = (int(np.argmin(np.abs(np.asarray(p.iouThrs) - t))) for t in (0.5, 0.75))
    area, max_dets = p.areaRngLbl.index("all"), len(p.maxDets) - 1
    curves: list[dict[str, Any] | None] = []
    for cat in cat_ids:
        k = list(p.catIds).index(cat)
        p50, p75 = precision[t50, :, k, area, max_dets], precision[t75, :, k, area, max_dets]
        if (p50 < 0).all():
            curves.append(None)  # no ground truth of this class in these images
            continue
        curves.append(
            {
                "recall": [round(float(r), 4) for r in p.recThrs],
                "precision50": [round(float(v), 6) for v in p50],
                "precision75": [round(float(v), 6) for v in p75],
                "AP50": float(np.mean(p50)) * 100.0,
                "AP75": float(np.mean(p75)) * 100.0,
                **{
                    key: _mean_ap(precision[:, :, k, p.areaRngLbl.index(rng), max_dets])
                    for key, rng in AREA_KEYS
                },
            }
        )
    return curves


# per-class AP over IoU .50:.95 by object size, as COCOeval's summary lines name them
AREA_KEYS = (("AP", "all"), ("APs", "small"), ("APm", "medium"), ("APl", "large"))


def _mean_ap(values: np.ndarray) -> float | None:
    """COCOeval's mean of the defined precisions in percent (None: no objects of that size)."""
    values = values[values > -1]
    return float(np.mean(values)) * 100.0 if values.size else None


def _top_confusions(matrix: np.ndarray, labels: list[str], top: int = 20) -> list[dict]:
    """The largest off-diagonal cells: [{gt, detected, count}], most frequent first."""
    cells = [
        (int(matrix[g, d]), g, d)
        for g in range(len(labels))
        for d in range(len(labels))
        if g != d and matrix[g, d] > 0
    ]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [{"gt": labels[g], "detected": labels[d], "count": n} for n, g, d in cells[:top]]


def _worst_images(
    gt: COCO, ids: list[int], per_image: Mapping[str, np.ndarray], worst: int
) -> list[dict[str, Any]]:
    """The `worst` images with the most errors (missed + false + confused), then by id."""
    errors = per_image["missed"] + per_image["false_detections"] + per_image["confused"]
    order = sorted((n for n in range(len(ids)) if errors[n] > 0), key=lambda n: (-errors[n], n))
    return [
        {
            "image_id": ids[n],
            "file_name": gt.imgs[ids[n]].get("file_name"),
            "errors": int(errors[n]),
            **{key: int(values[n]) for key, values in per_image.items()},
        }
        for n in order[:worst]
    ]
