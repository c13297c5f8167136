"""Fixtures: hand-made COCO ground truth and detections, a tiny image dataset, a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from evaluation_helpers import (
    REPO,
    TINY_OVERRIDES,
    handmade_detections,
    handmade_gt,
    write_json,
)
from PIL import Image

from detection import build_model, load_config
from detection.utils.checkpoint import model_checkpoint, save_atomic


@pytest.fixture
def handmade(tmp_path):
    """(annotation json path, detections) of the hand-made set."""
    return write_json(tmp_path / "gt.json", handmade_gt()), handmade_detections()


@pytest.fixture
def tiny_coco(tmp_path):
    """(annotation json, image folder) of 3 small noise images with boxes of 3 categories."""
    rng = np.random.default_rng(1)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    sizes = {7: (96, 72), 8: (80, 100), 9: (120, 90)}
    images = []
    for image_id, (w, h) in sizes.items():
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(img_dir / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": w, "height": h})
    boxes = [(7, 5, [4, 6, 40, 30]), (7, 11, [50, 20, 30, 40]), (8, 2, [10, 10, 60, 70]),
             (9, 11, [5, 5, 20, 20]), (9, 5, [30, 30, 80, 50])]  # fmt: skip
    annotations = [
        {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
         "iscrowd": 0}
        for k, (i, c, b) in enumerate(boxes)
    ]  # fmt: skip
    categories = [{"id": 2, "name": "red"}, {"id": 5, "name": "green"}, {"id": 11, "name": "blue"}]
    ann = write_json(
        tmp_path / "tiny.json",
        {"images": images, "annotations": annotations, "categories": categories},
    )
    return ann, img_dir


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random-weights ResNet-18 C4 checkpoint for 3 classes (red, green, blue)."""
    cfg = load_config(REPO / "configs/coco/faster_rcnn_R18_C4_1x.yaml", TINY_OVERRIDES)
    torch.manual_seed(0)
    names = ["red", "green", "blue"]
    model = build_model(cfg, class_names=names)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_atomic(model_checkpoint(model.state_dict(), cfg, names), path)
    return path
