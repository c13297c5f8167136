"""The detector as one traceable graph: image tensor in, (boxes, scores, labels) out.

`FasterRCNN.forward` is written for eager PyTorch: Python ints from tensor shapes, Python
`min`, caches keyed by shapes and early returns on empty tensors. A tracer (torch.jit.trace,
and the ONNX exporter built on it) would freeze those as constants of the example image, so
the exported file would only work at that size. `DeployableDetector` runs the same
computation with every size-dependent quantity kept as a tensor (shape -> resize -> pad ->
anchors -> top-k -> clip -> rescale), so one exported graph takes any image size, and it
has no branch on emptiness, so an image without detections gives empty outputs instead of
an error. It reuses the model's own modules and weights (backbone, RPN head, pooler
settings, box head, predictor, box coders).

What it does equals the eager model: the resize size is computed in float64 as Python does
for `resize_image` (float32 could give a size 1 px off), the anchors, top-k per level,
per-level NMS, per-class NMS and `detections_per_image` are the eager ones. The batched NMS
offsets boxes by class (level) times (longest image side + 1), torchvision's coordinate trick
with a bound that needs no reduction over a possibly empty tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, remove_small_boxes, roi_align, roi_pool

from ..modeling.poolers import assign_levels
from ..modeling.rcnn import FasterRCNN

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


def _clip(boxes: torch.Tensor, height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """xyxy boxes [..., 4] clipped to [0, width] x [0, height] (0-dim float tensors)."""
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), width)
    y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def _batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float, bound: torch.Tensor
) -> torch.Tensor:
    """NMS within each group: boxes of different groups are moved `bound` apart (every
    coordinate is in [0, bound), the clipped image), so that they never overlap."""
    offsets = groups.to(boxes.dtype) * bound
    return nms(boxes + offsets[:, None], scores, iou)


class DeployableDetector(nn.Module):
    """A FasterRCNN in eval mode as a single-image, trace-friendly module.

    forward(image): image [3, H, W] float RGB in [0, 1] (any H, W) -> boxes [D, 4] float32
    xyxy in the image's pixels, scores [D] float32, labels [D] int64 in 1..K; best first,
    D <= test.detections_per_image. The resize (min_size_test / max_size_test), the
    normalisation and the padding are inside, as in `model([image])`.

    Args:
        model: the detector (its modules are shared, not copied); put it on the fast path's
            folded weights first if you want those (`prepare_for_inference(channels_last=False)`).
        precision: "fp32", or "fp16": backbone, RPN head, box head and predictor in fp16,
            while box decoding, RoI pooling, NMS and scores stay in fp32 (as our autocast
            inference does). The model's weights are converted in place.
    """

    def __init__(self, model: FasterRCNN, precision: str = "fp32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        model = model.eval()
        self.dtype = PRECISIONS[precision]
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head
        self.box_head = model.roi_heads.box_head
        self.predictor = model.roi_heads.predictor
        if self.dtype != torch.float32:
            for module in (self.backbone, self.rpn_head, self.box_head, self.predictor):
                module.to(self.dtype)
        self.rpn_features = list(model.rpn_features)
        self.roi_features = list(model.roi_features)
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().float(), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().float(), False)
        self.bgr = model.input_format == "BGR"
        self.min_size = float(model.min_size_test)
        self.max_size = float(model.max_size_test)
        self.size_divisibility = int(model.size_divisibility)
        rpn = model.rpn
        for level, cell in enumerate(rpn.anchor_generator.cells):
            self.register_buffer(f"cell_anchors_{level}", cell.detach().clone().float(), False)
        self.num_levels = len(rpn.anchor_generator.cells)
        self.rpn_coder = rpn.box_coder
        self.pre_nms_topk = int(rpn.pre_nms_topk[1])
        self.post_nms_topk = int(rpn.post_nms_topk[1])
        self.rpn_nms_thresh = float(rpn.nms_thresh)
        self.rpn_min_box_size = float(rpn.min_box_size)
        heads = model.roi_heads
        pooler = heads.pooler
        self.pooler_type = pooler.pooler_type
        self.resolution = pooler.resolution
        self.scales = list(pooler.scales)
        self.sampling_ratio = int(pooler.sampling_ratio)
        self.aligned = bool(pooler.aligned)
        self.min_level = pooler.min_level
        self.max_level = pooler.max_level
        self.canonical_size = pooler.canonical_size
        self.canonical_level = pooler.canonical_level
        self.box_coder = heads.box_coder
        self.score_thresh = float(heads.score_thresh)
        self.nms_thresh = float(heads.nms_thresh)
        self.detections_per_image = int(heads.detections_per_image)

    # -- preprocessing -------------------------------------------------------------------------

    def _resized_size(self, size: torch.Tensor) -> torch.Tensor:
        """(h, w) int64 after resize_image, computed in float64 as Python computes it."""
        hw = size.to(torch.float64)
        # float64 tensors of shape [2] throughout: the ONNX exporter computes Python floats
        # and 0-dim tensors in float32 (as a Reciprocal and a Mul), and float32 makes some
        # sizes 1 px short of PyTorch's (77 * (96 / 77) -> 95.99...)
        limits = torch.tensor(
            [self.min_size, self.max_size], dtype=torch.float64, device=size.device
        )
        scale = torch.amin(limits / torch.stack((hw.amin(0), hw.amax(0))), 0, keepdim=True)
        return torch.floor(hw * scale).to(torch.int64)

    def preprocess(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The padded [1, 3, H', W'] batch and the resized (h, w) inside it (int64 [2])."""
        if self.bgr:
            image = image.flip(0) * 255.0
        x = (image - self.pixel_mean) / self.pixel_std
        size = self._resized_size(torch._shape_as_tensor(image)[1:])
        x = F.interpolate(x[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)
        d = self.size_divisibility
        padded = torch.div(size + (d - 1), d, rounding_mode="floor") * d
        pad = padded - size
        x = F.pad(x, (0, pad[1], 0, pad[0]))
        return x, size

    # -- RPN ----------------------------------------------------------------------------------

    def _anchors(self, feature: torch.Tensor, padded: torch.Tensor, level: int) -> torch.Tensor:
        """Anchors [H_l * W_l * A, 4] of one level, in (y, x, anchor) order (AnchorGenerator)."""
        grid = torch._shape_as_tensor(feature)[2:]
        stride = torch.div(padded, grid, rounding_mode="floor").to(torch.float32)
        shift_x = torch.arange(grid[1], dtype=torch.float32, device=feature.device) * stride[1]
        shift_y = torch.arange(grid[0], dtype=torch.float32, device=feature.device) * stride[0]
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack((xx, yy, xx, yy), dim=1)
        cell = getattr(self, f"cell_anchors_{level}")
        return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)

    def proposals(
        self, features: list[torch.Tensor], padded: torch.Tensor, size: torch.Tensor
    ) -> torch.Tensor:
        """The RPN's proposals [P, 4] (xyxy, resized-image pixels), best first."""
        height, width = size[0].to(torch.float32), size[1].to(torch.float32)
        bound = torch.maximum(height, width) + 1.0
        boxes, scores, levels = [], [], []
        for level, feature in enumerate(features):
            logits, deltas = self.rpn_head([feature])
            logits, deltas = logits[0].float(), deltas[0].float()
            a = logits.shape[1]
            # [1, A, H, W] -> [H * W * A] and [1, A * 4, H, W] -> [H * W * A, 4] (rpn._flatten)
            logits = logits[0].permute(1, 2, 0).reshape(-1)
            deltas = deltas[0].reshape(a, 4, deltas.shape[2], deltas.shape[3])
            deltas = deltas.permute(2, 3, 0, 1).reshape(-1, 4)
            anchors = self._anchors(feature, padded, level)
            k = torch.clamp(torch._shape_as_tensor(logits)[0], max=self.pre_nms_topk)
            top_logits, top = logits.topk(k)
            boxes.append(self.rpn_coder.decode(deltas[top], anchors[top]).reshape(-1, 4))
            scores.append(top_logits.sigmoid())
            levels.append(torch.full_like(top, level))
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        boxes = _clip(boxes, height, width)
        keep = remove_small_boxes(boxes, self.rpn_min_box_size)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = _batched_nms(boxes, scores, levels, self.rpn_nms_thresh, bound)
        return boxes[keep[: self.post_nms_topk]]

    # -- RoI heads ------------------------------------------------------------------------------

    def _pool(self, feature: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        feature = feature.float()
        if self.pooler_type == "roi_pool":
            return roi_pool(feature, rois, self.resolution, scale)
        return roi_align(feature, rois, self.resolution, scale, self.sampling_ratio, self.aligned)

    def pool(self, features: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        """RoI features [R, C, S, S] (fp32) of `boxes` [R, 4] (RoIPooler, one image)."""
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        if len(features) == 1:
            return self._pool(features[0], rois, self.scales[0])
        level = assign_levels(
            boxes, self.min_level, self.max_level, self.canonical_size, self.canonical_level
        )
        channels = features[0].shape[1]
        out = torch.zeros(
            (rois.shape[0], channels, self.resolution[0], self.resolution[1]),
            dtype=torch.float32,
            device=boxes.device,
        )
        for i, (feature, scale) in enumerate(zip(features, self.scales, strict=True)):
            idx = torch.where(level == i)[0]
            out = out.index_put((idx,), self._pool(feature, rois[idx], scale))
        return out

    def detections(
        self, features: list[torch.Tensor], proposals: torch.Tensor, size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (resized-image pixels), scores and labels after score threshold and NMS."""
        x = self.box_head(self.pool(features, proposals).to(self.dtype))
        logits, deltas = self.predictor(x)
        logits, deltas = logits.float(), deltas.float()
        height, width = size[0].to(torch.float32), size[1].to(torch.float32)
        boxes = _clip(self.box_coder.decode(deltas, proposals), height, width)  # [R, K+1, 4]
        scores = F.softmax(logits, -1)
        labels = torch.arange(scores.shape[1], device=scores.device).view(1, -1).expand_as(scores)
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)
        keep = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, 1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        bound = torch.maximum(height, width) + 1.0
        keep = _batched_nms(boxes, scores, labels, self.nms_thresh, bound)
        keep = keep[: self.detections_per_image]
        return boxes[keep], scores[keep], labels[keep]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of one image [3, H, W] (float RGB in [0, 1]) in its own pixels."""
        batch, size = self.preprocess(image.float())
        padded = torch._shape_as_tensor(batch)[2:]
        features = self.backbone(batch.to(self.dtype))
        proposals = self.proposals([features[f] for f in self.rpn_features], padded, size)
        boxes, scores, labels = self.detections(
            [features[f] for f in self.roi_features], proposals, size
        )
        # back to the input image's pixels (rescale_boxes: float32 ratios)
        original = torch._shape_as_tensor(image)[1:].to(torch.float32)
        ratio = original / size.to(torch.float32)
        scale = torch.stack((ratio[1], ratio[0], ratio[1], ratio[0]))
        return boxes * scale, scores, labels
