"""Registered dataset names and where they live under the dataset root.

The root is `$RESDET_DATASETS` (default `./datasets`), laid out as the datasets ship:
`coco/annotations/instances_train2017.json`, `coco/train2017/`, ... The synthetic `shapes_*`
sets are generated there on first use (`shapes/annotations/instances_train.json`, `shapes/train/`).

A leaf module: the config checks names against this registry and detection.data resolves them,
so neither package has to import the other for it.
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


def is_resolvable(name: str | None, annotations: str | None, images: str | None) -> bool:
    """Whether a dataset spec says where its files are: both paths given, or a registered name
    (explicit paths beat the name, so an unregistered name is fine with both)."""
    return (annotations is not None and images is not None) or name in DATASETS
