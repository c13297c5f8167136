"""Image preprocessing of the detector: normalisation, test-time resize, padding into a batch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize_image(image: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """Bilinear resize so that the short side is `min_size` unless the long side passes `max_size`.

    The scale and output size are computed exactly as torchvision's GeneralizedRCNNTransform.
    """
    h, w = image.shape[-2:]
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return F.interpolate(
        image[None],
        scale_factor=scale,
        mode="bilinear",
        recompute_scale_factor=True,
        align_corners=False,
    )[0]


def rescale_boxes(
    boxes: torch.Tensor, from_size: Sequence[int], to_size: Sequence[int]
) -> torch.Tensor:
    """Map xyxy boxes from an image of `from_size` (h, w) to one of `to_size`."""
    ratio_h = torch.tensor(to_size[0], dtype=torch.float32, device=boxes.device) / torch.tensor(
        from_size[0], dtype=torch.float32, device=boxes.device
    )
    ratio_w = torch.tensor(to_size[1], dtype=torch.float32, device=boxes.device) / torch.tensor(
        from_size[1], dtype=torch.float32, device=boxes.device
    )
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def pad_batch(images: Sequence[torch.Tensor], size_divisibility: int) -> torch.Tensor:
    """Zero-pad images to a common size, a multiple of `size_divisibility`, and stack them."""
    h = max(img.shape[-2] for img in images)
    w = max(img.shape[-1] for img in images)
    h = int(math.ceil(h / size_divisibility) * size_divisibility)
    w = int(math.ceil(w / size_divisibility) * size_divisibility)
    batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, img in enumerate(images):
        batch[i, :, : img.shape[-2], : img.shape[-1]].copy_(img)
    return batch
