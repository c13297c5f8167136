"""COCO box evaluation with pycocotools: detections as COCO results, AP metrics in percent.

The metrics are pycocotools' COCOeval (bbox: IoU 0.50:0.05:0.95, at most 100 detections per
image, crowd regions as ignored matches) scaled to percent, as the ResNet paper and Detectron2
report them: AP, AP50, AP75, APs, APm, APl, and per-category AP (IoU .50:.95, all areas, 100
detections). A metric is None (null in JSON) where COCOeval has nothing to average (its -1):
no ground truth of that area range, or of that category, among the evaluated images.

Two backends compute the same numbers: "pycocotools" (the reference) and "faster"
(faster-coco-eval's C++ COCOeval, quicker on large evaluations: `tools/benchmark.py --mode eval`
times both; `pip install faster-coco-eval`), chosen with `test.evaluator`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

BACKENDS = ("pycocotools", "faster")
# (metric name, index in COCOeval.stats)
METRICS = (("AP", 0), ("AP50", 1), ("AP75", 2), ("APs", 3), ("APm", 4), ("APl", 5))


def detections_to_coco(
    image_id: int,
    detections: Mapping[str, torch.Tensor],
    label_to_category_id: Mapping[int, int],
) -> list[dict[str, Any]]:
    """One image's model output {boxes xyxy, scores, labels 1..K} as COCO result entries
    {image_id, category_id (the dataset's id), bbox [x, y, w, h], score}."""
    boxes = detections["boxes"].detach().cpu().double().reshape(-1, 4)
    scores = detections["scores"].detach().cpu().double().reshape(-1)
    labels = detections["labels"].detach().cpu().long().reshape(-1)
    if not len(boxes):
        return []
    known = sorted(label_to_category_id)
    lut = torch.full((max(max(known), 0) + 1,), -1, dtype=torch.long)
    lut[torch.tensor(known)] = torch.tensor([label_to_category_id[k] for k in known])
    in_range = (labels >= 0) & (labels < len(lut))
    category_ids = torch.where(in_range, lut[labels.clamp(0, len(lut) - 1)], -1)
    if (category_ids < 0).any():
        bad = int(labels[category_ids < 0][0])
        raise ValueError(
            f"image {image_id}: the model predicted label {bad} but the dataset maps only labels "
            f"{known[0]}..{known[-1]} to categories; the model's classes "
            "(model.roi_heads.num_classes) do not match the test set"
        )
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    return [
        {"image_id": int(image_id), "category_id": c, "bbox": b, "score": s}
        for c, b, s in zip(category_ids.tolist(), xywh.tolist(), scores.tolist(), strict=True)
    ]


def load_coco(annotations: str | os.PathLike) -> COCO:
    """A pycocotools index of a COCO json (pycocotools' progress prints silenced)."""
    path = Path(annotations)
    if not path.is_file():
        raise FileNotFoundError(
            f"COCO annotation file not found: {path}; set data.test.annotations (or put the "
            "dataset under $RESDET_DATASETS)"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _check_results(gt: COCO, results: Sequence[Mapping[str, Any]], where: str) -> None:
    """Results must name images and categories of the ground truth (pycocotools only asserts)."""
    for key, known, what in (
        ("image_id", set(gt.getImgIds()), "image id"),
        ("category_id", set(gt.getCatIds()), "category id"),
    ):
        try:
            values = {r[key] for r in results}
        except KeyError:
            raise ValueError(f"a detection result has no {key!r}; COCO results need it") from None
        unknown = values - known
        if unknown:
            raise ValueError(
                f"detection results name {what}(s) {sorted(unknown)[:5]} that {where} does not "
                "have; evaluate on the annotation file the detections were made for"
            )


def _empty_results(gt: COCO) -> COCO:
    # pycocotools' loadRes fails on an empty list; no detections at all is a valid result
    dt = COCO()
    dt.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": copy.deepcopy(gt.dataset["categories"]),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def _faster_cocoeval(gt: COCO, results: Sequence[Mapping[str, Any]]):
    """faster-coco-eval's COCOeval on the same ground truth and results (same interface)."""
    try:
        import faster_coco_eval
    except ImportError:
        raise ImportError(
            "test.evaluator=faster needs the faster-coco-eval package: pip install "
            "faster-coco-eval (or use test.evaluator=pycocotools)"
        ) from None
    with contextlib.redirect_stdout(io.StringIO()):
        fgt = faster_coco_eval.COCO(copy.deepcopy(gt.dataset))
        if results:
            fdt = fgt.loadRes([dict(r) for r in results])
        else:
            fdt = faster_coco_eval.COCO(_empty_results(gt).dataset)
    # print_function: its summary goes through print, so that summarize() can be captured
    return faster_coco_eval.COCOeval_faster(fgt, fdt, iouType="bbox", print_function=print)


def _percent(value: float) -> float | None:
    return float(value) * 100.0 if value >= 0 else None


def coco_evaluate(
    annotations: str | os.PathLike | COCO,
    results: Sequence[Mapping[str, Any]],
    *,
    class_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    image_ids: Iterable[int] | None = None,
    summary: TextIO | None = None,
    backend: str = "pycocotools",
) -> dict[str, Any]:
    """COCO box metrics in percent: {AP, AP50, AP75, APs, APm, APl, per_category {name: AP}}.

    `annotations` is the ground-truth json (or its COCO index); `results` COCO result entries
    with the json's category ids. `class_names[i]` names `category_ids[i]` (both default to the
    json's categories in id order). `image_ids` restricts the evaluation to those images (default:
    every image of the json). pycocotools' own summary is written to `summary` when given.
    `backend` is "pycocotools" or "faster" (faster-coco-eval; same numbers, quicker).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO evaluation backend {backend!r}; choose from {BACKENDS}")
    gt = annotations if isinstance(annotations, COCO) else load_coco(annotations)
    where = "the ground truth" if isinstance(annotations, COCO) else str(annotations)
    _check_results(gt, results, where)
    if backend == "faster":
        evaluator = _faster_cocoeval(gt, results)
    else:
        if results:
            # loadRes adds keys (area, id, segmentation) to the dicts it gets: give it copies
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes([dict(r) for r in results])
        else:
            dt = _empty_results(gt)
        evaluator = COCOeval(gt, dt, iouType="bbox")
    if image_ids is not None:
        ids = sorted({int(i) for i in image_ids})
        unknown = set(ids) - set(gt.getImgIds())
        if unknown:
            raise ValueError(f"image ids {sorted(unknown)[:5]} are not in {where}")
        evaluator.params.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        evaluator.summarize()
    if summary is not None:
        summary.write(text.getvalue())

    metrics: dict[str, Any] = {name: _percent(evaluator.stats[i]) for name, i in METRICS}
    metrics["per_category"] = _per_category(evaluator, gt, class_names, category_ids)
    return metrics


def _per_category(
    evaluator,
    gt: COCO,
    class_names: Sequence[str] | None,
    category_ids: Sequence[int] | None,
) -> dict[str, float | None]:
    cats = sorted(gt.dataset["categories"], key=lambda c: c["id"])
    if category_ids is None:
        if class_names is not None and len(class_names) != len(cats):
            raise ValueError(
                f"{len(class_names)} class names for {len(cats)} categories of the ground truth; "
                "pass category_ids as well"
            )
        category_ids = [c["id"] for c in cats]
    if class_names is None:
        by_id = {c["id"]: c["name"] for c in cats}
        class_names = [by_id[c] for c in category_ids]
    if len(class_names) != len(category_ids):
        raise ValueError(f"{len(class_names)} class names but {len(category_ids)} category ids")

    p = evaluator.params
    # precision: [IoU thresholds, recall points, categories, area ranges, max detections]
    precision = evaluator.eval["precision"]
    area = p.areaRngLbl.index("all")
    max_dets = len(p.maxDets) - 1  # 100, the setting of stats[0]
    counts: dict[str, int] = {}
    for name in class_names:
        counts[name] = counts.get(name, 0) + 1
    out: dict[str, float | None] = {}
    for name, cat_id in zip(class_names, category_ids, strict=True):
        values = precision[:, :, p.catIds.index(cat_id), area, max_dets]
        values = values[values > -1]
        key = name if counts[name] == 1 else f"{name} (id {cat_id})"
        out[key] = float(np.mean(values)) * 100.0 if values.size else None
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_table(metrics: Mapping[str, Any], columns: int = 3) -> str:
    """A compact Markdown table of the COCO metrics, then per-category AP `columns` pairs a row."""
    names = [name for name, _ in METRICS]
    lines = [
        "| " + " | ".join(names) + " |",
        "|" + "|".join("------" for _ in names) + "|",
        "| " + " | ".join(_fmt(metrics.get(n)) for n in names) + " |",
    ]
    per_category = list((metrics.get("per_category") or {}).items())
    if per_category:
        lines += ["", "| " + " | ".join(["category | AP"] * columns) + " |"]
        lines.append("|" + "|".join(["----------|------"] * columns) + "|")
        for start in range(0, len(per_category), columns):
            chunk = per_category[start : start + columns]
            chunk += [("", None)] * (columns - len(chunk))
            cells = [f"{n} | {_fmt(v) if n else ''}" for n, v in chunk]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
