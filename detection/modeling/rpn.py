"""Region proposal network: objectness and box deltas per anchor, proposals, and its loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .matcher import Matcher, match_targets
from .sampler import sample_balanced


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then 1x1 objectness and 1x1 box deltas.

    Args:
        in_channels: channels C of every input feature map (and of the 3x3 conv's output).
        num_anchors: anchors A per location.
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list, list]:
        """Objectness logits and box deltas of every anchor.

        Args:
            features: one map [N, C, H_l, W_l] per level l.

        Returns:
            logits: one [N, A, H_l, W_l] per level.
            deltas: one [N, A * 4, H_l, W_l] per level (dx, dy, dw, dh of each anchor in turn).
        """
        # the two 1x1 convs as one (their weights stacked: a pass over each map fewer, forward
        # and backward); the modules stay, so checkpoints and converted weights keep their keys
        weight = torch.cat([self.objectness.weight, self.deltas.weight])
        bias = torch.cat([self.objectness.bias, self.deltas.bias])
        a = self.objectness.out_channels
        logits, deltas = [], []
        for f in features:
            t = F.relu(self.conv(f), inplace=True)
            both = F.conv2d(t, weight, bias)
            logits.append(both[:, :a])
            deltas.append(both[:, a:])
        return logits, deltas


def _flatten(x: torch.Tensor, channels: int) -> torch.Tensor:
    """[N, A*C, H, W] -> [N, H*W*A, C], in the anchors' (y, x, anchor) order."""
    n, _, h, w = x.shape
    return x.view(n, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, channels)


