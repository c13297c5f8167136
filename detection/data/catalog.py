"""Registered dataset names and where they live under the dataset root.

The root is `$RESDET_DATASETS` (default `./datasets`), laid out as the datasets ship:
`coco/annotations/instances_train2017.json`, `coco/train2017/`, ... The synthetic `shapes_*`
sets are generated there on first use (`shapes/annotations/instances_train.json`, `shapes/train/`).
"""

from __future__ import annotations

import os
from pathlib import Path

# name -> (annotation json, image folder), relative to the dataset root
DATASETS: dict[str, tuple[str, str]] = {
    "coco_2017_train": ("coco/annotations/instances_train2017.json", "coco/train2017"),
    "coco_2017_val": ("coco/annotations/instances_val2017.json", "coco/val2017"),
    "coco_2014_train": ("coco/annotations/instances_train2014.json", "coco/train2014"),
    "coco_2014_val": ("coco/annotations/instances_val2014.json", "coco/val2014"),
    "coco_2014_minival": ("coco/annotations/instances_minival2014.json", "coco/val2014"),
    # the embedded synthetic dataset, generated on first use (detection.data.shapes)
    "shapes_train": ("shapes/annotations/instances_train.json", "shapes/train"),
    "shapes_val": ("shapes/annotations/instances_val.json", "shapes/val"),
}


def dataset_root() -> Path:
    """The folder registered names are resolved under."""
    return Path(os.environ.get("RESDET_DATASETS", "datasets"))


def resolve_dataset(
    name: str | None, annotations: str | None = None, images: str | None = None
) -> tuple[Path, Path]:
    """(annotation json, image folder) of a dataset config; explicit paths beat the name."""
    if name is not None and name not in DATASETS and (annotations is None or images is None):
        raise ValueError(
            f"unknown dataset {name!r}: registered names are {', '.join(DATASETS)}; "
            "or set both annotations and images"
        )
    if name is None and (annotations is None or images is None):
        raise ValueError("a dataset needs a registered name or both annotations and images")
    registered = DATASETS.get(name or "")
    root = dataset_root()
    ann = Path(annotations) if annotations is not None else root / registered[0]
    img = Path(images) if images is not None else root / registered[1]
    return ann, img
