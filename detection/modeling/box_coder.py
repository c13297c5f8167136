"""Box coding: (dx, dy, dw, dh) deltas between reference boxes and targets (R-CNN paper)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Largest dw/dh allowed when decoding, so that exp() cannot overflow: a box may grow ~62x.
DEFAULT_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode xyxy targets relative to xyxy references and decode deltas back.

    With reference centre (x, y) and size (w, h) and target (x', y', w', h'), the deltas are
    (wx (x' - x) / w, wy (y' - y) / h, ww log(w' / w), wh log(h' / h)). The arithmetic follows
    torchvision's BoxCoder operation for operation (equal outputs on equal inputs).

    Args:
        weights: (wx, wy, ww, wh), the scale of each delta.
        clamp: the largest dw, dh (after dividing by the weights) that decode exponentiates.
    """

    def __init__(self, weights: Sequence[float], clamp: float = DEFAULT_CLAMP) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.clamp = clamp

    def encode(self, targets: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Deltas [N, 4] that turn `references` [N, 4] into `targets` [N, 4] (both xyxy)."""
        wx, wy, ww, wh = torch.as_tensor(self.weights, dtype=targets.dtype, device=targets.device)
        ref_w = references[:, 2:3] - references[:, 0:1]
        ref_h = references[:, 3:4] - references[:, 1:2]
        ref_x = references[:, 0:1] + 0.5 * ref_w
        ref_y = references[:, 1:2] + 0.5 * ref_h
        gt_w = targets[:, 2:3] - targets[:, 0:1]
        gt_h = targets[:, 3:4] - targets[:, 1:2]
        gt_x = targets[:, 0:1] + 0.5 * gt_w
        gt_y = targets[:, 1:2] + 0.5 * gt_h
        dx = wx * (gt_x - ref_x) / ref_w
        dy = wy * (gt_y - ref_y) / ref_h
        dw = ww * torch.log(gt_w / ref_w)
        dh = wh * torch.log(gt_h / ref_h)
        return torch.cat((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Boxes [N, K, 4] (xyxy) from deltas [N, K*4] (K per reference) and references [N, 4].

        The boxes have the deltas' dtype; they are not clipped to any image.
        """
        references = references.to(deltas.dtype)
        widths = references[:, 2] - references[:, 0]
        heights = references[:, 3] - references[:, 1]
        ctr_x = references[:, 0] + 0.5 * widths
        ctr_y = references[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.clamp)
        pred_x = dx * widths[:, None] + ctr_x[:, None]
        pred_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        boxes = torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), 2)
        return boxes
