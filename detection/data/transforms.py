"""Albumentations pipelines that carry boxes (pascal_voc xyxy pixels) and their labels.

Training: resize the shortest edge to one of `input.min_size_train` (capped by
`input.max_size_train`), horizontal flip, optional vertical flip and photometric jitter.
Evaluation hands the model the original image (the model resizes in eval mode, as
torchvision's does), so the eval transform only converts to a tensor; `resize_test` is the
deterministic resize for tools that want to show the model's test-time input.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.core.transforms_interface import BaseTransformInitSchema  # noqa: E402

from detection.config import Config  # noqa: E402


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB array -> 3xHxW float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(h, w) after scaling the shortest edge to min_size, the longest capped at max_size."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


class ResizeShortestEdge(A.DualTransform):
    """Scale the shortest edge to a size drawn from `min_sizes`, the longest capped at `max_size`,
    keeping the aspect ratio (Faster R-CNN's multi-scale training resize)."""

    class InitSchema(BaseTransformInitSchema):
        """The constructor arguments, as albumentations validates them."""

        min_sizes: list[int]
        max_size: int
        interpolation: int

    def __init__(
        self,
        min_sizes: Sequence[int],
        max_size: int,
        interpolation: int = cv2.INTER_LINEAR,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        if not min_sizes or min(min_sizes) <= 0 or max_size <= 0:
            raise ValueError(
                f"ResizeShortestEdge needs positive sizes, got min_sizes={list(min_sizes)} "
                f"max_size={max_size} (check input.min_size_* and input.max_size_*)"
            )
        self.min_sizes = list(min_sizes)
        self.max_size = max_size
        self.interpolation = interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        """Draw the shortest-edge size of this call: {"new_shape": (h, w)}."""
        height, width = params["shape"][:2]
        size = self.py_random.choice(self.min_sizes)
        return {"new_shape": resized_shape(height, width, size, self.max_size)}

    def apply(self, img: np.ndarray, new_shape: tuple[int, int], **params: Any) -> np.ndarray:
        """The image resized to new_shape (h, w)."""
        if img.shape[:2] == tuple(new_shape):
            return img
        return cv2.resize(img, (new_shape[1], new_shape[0]), interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, new_shape: tuple[int, int], **params: Any):
        """The mask resized to new_shape (h, w), nearest neighbour."""
        return cv2.resize(mask, (new_shape[1], new_shape[0]), interpolation=cv2.INTER_NEAREST)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        """The boxes, unchanged: albumentations keeps them normalized to [0, 1] between
        transforms, and a resize of the whole image leaves normalized boxes where they are."""
        return bboxes

    def apply_to_keypoints(
        self, keypoints: np.ndarray, new_shape: tuple[int, int], shape: tuple, **params: Any
    ) -> np.ndarray:
        """The keypoints scaled with the image."""
        keypoints = keypoints.copy()
        keypoints[:, 0] *= new_shape[1] / shape[1]
        keypoints[:, 1] *= new_shape[0] / shape[0]
        return keypoints

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """The constructor arguments albumentations serializes."""
        return ("min_sizes", "max_size", "interpolation")


class DetectionTransform:
    """An albumentations pipeline over (image, xyxy boxes) that returns the CHW float tensor, the
    transformed boxes and, for each kept box, its index in the input (so labels, crowd flags
    and ids stay aligned however many boxes a crop or clip removes)."""

    def __init__(self, augmentations: Sequence[A.BasicTransform] = ()):
        self.augmentations = list(augmentations)
        self.compose = None
        if self.augmentations:
            self.compose = A.Compose(
                self.augmentations,
                bbox_params=A.BboxParams(
                    format="pascal_voc", label_fields=["box_index"], clip=True, min_area=0.0
                ),
            )

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, seed: int | None = None
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """(image tensor, boxes float32 [M, 4] in its pixels, kept input indices int64 [M])."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if self.compose is None:
            return to_tensor(image), boxes, np.arange(len(boxes), dtype=np.int64)
        if seed is not None:
            # a per-sample seed makes the augmentation a function of (seed, iteration) alone,
            # whichever worker process draws the sample
            self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = self.compose(image=image, bboxes=boxes, box_index=np.arange(len(boxes)))
        image = out["image"]
        height, width = image.shape[:2]
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        index = np.asarray(out["box_index"], dtype=np.int64).reshape(-1)
        # normalize/denormalize round trips can leave boxes a hair outside the image
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return to_tensor(image), boxes[keep], index[keep]

    def __repr__(self) -> str:
        return f"DetectionTransform({self.augmentations})"


def train_augmentations(
    min_sizes: Sequence[int],
    max_size: int,
    flip: bool = True,
    photometric: bool = False,
    vflip: bool = False,
) -> list[A.BasicTransform]:
    """Multi-scale shortest-edge resize, horizontal flip, optional vertical flip and colour
    jitter."""
    augs: list[A.BasicTransform] = [ResizeShortestEdge(min_sizes, max_size)]
    if flip:
        augs.append(A.HorizontalFlip(p=0.5))
    if vflip:
        augs.append(A.VerticalFlip(p=0.5))
    if photometric:
        augs.append(A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8))
    return augs


def resize_test(min_size: int, max_size: int) -> DetectionTransform:
    """Deterministic shortest-edge resize, the size the model itself resizes to in eval mode."""
    return DetectionTransform([ResizeShortestEdge([min_size], max_size)])


def build_transforms(cfg: Config, train: bool) -> DetectionTransform:
    """Training: resize + flips (+ jitter) from cfg.input; evaluation: decode -> tensor only."""
    if not train:
        return DetectionTransform()
    return DetectionTransform(
        train_augmentations(
            cfg.input.min_size_train,
            cfg.input.max_size_train,
            flip=cfg.input.flip,
            photometric=cfg.input.photometric,
            vflip=cfg.input.vflip,
        )
    )
