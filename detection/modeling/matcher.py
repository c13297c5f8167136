"""IoU matching of predictions (anchors, proposals) to ground-truth boxes."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

NEGATIVE = -1  # best IoU below the low threshold
IGNORE = -2  # best IoU between the thresholds


class Matcher:
    """Assign each prediction the index of its best ground truth, or NEGATIVE / IGNORE.

    A prediction whose best IoU is at least `high` is matched to that ground truth; below `low`
    it is NEGATIVE (background); in between it is IGNORE (left out of the loss). With
    `allow_low_quality_matches` (the RPN), every ground truth also keeps the predictions that
    overlap it most, even below `high`, so that no object goes unmatched.

    Args:
        low: IoU below which a prediction is background.
        high: IoU from which a prediction is matched (`low <= high`; equal: no IGNORE band).
        allow_low_quality_matches: also match each ground truth's best-overlapping predictions.
    """

    def __init__(self, low: float, high: float, allow_low_quality_matches: bool = False) -> None:
        if low > high:
            raise ValueError(f"matcher thresholds must satisfy low <= high, got {low} > {high}")
        self.low = low
        self.high = high
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: torch.Tensor) -> torch.Tensor:
        """Match predictions to ground truth.

        Args:
            iou: IoU matrix [num_gt, num_pred], num_gt > 0.

        Returns:
            matches [num_pred] (int64): the matched ground-truth index, NEGATIVE or IGNORE.
        """
        best, matches = iou.max(dim=0)
        original = matches.clone() if self.allow_low_quality_matches else None
        matches[best < self.low] = NEGATIVE
        matches[(best >= self.low) & (best < self.high)] = IGNORE
        if original is not None:
            best_per_gt = iou.max(dim=1).values
            # every prediction that ties for a ground truth's best overlap
            pred_idx = torch.where(iou == best_per_gt[:, None])[1]
            matches[pred_idx] = original[pred_idx]
        return matches


def match_targets(
    matcher: Matcher,
    gt_boxes: torch.Tensor,
    predictions: torch.Tensor,
    gt_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training label and the matched ground-truth box of every prediction of one image.

    Args:
        matcher: decides which ground truth (if any) each prediction is matched to.
        gt_boxes: ground-truth boxes [G, 4] (xyxy); G may be 0 (every prediction background).
        predictions: anchors or proposals [P, 4] (xyxy).
        gt_labels: class of each ground truth [G] (1..K); None gives every ground truth class 1
            (the RPN's objectness).

    Returns:
        labels [P] (int64): the matched ground truth's class, 0 for background (NEGATIVE) and
            -1 for predictions left out of the loss (IGNORE).
        matched_boxes [P, 4]: the matched ground-truth box of each prediction (of ground truth 0
            for background and ignored ones; all zeros when G = 0).
    """
    if gt_boxes.numel() == 0:
        labels = torch.zeros(predictions.shape[0], dtype=torch.int64, device=predictions.device)
        return labels, torch.zeros_like(predictions)
    matches = matcher(box_iou(gt_boxes, predictions))
    index = matches.clamp(min=0)
    labels = torch.ones_like(matches) if gt_labels is None else gt_labels[index].to(torch.int64)
    labels[matches == NEGATIVE] = 0
    labels[matches == IGNORE] = -1
    return labels, gt_boxes[index]