class RPN(nn.Module):
    """Region proposal network: scores every anchor and turns the best ones into proposals.

    Proposals per image: the anchors' deltas decoded, the `pre_nms_topk` highest scoring anchors
    of each level, clipped to the image, boxes smaller than `min_box_size` dropped, NMS per level
    at `nms_thresh`, and the `post_nms_topk` best kept. In training the anchors are matched to the
    ground truth at `iou_thresholds` and `batch_size_per_image` of them sampled for the losses.

    Args:
        anchor_generator: the anchors of every level; the same number per location on each.
        in_channels: channels of the feature maps the RPN runs on.
        pre_nms_topk: (train, test) anchors kept per level and image before NMS.
        post_nms_topk: (train, test) proposals kept per image after NMS.
        nms_thresh: IoU above which NMS removes the lower scoring proposal.
        min_box_size: proposals with a side shorter than this (pixels) are dropped.
        batch_size_per_image: anchors sampled per image for the losses.
        positive_fraction: at most this fraction of the sampled anchors is positive.
        iou_thresholds: (low, high): anchors below `low` IoU with every ground truth are
            negatives, from `high` on positives (and each ground truth's best anchors too).
        smooth_l1_beta: beta of the box regression's smooth-L1 loss.
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        in_channels: int,
        *,
        pre_nms_topk: tuple[int, int],
        post_nms_topk: tuple[int, int],
        nms_thresh: float = 0.7,
        min_box_size: float = 1e-3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        iou_thresholds: Sequence[float] = (0.3, 0.7),
        smooth_l1_beta: float = 1.0 / 9,
    ) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        (num_anchors,) = set(anchor_generator.num_anchors_per_location)
        self.head = RPNHead(in_channels, num_anchors)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(iou_thresholds[0], iou_thresholds[1], allow_low_quality_matches=True)
        self.pre_nms_topk = pre_nms_topk  # (train, test)
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.smooth_l1_beta = smooth_l1_beta

    def forward(
        self,
        features: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        padded_size: Sequence[int],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Proposals of every image, and the RPN's losses in training.

        Args:
            features: one map [N, C, H_l, W_l] per anchor level, of the padded batch.
            image_sizes: (height, width) of each image inside the padded batch.
            padded_size: (height, width) of the padded batch.
            targets: per image, "boxes" [G, 4] (xyxy, float) of the ground truth; needed in
                training.

        Returns:
            proposals: per image, boxes [P_i, 4] (xyxy, pixels of the batch, clipped to the
                image), best first, P_i <= post_nms_topk.
            losses: {"loss_rpn_cls", "loss_rpn_box"} scalars in training; empty in eval mode.
        """
        logits, deltas = self.head(features)
        anchors_per_level = self.anchor_generator(features, padded_size)
        num_per_level = [a.shape[0] for a in anchors_per_level]
        anchors = torch.cat(anchors_per_level)
        # scores and boxes in fp32 also under autocast (bf16 would round 1000 px to 4 px)
        objectness = torch.cat([_flatten(x, 1) for x in logits], dim=1).squeeze(2).float()
        deltas = torch.cat([_flatten(x, 4) for x in deltas], dim=1).float()  # [N, A, 4]
        n = objectness.shape[0]
        proposals = self.box_coder.decode(deltas.detach().reshape(-1, 4), anchors.repeat(n, 1))
        proposals = proposals.view(n, -1, 4)
        boxes = self._select(proposals, objectness.detach(), image_sizes, num_per_level)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("the model is in training mode: pass targets with the images")
            losses = self._losses(anchors, objectness, deltas, targets)
        return boxes, losses

    def _select(
        self,
        proposals: torch.Tensor,
        objectness: torch.Tensor,
        image_sizes: Sequence[tuple[int, int]],
        num_per_level: list[int],
    ) -> list[torch.Tensor]:
        """Per image: top-k per level, clip, drop small boxes, NMS per level, top-k.

        proposals [N, R, 4] and objectness logits [N, R] over the R anchors of all levels.
        """
        pre_k = self.pre_nms_topk[0 if self.training else 1]
        post_k = self.post_nms_topk[0 if self.training else 1]
        device = proposals.device
        # top-k per level, all images at once
        idx, lvl, offset = [], [], 0
        for level, (ob, count) in enumerate(
            zip(objectness.split(num_per_level, 1), num_per_level, strict=True)
        ):
            top = ob.topk(min(pre_k, count), dim=1).indices
            idx.append(top + offset)
            lvl.append(torch.full_like(top, level))
            offset += count
        idx = torch.cat(idx, dim=1)
        levels = torch.cat(lvl, dim=1)
        batch = torch.arange(proposals.shape[0], device=device)[:, None]
        scores = objectness[batch, idx].sigmoid()
        proposals = proposals[batch, idx]
        out = []
        for boxes, sc, lv, size in zip(proposals, scores, levels, image_sizes, strict=True):
            boxes = clip_boxes_to_image(boxes, size)
            keep = remove_small_boxes(boxes, self.min_box_size)
            boxes, sc, lv = boxes[keep], sc[keep], lv[keep]
            keep = batched_nms(boxes, sc, lv, self.nms_thresh)[:post_k]
            out.append(boxes[keep])
        return out

    def _losses(
        self,
        anchors: torch.Tensor,
        objectness: torch.Tensor,
        deltas: torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Objectness (binary cross-entropy) and smooth-L1 box losses over sampled anchors.

        anchors [R, 4]; objectness logits [N, R]; deltas [N, R, 4].
        """
        labels, reg_targets, pos_all, neg_all = [], [], [], []
        num_anchors = anchors.shape[0]
        for i, t in enumerate(targets):
            label, matched = match_targets(self.matcher, t["boxes"], anchors)
            label = label.to(torch.float32)
            pos, neg = sample_balanced(label, self.batch_size_per_image, self.positive_fraction)
            pos_all.append(pos + i * num_anchors)
            neg_all.append(neg + i * num_anchors)
            labels.append(label)
            reg_targets.append(self.box_coder.encode(matched, anchors))
        pos = torch.cat(pos_all)
        sampled = torch.cat([pos, *neg_all])
        labels = torch.cat(labels)
        reg_targets = torch.cat(reg_targets)
        deltas = deltas.reshape(-1, 4)
        box_loss = F.smooth_l1_loss(
            deltas[pos], reg_targets[pos], beta=self.smooth_l1_beta, reduction="sum"
        ) / max(sampled.numel(), 1)
        cls_loss = F.binary_cross_entropy_with_logits(
            objectness.reshape(-1)[sampled], labels[sampled]
        )
        return {"loss_rpn_cls": cls_loss, "loss_rpn_box": box_loss}
