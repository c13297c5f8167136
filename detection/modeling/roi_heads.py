"""RoI heads: sample RoIs in training, pool, box head, predictor, losses and detections."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from .box_coder import BoxCoder
from .matcher import Matcher, match_targets
from .poolers import RoIPooler
from .sampler import sample_balanced


class RoIHeads(nn.Module):
    """The detector's second stage: a box head and a predictor on features pooled per region.

    In training the proposals (plus the ground-truth boxes) are matched to the ground truth at
    `iou_threshold` and `batch_size_per_image` of them sampled for the losses. In eval mode each
    proposal gives one box per class (class-specific deltas); boxes with a score above
    `score_thresh` go through per-class NMS and the `detections_per_image` best are kept.

    Args:
        pooler: pools a fixed-size feature [R, C, S, S] for each region.
        box_head: [R, C, S, S] -> [R, D] (`box_head.out_features` = D).
        predictor: [R, D] -> class logits [R, K + 1] (background first) and deltas [R, (K + 1) * 4].
        batch_size_per_image: regions sampled per image in training.
        positive_fraction: at most this fraction of the sampled regions is foreground.
        iou_threshold: regions with at least this IoU with a ground truth are its class,
            the others background.
        box_reg_weights: (wx, wy, ww, wh) of the box coder.
        smooth_l1_beta: beta of the box regression's smooth-L1 loss.
        score_thresh: detections scoring at most this are dropped.
        nms_thresh: IoU above which per-class NMS removes the lower scoring detection.
        detections_per_image: detections kept per image.
    """

    def __init__(
        self,
        pooler: RoIPooler,
        box_head: nn.Module,
        predictor: nn.Module,
        *,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        iou_threshold: float = 0.5,
        box_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta: float = 1.0 / 9,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.pooler = pooler
        self.box_head = box_head
        self.predictor = predictor
        self.matcher = Matcher(iou_threshold, iou_threshold)
        self.box_coder = BoxCoder(box_reg_weights)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image

    def forward(
        self,
        features: Sequence[torch.Tensor],
        proposals: list[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Detections of every image in eval mode, the losses in training.

        Args:
            features: the maps the pooler reads, [N, C, H_l, W_l] each, finest first.
            proposals: per image, boxes [P_i, 4] (xyxy, pixels of the batch), the RPN's.
            image_sizes: (height, width) of each image inside the padded batch.
            targets: per image, "boxes" [G, 4] (xyxy, float) and "labels" [G] (1..K); needed in
                training.

        Returns:
            detections: per image, {"boxes" [D, 4] (xyxy, clipped to the image), "scores" [D],
                "labels" [D] (int64, 1..K)}, best first; empty list in training.
            losses: {"loss_cls", "loss_box"} scalars in training; empty in eval mode.
        """
        if self.training:
            if targets is None:
                raise ValueError("the model is in training mode: pass targets with the images")
            proposals, labels, reg_targets = self._sample(proposals, targets)
        x = self.box_head(self.pooler(features, proposals))
        logits, deltas = self.predictor(x)
        logits, deltas = logits.float(), deltas.float()  # decoded in fp32 also under autocast
        if self.training:
            return [], self._losses(logits, deltas, labels, reg_targets)
        return self._detections(logits, deltas, proposals, image_sizes), {}

    def _sample(
        self, proposals: list[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Ground truth appended to the proposals, matched, and sampled with a fixed fg fraction."""
        sampled_boxes, sampled_labels, reg_targets = [], [], []
        for props, t in zip(proposals, targets, strict=True):
            gt = t["boxes"].to(props.dtype)
            props = torch.cat([props, gt])
            labels, matched = match_targets(self.matcher, gt, props, t["labels"])
            pos, neg = sample_balanced(labels, self.batch_size_per_image, self.positive_fraction)
            # in index order, so that results do not depend on the sampling order
            keep = torch.cat([pos, neg]).sort().values
            sampled_boxes.append(props[keep])
            sampled_labels.append(labels[keep])
            reg_targets.append(self.box_coder.encode(matched[keep], props[keep]))
        return sampled_boxes, sampled_labels, reg_targets

    def _losses(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        labels: list[torch.Tensor],
        reg_targets: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy over the K + 1 classes and smooth-L1 on the true class's deltas.

        logits [R, K + 1] and deltas [R, (K + 1) * 4] of the R regions sampled over all images;
        per image, labels [R_i] and regression targets [R_i, 4].
        """
        labels = torch.cat(labels)
        reg_targets = torch.cat(reg_targets)
        cls_loss = F.cross_entropy(logits, labels)
        pos = torch.where(labels > 0)[0]
        deltas = deltas.reshape(deltas.shape[0], -1, 4)
        box_loss = F.smooth_l1_loss(
            deltas[pos, labels[pos]], reg_targets[pos], beta=self.smooth_l1_beta, reduction="sum"
        ) / max(labels.numel(), 1)
        return {"loss_cls": cls_loss, "loss_box": box_loss}

    def _detections(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        proposals: list[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """Score threshold, per-class NMS and top-k per image, boxes clipped to the image."""
        num_classes = logits.shape[-1]
        counts = [p.shape[0] for p in proposals]
        boxes_all = self.box_coder.decode(deltas, torch.cat(proposals))  # [R, K+1, 4]
        scores_all = F.softmax(logits, -1)
        results = []
        for boxes, scores, size in zip(
            boxes_all.split(counts), scores_all.split(counts), image_sizes, strict=True
        ):
            boxes = clip_boxes_to_image(boxes, size)
            labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
            # drop the background column, one candidate per (RoI, class)
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_image]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results
