"""COCO-format detection datasets: pycocotools index -> compact records -> (image, target)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from detection.config.datasets import file_label

from .coco_index import describe_drop, load_coco_index
from .images import ImageReadError, read_image
from .transforms import DetectionTransform

logger = logging.getLogger(__name__)


class COCODataset(torch.utils.data.Dataset):
    """A COCO-format detection dataset yielding (CHW float RGB [0, 1] image, target dict).

    target: boxes float32 [N, 4] xyxy in the (transformed) image's pixels, labels int64 [N] in
    1..K, image_id, orig_size (h, w) of the decoded image; in eval mode also iscrowd int64 [N]
    (crowd boxes are kept for evaluation). Labels number the json's categories in id order.
    Indexing with (index, seed) seeds the augmentation of that one sample. `transform` is
    called as transform(image HxWx3 uint8, boxes [N, 4], seed=None) -> (CHW float tensor, boxes,
    indices of the kept input boxes), see DetectionTransform. `filter_empty` applies to training
    only: evaluation keeps every image. `check_files` looks for missing and zero-byte image
    files when the dataset is built (see load_coco_index). `label` names the dataset in the
    summary logged when it is built (detection.config.datasets.dataset_label of its config;
    by default the annotation file's label, FOLDER/STEM).
    """

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path,
        *,
        train: bool,
        transform: Callable | None = None,
        filter_empty: bool = True,
        skip_bad_images: bool = False,
        check_files: bool = True,
        label: str | None = None,
    ):
        self.annotations_path = Path(annotations)
        self.label = label if label is not None else file_label(self.annotations_path)
        self.images_dir = Path(images)
        self.train = train
        self.transform = transform if transform is not None else DetectionTransform()
        self.skip_bad_images = skip_bad_images
        index = load_coco_index(
            self.annotations_path,
            train=train,
            filter_empty=filter_empty,
            skip_bad_images=skip_bad_images,
            image_root=self.images_dir if check_files else None,
        )
        self.records = index.records
        self.class_names = index.class_names
        self.label_to_category_id = {i + 1: c for i, c in enumerate(index.category_ids)}
        self.category_id_to_label = {c: i for i, c in self.label_to_category_id.items()}
        self.drop_counts = index.drop_counts
        self.drop_examples = index.drop_examples
        self._bad_images = 0
        self._report()

    def _report(self) -> None:
        r = self.records
        counts = {k: v for k, v in self.drop_counts.items() if v}
        summary = (
            f"dataset {self.label} ({'training' if self.train else 'evaluation'}): kept "
            f"{len(self)} images, {len(r['boxes'])} boxes, {len(self.class_names)} classes "
            f"from {self.annotations_path}"
        )
        problems = {k: counts[k] for k in counts if k not in ("crowd", "empty_image")}
        if problems:
            examples = "; ".join(
                describe_drop(k, counts[k], self.drop_examples.get(k, [])) for k in problems
            )
            logger.warning("%s; dropped: %s (%s)", summary, counts, examples)
        else:
            logger.info("%s; dropped: %s", summary, counts or "nothing")

    def __len__(self) -> int:
        return len(self.records["image_id"])

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (labels are 1..K)."""
        return len(self.class_names)

    @property
    def image_ids(self) -> np.ndarray:
        """The COCO image id of every index."""
        return self.records["image_id"]

    @property
    def image_sizes(self) -> np.ndarray:
        """(N, 2) int array of every image's (height, width) from the json, without decoding."""
        return np.stack([self.records["height"], self.records["width"]], axis=1)

    @property
    def aspect_ratios(self) -> np.ndarray:
        """width / height of every image, from the json."""
        return self.records["width"] / self.records["height"].astype(np.float64)

    def file_name(self, index: int) -> str:
        """The image file of `index`, relative to the images folder."""
        start, end = self.records["name_start"][index : index + 2]
        return self.records["names"][start:end].tobytes().decode("utf-8")

    def record(self, index: int) -> dict:
        """The annotations of one image as stored (original pixels, before any transform)."""
        r = self.records
        lo, hi = r["box_start"][index : index + 2]
        return {
            "image_id": int(r["image_id"][index]),
            "file_name": self.file_name(index),
            "height": int(r["height"][index]),
            "width": int(r["width"][index]),
            "boxes": r["boxes"][lo:hi],
            "labels": r["labels"][lo:hi],
            "iscrowd": r["iscrowd"][lo:hi],
            "ann_ids": r["ann_id"][lo:hi],
        }

    def _load(self, index: int) -> tuple[np.ndarray, dict]:
        rec = self.record(index)
        image = read_image(self.images_dir / rec["file_name"], rec["image_id"])
        if image.shape[:2] != (rec["height"], rec["width"]):
            hint = (
                "; the EXIF orientation rotates it: strip the tag or swap width/height in the json"
                if image.shape[:2] == (rec["width"], rec["height"])
                else ""
            )
            raise ImageReadError(
                f"image {self.images_dir / rec['file_name']} (image id {rec['image_id']}) is "
                f"{image.shape[1]}x{image.shape[0]} but {self.annotations_path} says "
                f"{rec['width']}x{rec['height']}{hint}"
            )
        return image, rec

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, dict]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        index = int(index)
        for _ in range(len(self)):
            try:
                image, rec = self._load(index)
                break
            except ImageReadError as e:
                # in training a bad image is replaced by the next one; evaluation must see
                # every image, so there it always stops
                if not (self.skip_bad_images and self.train):
                    raise
                self._bad_images += 1
                logger.warning("skipping bad image (%d in this process): %s", self._bad_images, e)
                index = (index + 1) % len(self)
        else:
            raise ImageReadError(f"no readable image in {self.images_dir}")
        tensor, boxes, kept = self.transform(image, rec["boxes"], seed=seed)
        target = {
            "boxes": torch.from_numpy(np.array(boxes, dtype=np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(rec["labels"][kept].astype(np.int64)),
            "image_id": rec["image_id"],
            "orig_size": (int(image.shape[0]), int(image.shape[1])),
        }
        if not self.train:
            target["iscrowd"] = torch.from_numpy(rec["iscrowd"][kept].astype(np.int64))
        return tensor, target

    def __repr__(self) -> str:
        return (
            f"COCODataset({self.annotations_path}, {self.images_dir}, train={self.train}, "
            f"{len(self)} images, {self.num_classes} classes)"
        )
