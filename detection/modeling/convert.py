"""Converting torchvision's fasterrcnn_resnet50_fpn weights into our checkpoint format."""

from __future__ import annotations

import re

import torch

from ..config import Config, load_config

# Settings of torchvision.models.detection.fasterrcnn_resnet50_fpn (v1), as config overrides.
TORCHVISION_FPN_OVERRIDES = [
    "model.backbone.name=resnet50",
    "model.backbone.weights=null",
    "model.backbone.norm=FrozenBN",
    "model.backbone.shortcut=B",
    "model.backbone.freeze_at=2",  # torchvision: 3 trainable layers
    "model.backbone.stride_in_1x1=false",
    "model.neck.name=fpn",
    "model.neck.out_channels=256",
    "model.anchors.sizes=[[32], [64], [128], [256], [512]]",
    "model.anchors.aspect_ratios=[0.5, 1.0, 2.0]",
    "model.rpn.pre_nms_topk_train=2000",
    "model.rpn.post_nms_topk_train=2000",
    "model.rpn.pre_nms_topk_test=1000",
    "model.rpn.post_nms_topk_test=1000",
    "model.rpn.nms_thresh=0.7",
    "model.rpn.min_box_size=0.001",
    "model.rpn.batch_size_per_image=256",
    "model.rpn.positive_fraction=0.5",
    "model.rpn.iou_thresholds=[0.3, 0.7]",
    f"model.rpn.smooth_l1_beta={1 / 9!r}",
    "model.roi_heads.num_classes=90",  # 91 slots with background: COCO ids 1..90
    "model.roi_heads.batch_size_per_image=512",
    "model.roi_heads.positive_fraction=0.25",
    "model.roi_heads.iou_threshold=0.5",
    "model.roi_heads.pooler_type=roi_align",
    "model.roi_heads.pooler_resolution=7",
    "model.roi_heads.pooler_sampling_ratio=2",
    "model.roi_heads.pooler_aligned=false",
    "model.roi_heads.box_head=2fc",
    "model.roi_heads.fc_dim=1024",
    "model.roi_heads.box_reg_weights=[10.0, 10.0, 5.0, 5.0]",
    f"model.roi_heads.smooth_l1_beta={1 / 9!r}",
    "model.roi_heads.score_thresh=0.05",
    "model.roi_heads.nms_thresh=0.5",
    "model.input_format=RGB",
    "model.pixel_mean=[0.485, 0.456, 0.406]",
    "model.pixel_std=[0.229, 0.224, 0.225]",
    "input.min_size_train=[800]",
    "input.max_size_train=1333",
    "input.min_size_test=800",
    "input.max_size_test=1333",
    "test.detections_per_image=100",
]

_RULES = [
    (r"backbone\.body\.(conv1|bn1)\.(.*)", r"backbone.bottom_up.stem.\1.\2"),
    (r"backbone\.body\.layer(\d)\.(.*)", None),  # stage number shifts by one: handled below
    (r"backbone\.fpn\.inner_blocks\.(\d+)\.0\.(.*)", r"backbone.lateral.\1.\2"),
    (r"backbone\.fpn\.inner_blocks\.(\d+)\.(weight|bias)", r"backbone.lateral.\1.\2"),
    (r"backbone\.fpn\.layer_blocks\.(\d+)\.0\.(.*)", r"backbone.output.\1.\2"),
    (r"backbone\.fpn\.layer_blocks\.(\d+)\.(weight|bias)", r"backbone.output.\1.\2"),
    (r"rpn\.head\.conv\.0\.0\.(.*)", r"rpn.head.conv.\1"),
    (r"rpn\.head\.conv\.(weight|bias)", r"rpn.head.conv.\1"),
    (r"rpn\.head\.cls_logits\.(.*)", r"rpn.head.objectness.\1"),
    (r"rpn\.head\.bbox_pred\.(.*)", r"rpn.head.deltas.\1"),
    (r"roi_heads\.box_head\.(fc6|fc7)\.(.*)", r"roi_heads.box_head.\1.\2"),
    (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(.*)", r"roi_heads.predictor.\1.\2"),
]


def freeze_torchvision_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Replace BatchNorm2d by torchvision's FrozenBatchNorm2d (as in its pretrained detectors)."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen.to(child.weight.device))
        else:
            freeze_torchvision_bn(child)
    return module


def coco_class_names() -> list[str]:
    """torchvision's 90 COCO category slots (ids 1..90; unused ids are named 'N/A')."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:])


def torchvision_fpn_config() -> Config:
    """The config that reproduces torchvision's fasterrcnn_resnet50_fpn inference."""
    return load_config(None, TORCHVISION_FPN_OVERRIDES)


def convert_torchvision_fpn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a fasterrcnn_resnet50_fpn state dict to our FasterRCNN's keys."""
    out = {}
    unknown = []
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        m = re.fullmatch(r"backbone\.body\.layer(\d)\.(.*)", key)
        if m:
            out[f"backbone.bottom_up.res{int(m.group(1)) + 1}.{m.group(2)}"] = value
            continue
        for pattern, repl in _RULES:
            if repl is not None and re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            "not a torchvision fasterrcnn_resnet50_fpn state dict: unknown keys "
            + ", ".join(unknown[:5])
            + (f" ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        )
    return out
