"""The Faster R-CNN meta-architecture: preprocess, backbone, RPN, RoI heads, postprocess."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..config import Config
from ..utils.precision import autocast, check_precision
from .preprocess import pad_batch, rescale_boxes, resize_image
from .roi_heads import RoIHeads
from .rpn import RPN


class FasterRCNN(nn.Module):
    """Faster R-CNN with torchvision's I/O convention.

    eval: `model(list of CHW float RGB tensors in [0, 1])` -> list of {boxes, scores, labels},
    boxes xyxy in the input images' pixels; the model resizes (min/max size) itself.
    train: `model(images, targets)` -> {loss_rpn_cls, loss_rpn_box, loss_cls, loss_box}; images
    arrive already resized by the data loader and targets hold `boxes` (xyxy, pixels of the
    given images) and `labels` (1..K).

    Args:
        backbone: module mapping a [B, 3, H, W] batch to {feature name: [B, C, H/s, W/s]}.
        rpn: proposals from the `rpn_features` maps (see RPN).
        roi_heads: detections (eval) or losses (train) from proposals and the `roi_features`.
        rpn_features, roi_features: which backbone outputs feed the RPN and the RoI heads.
        pixel_mean, pixel_std: per-channel normalisation, in the scale of `input_format`.
        input_format: "RGB" (inputs in [0, 1]) or "BGR" (Caffe models: flipped, x255).
        min_size_test, max_size_test: eval-mode resize (shortest side, cap on the longest).
        size_divisibility: the padded batch's height and width are multiples of it.
        class_names: names of labels 1..K (checkpoints carry them).
        cfg: the resolved config the model was built from (build_model passes it).
    """

    def __init__(
        self,
        backbone: nn.Module,
        rpn: RPN,
        roi_heads: RoIHeads,
        *,
        rpn_features: Sequence[str],
        roi_features: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        min_size_test: int = 800,
        max_size_test: int = 1333,
        size_divisibility: int = 32,
        class_names: Sequence[str] | None = None,
        cfg: Config | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.rpn_features = list(rpn_features)
        self.roi_features = list(roi_features)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.input_format = input_format
        self.min_size_test = min_size_test
        self.max_size_test = max_size_test
        self.size_divisibility = size_divisibility
        self.class_names = list(class_names) if class_names is not None else None
        self.weights_report = None  # set by build_model when model.weights started it
        self.cfg = cfg  # the resolved config this model was built from (None if built by hand)
        # the memory format of the batch (set_channels_last) and the autocast precision of
        # inference (set_inference_precision); training's precision is the trainer's
        self.channels_last = False
        self.precision = "fp32"

    def set_channels_last(self, enabled: bool = True) -> FasterRCNN:
        """Weights and input batches in NHWC (`enabled`) or NCHW; returns the model."""
        memory_format = torch.channels_last if enabled else torch.contiguous_format
        self.to(memory_format=memory_format)
        self.channels_last = enabled
        return self

    def set_inference_precision(self, precision: str) -> FasterRCNN:
        """The autocast precision of eval-mode forwards ("fp32", "bf16", "fp16")."""
        check_precision(precision)
        self.precision = precision
        return self

    def _check_inputs(self, images, targets) -> None:
        if not isinstance(images, list | tuple) or not images:
            raise TypeError(
                "the model takes a non-empty list of CHW float tensors (RGB in [0, 1]), "
                f"got {type(images).__name__}"
            )
        for i, img in enumerate(images):
            if not torch.is_tensor(img) or img.dim() != 3 or img.shape[0] != 3:
                shape = tuple(img.shape) if torch.is_tensor(img) else type(img).__name__
                raise ValueError(f"image {i}: expected a 3xHxW tensor, got {shape}")
            if not img.is_floating_point():
                raise TypeError(
                    f"image {i}: expected a float tensor in [0, 1], got {img.dtype} "
                    "(divide uint8 images by 255)"
                )
        if self.training:
            if targets is None or len(targets) != len(images):
                raise ValueError("in training mode pass one target dict per image")
            for i, t in enumerate(targets):
                boxes = t.get("boxes")
                labels = t.get("labels")
                if boxes is None or labels is None:
                    raise ValueError(f"target {i}: needs 'boxes' and 'labels'")
                if boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
                    raise ValueError(f"target {i}: boxes must be a float [N, 4] xyxy tensor")
                if labels.shape[0] != boxes.shape[0]:
                    raise ValueError(
                        f"target {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels"
                    )
                degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
                if degenerate.any():
                    j = int(torch.where(degenerate)[0][0])
                    raise ValueError(
                        f"target {i}: box {j} {boxes[j].tolist()} has no positive width/height"
                    )

    def preprocess(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list]:
        """Normalised (and, in eval mode, resized) images padded into one batch tensor."""
        out = []
        for img in images:
            if self.input_format == "BGR":
                img = img.flip(0) * 255.0
            img = (img - self.pixel_mean.to(img.dtype)) / self.pixel_std.to(img.dtype)
            if not self.training:
                img = resize_image(img, self.min_size_test, self.max_size_test)
            out.append(img)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in out]
        return pad_batch(out, self.size_divisibility), sizes

    def forward(
        self,
        images: Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
    ):
        """Detect (eval) or compute the losses (train).

        Args:
            images: N tensors [3, H_i, W_i], float RGB in [0, 1] (any sizes).
            targets: train only; N dicts {"boxes": float [M_i, 4] xyxy, "labels": int64 [M_i]}.

        Returns:
            eval: N dicts {"boxes": [D_i, 4] xyxy in the pixels of images[i], "scores": [D_i],
            "labels": int64 [D_i] in 1..K}, D_i <= test.detections_per_image; train: the four
            scalar losses by name.
        """
        self._check_inputs(images, targets)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, sizes = self.preprocess(images)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        # training precision is the trainer's (solver.amp); this is inference's
        precision = "fp32" if self.training else self.precision
        with autocast(batch.device, precision):
            features = self.backbone(batch)
            rpn_in = [features[f] for f in self.rpn_features]
            proposals, rpn_losses = self.rpn(rpn_in, sizes, batch.shape[-2:], targets)
            roi_in = [features[f] for f in self.roi_features]
            detections, roi_losses = self.roi_heads(roi_in, proposals, sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        for det, size, original in zip(detections, sizes, original_sizes, strict=True):
            det["boxes"] = rescale_boxes(det["boxes"], size, original)
        return detections
