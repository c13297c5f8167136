"""Registered dataset names and where they live under the dataset root.

The root is `$RESDET_DATASETS` (default `./datasets`), laid out as the datasets ship:
`coco/annotations/instances_train2017.json`, `coco/train2017/`, ... The synthetic `shapes_*`
sets are generated there on first use (`shapes/annotations/instances_train.json`, `shapes/train/`).

A leaf module: the config checks names against this registry and detection.data resolves them,
so neither package has to import the other for it. `dataset_label` names a dataset in logs and
reports: by its registered name, by a free-text `name`, or else by its annotation file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

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


# folders that say what a file is rather than which dataset it belongs to: a label skips them
GENERIC_FOLDERS = frozenset({"annotations", "annotation", "labels", "json"})


class DatasetSpec(Protocol):
    """What dataset_label reads of a data.train / data.test config."""

    name: str | None
    annotations: str | None


def file_label(annotations: str | os.PathLike) -> str:
    """An annotation file's label, FOLDER/STEM: its folder, or the one above it when that is a
    generic folder such as "annotations" (COCO's layout), then the file name without .json.

    mydata/annotations/instances_val.json -> "mydata/instances_val", voc/voc_2007_test.json ->
    "voc/voc_2007_test"; a relative path is taken from the current folder.
    """
    path = Path(os.path.abspath(annotations))
    folder = path.parent
    if folder.name.lower() in GENERIC_FOLDERS:
        folder = folder.parent
    return f"{folder.name}/{path.stem}" if folder.name else path.stem


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def dataset_label(spec: DatasetSpec) -> str:
    """The name a dataset config is shown by in logs, metrics.json and reports.

    - a registered name without annotations (or with the registered file itself): that name;
    - annotations given and the name registered (such as the default coco_2017_val) or unset:
      the file's label (see file_label), since the registered name would be wrong;
    - annotations given and a name that is not registered: that name, a free-text label.
    """
    name, annotations = spec.name, spec.annotations
    if annotations is None:
        if name is None:
            raise ValueError("a dataset needs a registered name or both annotations and images")
        return name
    if name is None:
        return file_label(annotations)
    registered = DATASETS.get(name)
    if registered is None:
        return name
    if _same_file(annotations, dataset_root() / registered[0]):
        return name
    return file_label(annotations)
