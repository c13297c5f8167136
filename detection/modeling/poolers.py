"""RoI feature extraction: RoI pooling (the paper's) or RoIAlign, over one or several levels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import roi_align, roi_pool

from .parallel_roi import roi_align_threads, roi_pool_threads
from .parallel_roi import thread_pool as _thread_pool

# torchvision's CPU RoI kernels run on one thread. From PARALLEL_MIN_ROIS RoIs on, the work is
# split over torch.get_num_threads() Python threads (the kernels release the GIL): at inference
# the RoIs, in training also the backward's channels (parallel_roi.py); the outputs and the
# gradients are bit-identical to one call of torchvision's kernels.
PARALLEL_MIN_ROIS = 64


def assign_levels(
    boxes: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_size: int = 224,
    canonical_level: int = 4,
) -> torch.Tensor:
    """FPN level of each box (eq. 1 of the FPN paper), as an index from min_level.

    Args:
        boxes: [R, 4] (xyxy, input pixels).
        min_level, max_level: the levels (log2 of the stride) the pooler has.
        canonical_size, canonical_level: a box of `canonical_size` pixels (square root of the
            area) maps to `canonical_level`; twice as large, one level up.

    Returns:
        [R] (int64), in 0..max_level - min_level.
    """
    size = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    level = torch.floor(
        canonical_level + torch.log2(size / canonical_size) + torch.tensor(1e-6, dtype=size.dtype)
    )
    return torch.clamp(level, min=min_level, max=max_level).to(torch.int64) - min_level


class RoIPooler(nn.Module):
    """Pool a fixed-size feature for each box from the level its size selects.

    With one feature map every box is pooled from it; with several (FPN) each box is pooled from
    the level `assign_levels` gives it.

    Args:
        pooler_type: "roi_pool" (the paper's max pooling) or "roi_align".
        resolution: S, the side of each pooled feature.
        strides: stride of each feature map the forward gets, finest first (powers of two).
        sampling_ratio: RoIAlign's sampling points per bin side (0: adaptive).
        aligned: RoIAlign's half-pixel offset (False as torchvision's Faster R-CNN).
        canonical_size, canonical_level: the level assignment's (see assign_levels).
    """

    def __init__(
        self,
        pooler_type: str,
        resolution: int,
        strides: Sequence[int],
        *,
        sampling_ratio: int = 0,
        aligned: bool = False,
        canonical_size: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if pooler_type not in ("roi_pool", "roi_align"):
            raise ValueError(f"unknown pooler type {pooler_type!r}: use roi_pool or roi_align")
        self.pooler_type = pooler_type
        self.resolution = (resolution, resolution)
        self.scales = [1.0 / s for s in strides]
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.min_level = int(math.log2(strides[0]))
        self.max_level = int(math.log2(strides[-1]))
        self.canonical_size = canonical_size
        self.canonical_level = canonical_level

    def _pool(self, x: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        # pooling runs in fp32 under autocast: CPU roi_pool has no bf16 kernel, and boxes in
        # bf16 would be rounded to 4 px at 1000 px
        x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
        rois = rois.to(x.dtype)
        threads = torch.get_num_threads()
        if x.device.type != "cpu" or threads < 2 or rois.shape[0] < PARALLEL_MIN_ROIS:
            return self._op(x, rois, scale)
        if torch.is_grad_enabled() and x.requires_grad:
            if self.pooler_type == "roi_pool":
                return roi_pool_threads(x, rois, self.resolution, scale, threads)
            return roi_align_threads(
                x, rois, self.resolution, scale, self.sampling_ratio, self.aligned, threads
            )
        x = x.contiguous()  # once: the kernel would copy a channels_last map per call
        chunks = rois.chunk(threads)
        return torch.cat(list(_thread_pool(threads).map(lambda r: self._op(x, r, scale), chunks)))

    def _op(self, x: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        if self.pooler_type == "roi_pool":
            return roi_pool(x, rois, self.resolution, scale)
        return roi_align(x, rois, self.resolution, scale, self.sampling_ratio, self.aligned)

    def forward(
        self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Pooled features of every box.

        Args:
            features: one map [N, C, H_l, W_l] per stride, finest first.
            boxes: per image, boxes [B_i, 4] (xyxy, input pixels).

        Returns:
            [B_0 + ... + B_{N-1}, C, S, S], image by image in box order; fp32 (or the features'
            dtype where wider) also under autocast.
        """
        if len(features) != len(self.scales):
            raise ValueError(f"pooler expects {len(self.scales)} levels, got {len(features)}")
        concat = torch.cat(list(boxes), dim=0)
        ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
        rois = torch.cat([ids, concat], dim=1)
        if len(features) == 1:
            return self._pool(features[0], rois, self.scales[0])
        levels = assign_levels(
            concat, self.min_level, self.max_level, self.canonical_size, self.canonical_level
        )
        first = features[0]
        dtype = torch.promote_types(first.dtype, torch.float32)
        out = first.new_zeros((rois.shape[0], first.shape[1], *self.resolution), dtype=dtype)
        for level, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            idx = torch.where(levels == level)[0]
            pooled = self._pool(feature, rois[idx], scale)
            out[idx] = pooled.to(out.dtype)
        return out
