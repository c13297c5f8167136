"""build_model(cfg) and load_model(checkpoint): the detector from a config."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from backbones import build_backbone, load_pretrained
from backbones.fpn import FPN
from backbones.resnet import ResNet, split_after

from ..config import Config, ConfigError, config_from_dict, load_config
from .anchors import AnchorGenerator
from .box_heads import FastRCNNPredictor, Res5Head, TwoFCHead, VGGBoxHead
from .poolers import RoIPooler
from .rcnn import FasterRCNN
from .roi_heads import RoIHeads
from .rpn import RPN


def _check_architecture(cfg: Config) -> None:
    m = cfg.model
    is_vgg = m.backbone.name.startswith("vgg")
    if m.neck.name == "fpn" and is_vgg:
        raise ConfigError("model.neck.name=fpn needs a ResNet backbone (VGG-16 has no FPN here)")
    if m.roi_heads.box_head == "res5" and (is_vgg or m.neck.name == "fpn"):
        raise ConfigError(
            "model.roi_heads.box_head=res5 is the ResNet C4 design: it needs a ResNet backbone "
            "and model.neck.name=none (use 2fc with FPN, vgg_fc with VGG-16)"
        )
    if m.roi_heads.box_head == "vgg_fc" and not is_vgg:
        raise ConfigError("model.roi_heads.box_head=vgg_fc needs a VGG-16 backbone")
    levels = 5 if m.neck.name == "fpn" else 1
    if len(m.anchors.sizes) != levels:
        raise ConfigError(
            f"model.anchors.sizes has {len(m.anchors.sizes)} level(s) but the model has "
            f"{levels} RPN level(s) ({'P2..P6' if levels == 5 else 'one map at stride 16'}); "
            "give one list of sizes per level, e.g. "
            + ("[[32], [64], [128], [256], [512]]" if levels == 5 else "[[32, 64, 128, 256, 512]]")
        )


def build_model(
    cfg: Config,
    *,
    load_backbone_weights: bool = True,
    class_names: Sequence[str] | None = None,
) -> FasterRCNN:
    """The Faster R-CNN that `cfg.model` describes (C4, FPN or VGG-16).

    With `load_backbone_weights`, `model.backbone.weights` (ImageNet) initialises the backbone
    and the ImageNet part of the box head (res5 or fc6/fc7).
    """
    _check_architecture(cfg)
    m = cfg.model
    b = m.backbone
    weights = b.weights if load_backbone_weights else None
    is_vgg = b.name.startswith("vgg")
    opts = dict(
        shortcut=b.shortcut,
        freeze_at=b.freeze_at,
        norm=b.norm,
        zero_init_residual=b.zero_init_residual,
    )
    if not is_vgg:
        opts["stride_in_1x1"] = b.stride_in_1x1
    r = m.roi_heads

    box_head: nn.Module | None = None
    if m.neck.name == "fpn":
        bottom_up = build_backbone(b.name, out_features=["res2", "res3", "res4", "res5"], **opts)
        if weights:
            load_pretrained(bottom_up, weights)
        backbone: nn.Module = FPN(bottom_up, ["res2", "res3", "res4", "res5"], m.neck.out_channels)
        rpn_features = list(backbone.out_features)  # p2..p6
        roi_features = rpn_features[:-1]  # p2..p5
        size_divisibility = backbone.size_divisibility
    elif is_vgg:
        backbone = build_backbone(b.name, out_features=["conv5"], **opts)
        rpn_features = roi_features = ["conv5"]
        size_divisibility = 16
        if r.box_head == "vgg_fc":
            box_head = VGGBoxHead(backbone.out_channels["conv5"], r.pooler_resolution)
            if weights:
                load_pretrained(box_head, weights)
        if weights:
            load_pretrained(backbone, weights)
    else:
        # conv1..res4 shared by RPN and detector; res5 per region (the paper's appendix A)
        backbone = build_backbone(b.name, out_features=["res5"], **opts)
        if weights:
            load_pretrained(backbone, weights)
        assert isinstance(backbone, ResNet)
        res5 = split_after(backbone, "res4")["res5"]
        if r.box_head == "res5":
            box_head = Res5Head(res5)
        rpn_features = roi_features = ["res4"]
        size_divisibility = 16

    channels = backbone.out_channels
    strides = backbone.strides
    anchors = AnchorGenerator(m.anchors.sizes, m.anchors.aspect_ratios)
    rpn = RPN(
        anchors,
        channels[rpn_features[0]],
        pre_nms_topk=(m.rpn.pre_nms_topk_train, m.rpn.pre_nms_topk_test),
        post_nms_topk=(m.rpn.post_nms_topk_train, m.rpn.post_nms_topk_test),
        nms_thresh=m.rpn.nms_thresh,
        min_box_size=m.rpn.min_box_size,
        batch_size_per_image=m.rpn.batch_size_per_image,
        positive_fraction=m.rpn.positive_fraction,
        iou_thresholds=m.rpn.iou_thresholds,
        smooth_l1_beta=m.rpn.smooth_l1_beta,
    )
    pooler = RoIPooler(
        r.pooler_type,
        r.pooler_resolution,
        [strides[f] for f in roi_features],
        sampling_ratio=r.pooler_sampling_ratio,
        aligned=r.pooler_aligned,
    )
    if box_head is None:  # 2fc
        box_head = TwoFCHead(channels[roi_features[0]] * r.pooler_resolution**2, r.fc_dim)
    predictor = FastRCNNPredictor(box_head.out_features, r.num_classes)
    roi_heads = RoIHeads(
        pooler,
        box_head,
        predictor,
        batch_size_per_image=r.batch_size_per_image,
        positive_fraction=r.positive_fraction,
        iou_threshold=r.iou_threshold,
        box_reg_weights=r.box_reg_weights,
        smooth_l1_beta=r.smooth_l1_beta,
        score_thresh=r.score_thresh,
        nms_thresh=r.nms_thresh,
        detections_per_image=cfg.test.detections_per_image,
    )
    if class_names is not None and len(class_names) != r.num_classes:
        raise ConfigError(
            f"{len(class_names)} class names but model.roi_heads.num_classes={r.num_classes}"
        )
    model = FasterRCNN(
        backbone,
        rpn,
        roi_heads,
        rpn_features=rpn_features,
        roi_features=roi_features,
        pixel_mean=m.pixel_mean,
        pixel_std=m.pixel_std,
        input_format=m.input_format,
        min_size_test=cfg.input.min_size_test,
        max_size_test=cfg.input.max_size_test,
        size_divisibility=size_divisibility,
        class_names=class_names,
    )
    model.cfg = cfg
    return model


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's dict, read safely (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e}). Checkpoints are "
            "loaded with weights_only=True: only tensors and plain data are accepted."
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(
            f"{path}: not a resdet checkpoint (needs 'model' and 'config'); for torchvision "
            "weights run tools/convert_weights.py first"
        )
    return ckpt


def load_model(
    checkpoint: str | os.PathLike,
    overrides: Iterable[str] = (),
    *,
    device: str | torch.device = "cpu",
    config: str | os.PathLike | None = None,
) -> FasterRCNN:
    """The detector of a checkpoint in eval mode: built from its embedded config plus
    `overrides`, or, with `config`, from that YAML file plus `overrides` instead."""
    ckpt = read_checkpoint(checkpoint)
    if config is None:
        cfg = config_from_dict(ckpt["config"], f"checkpoint {checkpoint}", overrides)
        hint = ""
    else:
        cfg = load_config(config, overrides)
        hint = (
            f" ({config}); use the config the checkpoint was trained with (omit --config to use "
            "the embedded one)"
        )
    model = build_model(cfg, load_backbone_weights=False, class_names=ckpt.get("class_names"))
    result = model.load_state_dict(ckpt["model"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint}: weights do not fit the model of its config: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}{hint}"
        )
    return model.to(device).eval()
