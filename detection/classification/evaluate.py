"""Top-1 / top-5 error of a classifier on a validation loader (all ranks together)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..utils.distributed import get_world_size
from ..utils.precision import autocast


class Normalizer(nn.Module):
    """uint8 images [N, 3, H, W] -> float, scaled to [0, 1], minus mean, over std."""

    def __init__(self, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            "std", torch.tensor(list(std)).view(1, 3, 1, 1) * 255.0, persistent=False
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised float batch, on the buffers' device."""
        x = images.to(self.mean.device, non_blocking=True).float()
        return (x - self.mean * 255.0) / self.std


def error_counts(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[int, int]:
    """(top-1 mistakes, top-k mistakes) of a batch of logits [N, K]; k is capped at K."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == labels[:, None]
    return int((~hit[:, 0]).sum()), int((~hit.any(dim=1)).sum())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    normalize: Normalizer,
    *,
    device: str,
    precision: str,
    channels_last: bool = False,
) -> dict[str, float]:
    """{"top1_err", "top5_err" (more than 5 classes only), "loss", "images"} in percent and
    nats, over every rank's shard; each image's prediction is the mean softmax of its crops."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # images, top-1 and top-5 mistakes, loss
    num_classes = 0
    for images, labels in loader:
        n, crops = images.shape[:2]
        x = normalize(images.flatten(0, 1))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        probs = logits.float().softmax(dim=1).view(n, crops, -1).mean(dim=1).cpu()
        num_classes = probs.shape[1]
        top1, top5 = error_counts(probs, labels)
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
        sums += torch.tensor([n, top1, top5, float(loss)], dtype=torch.float64)
    if get_world_size() > 1:
        # NCCL reduces CUDA tensors only
        reduced = sums.to(device) if device.startswith("cuda") else sums
        dist.all_reduce(reduced)
        sums = reduced.cpu()
    model.train(was_training)
    images, top1, top5, loss = sums.tolist()
    if images == 0:
        raise ValueError("the validation set has no images")
    result = {"top1_err": 100.0 * top1 / images, "loss": loss / images, "images": int(images)}
    if num_classes > 5:
        result["top5_err"] = 100.0 * top5 / images
    return result
