"""Balanced sampling of positive and negative training examples."""

from __future__ import annotations

import torch


def sample_balanced(
    labels: torch.Tensor, batch_size: int, positive_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of sampled positives (labels >= 1) and negatives (labels == 0) of one image.

    At most `batch_size * positive_fraction` positives; negatives fill the rest of the batch.
    Elements labelled -1 are never sampled. Draws from torch's global random generator.

    Args:
        labels: [P] per anchor or proposal: class (>= 1), 0 background, -1 ignored.
        batch_size: most elements sampled in all.
        positive_fraction: largest share of positives in `batch_size`.

    Returns:
        positive indices [p] and negative indices [n] into `labels` (int64, random order),
        p + n <= batch_size.
    """
    positive = torch.where(labels >= 1)[0]
    negative = torch.where(labels == 0)[0]
    num_pos = min(positive.numel(), int(batch_size * positive_fraction))
    num_neg = min(negative.numel(), batch_size - num_pos)
    pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
    neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
    return pos, neg
