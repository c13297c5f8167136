"""Synthetic COCO data for timing evaluations: a COCO-val-like ground truth of any size, and
plausible detections for a ground truth (no model, no images needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.io import write_json

# COCO val2017's shape: 640x480-ish images, 80 categories, about 7.3 boxes per image, 1% crowd
WIDTH, HEIGHT = 640, 480
NUM_CATEGORIES = 80


def synthetic_results(annotations: str | os.PathLike, seed: int = 0) -> list[dict[str, Any]]:
    """Plausible detections for a COCO json: each ground-truth box jittered (a random score),
    and two random boxes per image; a workload like a real detector's for timing COCOeval."""
    with open(annotations) as f:
        gt = json.load(f)
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    results = [_jittered(a, rng) for a in gt.get("annotations", [])]
    for img in gt["images"]:
        results += [_false_positive(img, cats, rng) for _ in range(2)]
    return results


def _jittered(annotation: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A detection of a ground-truth box, moved and resized by about 10% of its size."""
    x, y, w, h = annotation["bbox"]
    jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
    box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
    return {
        "image_id": annotation["image_id"],
        "category_id": annotation["category_id"],
        "bbox": [float(v) for v in box],
        "score": float(rng.uniform(0.3, 1.0)),
    }


def _false_positive(
    image: dict[str, Any], categories: list[int], rng: np.random.Generator
) -> dict[str, Any]:
    """A random box of a random category inside the image, with a low score."""
    w, h = rng.uniform(8, 0.5 * image["width"]), rng.uniform(8, 0.5 * image["height"])
    x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
    return {
        "image_id": image["id"],
        "category_id": int(rng.choice(categories)),
        "bbox": [float(x), float(y), float(w), float(h)],
        "score": float(rng.uniform(0.05, 0.6)),
    }


def synthetic_ground_truth(
    path: str | os.PathLike, num_images: int, seed: int = 0, boxes_per_image: float = 7.3
) -> Path:
    """A COCO-like ground-truth json (80 categories, about 7.3 boxes per image of all sizes and
    1% crowd, as COCO val2017) of `num_images` 640x480 images, for timing evaluations; returns
    its path."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": WIDTH, "height": HEIGHT}
        )
        for _ in range(rng.poisson(boxes_per_image)):
            annotations.append(_random_annotation(len(annotations) + 1, image_id, rng))
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, NUM_CATEGORIES + 1)]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return write_json(path, gt)


def _random_annotation(ann_id: int, image_id: int, rng: np.random.Generator) -> dict[str, Any]:
    """A box of log-uniform size (6 to 400 pixels a side) anywhere in the image."""
    w, h = np.exp(rng.uniform(np.log(6), np.log(400), 2))
    w, h = min(w, WIDTH - 1.0), min(h, HEIGHT - 1.0)
    x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(rng.integers(1, NUM_CATEGORIES + 1)),
        "bbox": [float(x), float(y), float(w), float(h)],
        "area": float(w * h),
        "iscrowd": int(rng.random() < 0.01),
    }
