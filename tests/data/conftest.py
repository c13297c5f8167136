"""Small COCO-format datasets written into tmp_path, and a tiny shapes registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detection.data import shapes


def write_coco(path: Path, images: list, annotations: list, categories: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps spells a non-finite box NaN, which Python's json (and pycocotools) reads back
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


@pytest.fixture
def coco_writer():
    """write_coco(path, images, annotations, categories) -> path."""
    return write_coco


@pytest.fixture
def messy_coco(tmp_path):
    """A json with every case the dataset must handle: crowd, degenerate and clipped boxes,
    non-contiguous category ids, images without boxes, grayscale, RGBA and palette images."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    specs = [  # id, file, mode, (w, h)
        (10, "rgb.jpg", "RGB", (64, 48)),
        (11, "gray.png", "L", (50, 40)),
        (12, "rgba.png", "RGBA", (40, 60)),
        (13, "empty.jpg", "RGB", (32, 32)),
        (14, "crowd_only.png", "P", (30, 20)),
    ]
    images = []
    for image_id, name, mode, (w, h) in specs:
        channels = {"RGB": 3, "L": 1, "RGBA": 4, "P": 1}[mode]
        arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8).squeeze()
        Image.fromarray(arr, mode="L" if mode == "P" else mode).convert(mode).save(img_dir / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    categories = [  # ids out of order and with gaps
        {"id": 42, "name": "zebra"},
        {"id": 3, "name": "cat"},
        {"id": 7, "name": "dog"},
    ]
    nan = float("nan")
    anns = [
        (1, 10, 3, [5, 6, 20, 10], 0),  # fine
        (2, 10, 42, [30, 1, 10.5, 30], 0),  # fine
        (3, 10, 7, [0, 0, 64, 48], 1),  # crowd
        (4, 10, 7, [10, 10, 0, 5], 0),  # zero width
        (5, 10, 3, [10, 10, 5, -2], 0),  # negative height
        (6, 10, 3, [nan, 10, 5, 5], 0),  # non-finite
        (7, 10, 3, [70, 10, 5, 5], 0),  # right of the image
        (8, 11, 7, [-5, 30, 20, 20], 0),  # clipped on two sides: [0, 30, 15, 40]
        (9, 12, 42, [1, 2, 3, 4], 0),
        (10, 12, 7, [4, 50, 30, 9], 0),
        (11, 14, 3, [2, 2, 10, 10], 1),  # crowd only image
    ]
    annotations = [
        {"id": a, "image_id": i, "category_id": c, "bbox": b, "iscrowd": z, "area": 1.0}
        for a, i, c, b, z in anns
    ]
    ann_path = write_coco(tmp_path / "ann.json", images, annotations, categories)
    return ann_path, img_dir


@pytest.fixture
def tiny_shapes(monkeypatch, tmp_path):
    """Registered shapes sets shrunk to a few images, generated under a tmp dataset root."""
    root = tmp_path / "datasets"
    monkeypatch.setenv("RESDET_DATASETS", str(root))
    monkeypatch.setitem(shapes.SHAPES_DATASETS, "shapes_train", ("train", 24, 1))
    monkeypatch.setitem(shapes.SHAPES_DATASETS, "shapes_val", ("val", 10, 2))
    return root
