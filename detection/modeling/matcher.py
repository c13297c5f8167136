"""IoU matching of predictions (anchors, proposals) to ground-truth boxes."""

from __future__ import annotations

import torch

NEGATIVE = -1  # best IoU below the low threshold
IGNORE = -2  # best IoU between the thresholds


class Matcher:
    """Assign each prediction the index of its best ground truth, or NEGATIVE / IGNORE.

    With `allow_low_quality_matches` (the RPN), every ground truth also keeps the predictions
    that overlap it most, even below the high threshold, so that no object goes unmatched.
    """

    def __init__(self, low: float, high: float, allow_low_quality_matches: bool = False) -> None:
        if low > high:
            raise ValueError(f"matcher thresholds must satisfy low <= high, got {low} > {high}")
        self.low = low
        self.high = high
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: torch.Tensor) -> torch.Tensor:
        """`iou` [num_gt, num_pred] (num_gt > 0) -> matches [num_pred] (int64)."""
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
