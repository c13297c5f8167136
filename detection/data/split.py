"""Split a COCO-format json into train / val, and keep a subset of its classes.

Images are never copied: both outputs keep every image's `file_name`, so they use the same image
folder as the input. Splits are by image (all boxes of an image go to the same side):
- `every=k`: in the file's image order, the k-th, 2k-th, ... image (indices k-1, 2k-1, ...) goes
  to val, the rest to train; deterministic, and what ../datasets/raccoon's README agrees on;
- `val_fraction=f`: round(f * n) images drawn at random (numpy, `seed`) go to val.
`classes` keeps only the named categories (in the input's category order and ids) and their
annotations; images left without boxes stay in both outputs as background images (training
drops them unless data.filter_empty is false; evaluation counts their false detections).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np


def keep_classes(data: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """A copy of COCO json `data` with only the categories named in `classes` and their boxes.

    ValueError, naming the known categories, for a name the file does not have.
    """
    names = [c["name"] for c in data.get("categories", [])]
    unknown = [c for c in classes if c not in names]
    if unknown:
        hints = [difflib.get_close_matches(u, names, n=1) for u in unknown]
        said = ", ".join(
            f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
            for u, h in zip(unknown, hints, strict=True)
        )
        raise ValueError(f"unknown class {said}; the file has: {', '.join(names)}")
    kept = {c["id"] for c in data["categories"] if c["name"] in set(classes)}
    out = {k: v for k, v in data.items() if k not in ("categories", "annotations")}
    out["categories"] = [copy.deepcopy(c) for c in data["categories"] if c["id"] in kept]
    out["annotations"] = [a for a in data.get("annotations", []) if a["category_id"] in kept]
    return out


def val_indices(
    n: int, *, every: int | None = None, val_fraction: float | None = None, seed: int = 0
) -> list[int]:
    """Indices (into the image list, in file order) of the images that go to val."""
    if (every is None) == (val_fraction is None):
        raise ValueError("give exactly one of every and val_fraction")
    if every is not None:
        if every < 2:
            raise ValueError(f"every must be at least 2 (every k-th image to val), got {every}")
        return list(range(every - 1, n, every))
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    count = round(val_fraction * n)
    return sorted(np.random.default_rng(seed).choice(n, size=count, replace=False).tolist())


def _subset(data: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in data["images"] if im["id"] in image_ids]
    out["annotations"] = [a for a in data.get("annotations", []) if a["image_id"] in image_ids]
    return out


def split_coco(data: dict[str, Any], val: Sequence[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train, val) COCO dicts: the images at indices `val` (file order) and their boxes go to
    val, the others to train; categories and other top-level keys are copied to both."""
    images = data.get("images", [])
    val_ids = {images[i]["id"] for i in val}
    train_ids = {im["id"] for im in images} - val_ids
    return _subset(data, train_ids), _subset(data, val_ids)


def class_counts(data: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(class name, images with it, boxes) per category, crowd boxes included, in file order."""
    boxes: dict[int, int] = {}
    images: dict[int, set[int]] = {}
    for a in data.get("annotations", []):
        boxes[a["category_id"]] = boxes.get(a["category_id"], 0) + 1
        images.setdefault(a["category_id"], set()).add(a["image_id"])
    return [
        (c["name"], len(images.get(c["id"], ())), boxes.get(c["id"], 0))
        for c in data.get("categories", [])
    ]
