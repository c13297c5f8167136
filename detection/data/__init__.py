"""Datasets, transforms and samplers for COCO-format data."""

import os

# albumentations would otherwise query PyPI for a newer version at import
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .build import (  # noqa: E402
    build_dataset,
    build_test_loader,
    build_train_loader,
    collate,
    dataset_files,
    per_rank_batch_size,
    worker_error,
)
from .coco import COCODataset  # noqa: E402
from .coco_index import load_coco_index  # noqa: E402
from .images import ImageReadError, read_image  # noqa: E402
from .records import RecordStore  # noqa: E402
from .samplers import InferenceSampler, TrainingBatchSampler, aspect_groups  # noqa: E402
from .shapes import CLASSES as SHAPES_CLASSES  # noqa: E402
from .shapes import SHAPES_DATASETS, ensure_shapes, generate_shapes  # noqa: E402
from .transforms import (  # noqa: E402
    DetectionTransform,
    ResizeShortestEdge,
    build_transforms,
    resize_test,
    to_tensor,
    train_augmentations,
)
from .visualize import browse_dataset, draw_boxes  # noqa: E402
from .voc import convert_voc  # noqa: E402

__all__ = [
    "COCODataset",
    "DetectionTransform",
    "ImageReadError",
    "InferenceSampler",
    "RecordStore",
    "ResizeShortestEdge",
    "SHAPES_CLASSES",
    "SHAPES_DATASETS",
    "TrainingBatchSampler",
    "aspect_groups",
    "browse_dataset",
    "build_dataset",
    "dataset_files",
    "build_test_loader",
    "build_train_loader",
    "build_transforms",
    "collate",
    "convert_voc",
    "draw_boxes",
    "ensure_shapes",
    "generate_shapes",
    "load_coco_index",
    "per_rank_batch_size",
    "read_image",
    "resize_test",
    "to_tensor",
    "train_augmentations",
    "worker_error",
]
