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
per-level NMS, per-class NMS and `detections_per_image` are the eager ones. The NMS by level
and by class is torchvision's `batched_nms` itself, as the eager model calls it (see
`batched_nms`): traced into TorchScript it keeps its branch on the number of boxes, and in
ONNX it is built from NonMaxSuppression in both of its ways.
"""

from __future__ import annotations

import functools
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms as tv_batched_nms
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


# torchvision.ops.batched_nms switches from its coordinate trick to one NMS per group above
# this many coordinates on CPU (4 per box)
_PER_GROUP_ABOVE = 4000


@functools.cache
def _scripted_batched_nms():
    # scripted, a traced graph calls it with its branches; traced, it would always take the
    # coordinate trick (torchvision checks for tracing) and differ from the eager model
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export; TorchScript files still need it
        warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)
        return torch.jit.script(tv_batched_nms)


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX's NonMaxSuppression with one class per group: boxes [N, 4], scores [G, N] (-1 where
    a box is not in the group) -> [M, 3] (0, group, box index), the kept boxes group by group.
    forward gives the same in PyTorch while the exporter traces the graph."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
        out = [torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)]
        for group, row in enumerate(scores):
            members = torch.where(row >= 0)[0]
            kept = members[nms(boxes[members], row[members], iou)]
            out.append(torch.stack((torch.zeros_like(kept), torch.full_like(kept, group), kept), 1))
        return torch.cat(out)

    @staticmethod
    def symbolic(g, boxes, scores, iou: float):
        from torch.onnx.symbolic_opset11 import unsqueeze  # as torchvision's nms symbolic

        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression",
            unsqueeze(g, boxes, 0),
            unsqueeze(g, scores, 0),
            const(sys.maxsize, torch.int64),  # no limit per group
            const(iou, torch.float32),
            const(-0.5, torch.float32),  # keeps scores >= 0, drops the -1 of other groups
        )


def _onnx_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float, num_groups: int
) -> torch.Tensor:
    """torchvision's batched_nms in ONNX ops, both of its ways chosen as on CPU: one NMS per
    group on the boxes as they are (NonMaxSuppression with the groups as its classes), or with
    the boxes of group g moved by g * (largest coordinate + 1) when there are few. Both
    NonMaxSuppressions are in the graph; the one not chosen gets no box (every score -1)."""
    by_group = torch._shape_as_tensor(scores)[0] * 4 > _PER_GROUP_ABOVE
    member = (groups[None, :] == torch.arange(num_groups, device=groups.device)[:, None]) & by_group
    none = torch.full_like(scores, -1.0)
    per_group = _NonMaxSuppression.apply(boxes, torch.where(member, scores, none), iou)
    # the coordinate trick, with its offsets: in float32 they round the coordinates of the
    # higher groups (to 1/128 px at 65536), which can decide an IoU close to the threshold
    zero = torch.zeros(1, dtype=boxes.dtype, device=boxes.device)  # max() of no boxes
    offset = groups.to(boxes.dtype) * (torch.cat((boxes.reshape(-1), zero)).max() + 1.0)
    trick = _NonMaxSuppression.apply(
        boxes + offset[:, None], torch.where(by_group, none, scores)[None], iou
    )
    kept = torch.cat((per_group[:, 2], trick[:, 2]))
    # best first; ONNX's TopK puts equal scores in index order, as torchvision's nms does
    # (its per-group way sorts without that guarantee: equal scores may come in another order)
    kept = kept.topk(torch._shape_as_tensor(kept)[0], largest=False).values
    return kept[scores[kept].topk(torch._shape_as_tensor(kept)[0]).indices]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float, num_groups: int
) -> torch.Tensor:
    """torchvision.ops.batched_nms (NMS within each group, kept indices best first) as the eager
    model runs it, in a form the exporters keep: the scripted function for TorchScript (the
    same result, equal scores in the same order), the same two ways in ONNX operators (the
    same boxes; equal scores in index order). `num_groups` bounds the group ids (ONNX)."""
    if torch.onnx.is_in_onnx_export():
        return _onnx_batched_nms(boxes, scores, groups, iou, num_groups)
    return _scripted_batched_nms()(boxes, scores, groups, iou)


class DeployableDetector(nn.Module):
    """A FasterRCNN in eval mode as a single-image, trace-friendly module.

    forward(image): image [3, H, W] float RGB in [0, 1] (any H, W) -> boxes [D, 4] float32
    xyxy in the image's pixels, scores [D] float32, labels [D] int64 in 1..K; best first,
    D <= test.detections_per_image. The resize (min_size_test / max_size_test), the
    normalisation and the padding are inside, as in `model([image])`.

    Args:
        model: the detector (its modules are shared, not copied); put it on the fast path's
            folded weights first if you want those (`prepare_for_inference`). Its memory format
            is kept (`set_channels_last`): traced into TorchScript, the graph then runs the
            eager model's kernels on the same numbers and gives its detections bit for bit.
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
        self.num_labels = int(self.predictor.cls_score.out_features)  # K + 1, background 0
        self.channels_last = bool(model.channels_last)
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
        keep = batched_nms(boxes, scores, levels, self.rpn_nms_thresh, self.num_levels)
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

    def candidates(
        self, features: list[torch.Tensor], proposals: torch.Tensor, size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One (box, score, label) per proposal and class above the score threshold, before
        NMS: boxes in resized-image pixels."""
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
        return boxes[keep], scores[keep], labels[keep]

    def detections(
        self, features: list[torch.Tensor], proposals: torch.Tensor, size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (resized-image pixels), scores and labels after score threshold and NMS."""
        boxes, scores, labels = self.candidates(features, proposals, size)
        keep = batched_nms(boxes, scores, labels, self.nms_thresh, self.num_labels)
        keep = keep[: self.detections_per_image]
        return boxes[keep], scores[keep], labels[keep]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of one image [3, H, W] (float RGB in [0, 1]) in its own pixels."""
        return self.run(image, self.detections)

    def all_candidates(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The candidates (see `candidates`) of one image in its own pixels, every one that
        the per-class NMS and the detections cut choose from."""
        boxes, scores, labels = self.run(image, self.candidates)
        return {"boxes": boxes, "scores": scores, "labels": labels}

    def run(self, image: torch.Tensor, head) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`head(features, proposals, size)` on one image, its boxes in the image's pixels."""
        batch, size = self.preprocess(image.float())
        padded = torch._shape_as_tensor(batch)[2:]
        if self.channels_last:  # as FasterRCNN.forward (ONNX has no memory formats)
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = self.backbone(batch.to(self.dtype))
        proposals = self.proposals([features[f] for f in self.rpn_features], padded, size)
        boxes, scores, labels = head([features[f] for f in self.roi_features], proposals, size)
        # back to the input image's pixels (rescale_boxes: float32 ratios)
        original = torch._shape_as_tensor(image)[1:].to(torch.float32)
        ratio = original / size.to(torch.float32)
        scale = torch.stack((ratio[1], ratio[0], ratio[1], ratio[0]))
        return boxes * scale, scores, labels
