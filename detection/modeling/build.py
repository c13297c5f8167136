"""build_model(cfg) and load_model(checkpoint): the detector from a config.

Each detector design has its own builder (`fpn_parts`, `single_map_parts`) that asks the
backbone registry what the backbone offers and returns the design-specific `DetectorParts`;
`build_model` picks the builder and adds the RPN, the RoI heads and the meta-architecture, which
every design shares.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from backbones import BackboneSpec, build_backbone, get_backbone, load_pretrained
from backbones.fpn import FPN

from ..config import Config, ConfigError, config_from_dict, load_config
from ..utils.checkpoint import read_checkpoint
from .anchors import AnchorGenerator
from .box_heads import FastRCNNPredictor, Res5Head, TwoFCHead, VGGBoxHead
from .finetune import apply_detector_weights, read_detector_weights
from .poolers import RoIPooler
from .rcnn import FasterRCNN
from .roi_heads import RoIHeads
from .rpn import RPN

logger = logging.getLogger(__name__)


@dataclass
class DetectorParts:
    """The design-specific pieces of a detector, as one builder returns them.

    backbone: module whose forward gives {feature name: map}, with `out_channels` and `strides`.
    rpn_features: backbone outputs the RPN runs on, one anchor level each.
    roi_features: backbone outputs the RoI pooler reads, finest first.
    size_divisibility: batches are padded to a multiple of this.
    box_head: the per-region head, or None for the two-fc head over the pooled features (built
        after the RPN so that random initialisation draws in the same order for every design).
    """

    backbone: nn.Module
    rpn_features: list[str]
    roi_features: list[str]
    size_divisibility: int
    box_head: nn.Module | None = None


def _check_architecture(cfg: Config) -> None:
    m = cfg.model
    spec = get_backbone(m.backbone.name)
    fpn, head = m.neck.name == "fpn", m.roi_heads.box_head
    if fpn and head == "vgg_fc":
        raise ConfigError(
            "model.roi_heads.box_head=vgg_fc pools 512-channel conv5_3 features: it needs "
            "model.neck.name=none (use 2fc with an FPN)"
        )
    if head == "res5" and (spec.c4_head is None or fpn):
        raise ConfigError(
            "model.roi_heads.box_head=res5 is the ResNet C4 design: it needs a ResNet backbone "
            f"(a stage to run per region; {spec.name} has {spec.c4_head or 'none'}) and "
            "model.neck.name=none (use 2fc with FPN, vgg_fc with VGG-16)"
        )
    if head == "vgg_fc" and not spec.fc_head:
        raise ConfigError("model.roi_heads.box_head=vgg_fc needs a VGG-16 backbone")
    if fpn and not spec.fpn_inputs:
        raise ConfigError(f"{spec.name} has no FPN inputs registered: use model.neck.name=none")
    if not fpn and spec.c4_feature is None:
        raise ConfigError(
            f"{spec.name} has no single feature map registered for a detector without FPN "
            "(c4_feature): use model.neck.name=fpn"
        )
    _check_anchor_levels(cfg, spec)


def _check_anchor_levels(cfg: Config, spec: BackboneSpec) -> None:
    """One list of anchor sizes per RPN level: the FPN's inputs and its extra level, or one."""
    sizes = cfg.model.anchors.sizes
    if cfg.model.neck.name != "fpn":
        levels, where = 1, f"one map at stride {spec.features[spec.c4_feature][0]}"
    else:
        strides = [spec.features[f][0] for f in spec.fpn_inputs]
        levels = len(strides) + 1
        first, last = strides[0].bit_length() - 1, strides[-1].bit_length()
        where = f"P{first}..P{last}"
    if len(sizes) != levels:
        example = [[32 * 2**i] for i in range(levels)] if levels > 1 else [[32, 64, 128, 256, 512]]
        raise ConfigError(
            f"model.anchors.sizes has {len(sizes)} level(s) but the model has {levels} RPN "
            f"level(s) ({where}); give one list of sizes per level, e.g. "
            + str(example).replace(" ", "").replace(",", ", ")
        )


def _backbone_options(cfg: Config) -> dict:
    """build_backbone's keyword options from `model.backbone` (it refuses one the network does
    not take, unless left at its default)."""
    b = cfg.model.backbone
    return dict(
        shortcut=b.shortcut,
        freeze_at=b.freeze_at,
        norm=b.norm,
        stride_in_1x1=b.stride_in_1x1,
        zero_init_residual=b.zero_init_residual,
    )


def _load_pretrained(module: nn.Module, weights: str, what: str) -> None:
    """model.backbone.weights into `module`, with load_pretrained's report logged."""
    report = load_pretrained(module, weights)
    logger.info("model.backbone.weights into %s: %s", what, report)


def fpn_parts(cfg: Config, weights: str | None) -> DetectorParts:
    """The backbone's FPN inputs (a ResNet's res2..res5, VGG-16's conv3..pool5) under an FPN:
    the RPN on every level (P2..P6), RoIs pooled from all but the extra one (P2..P5)."""
    name = cfg.model.backbone.name
    in_features = list(get_backbone(name).fpn_inputs)
    bottom_up = build_backbone(name, out_features=in_features, **_backbone_options(cfg))
    if weights:
        _load_pretrained(bottom_up, weights, "the backbone")
    backbone = FPN(bottom_up, in_features, cfg.model.neck.out_channels)
    rpn_features = list(backbone.out_features)  # p2..p6
    return DetectorParts(
        backbone=backbone,
        rpn_features=rpn_features,
        roi_features=rpn_features[:-1],  # p2..p5
        size_divisibility=backbone.size_divisibility,
    )


def single_map_parts(cfg: Config, weights: str | None) -> DetectorParts:
    """One map for the RPN and the RoIs, the backbone's c4_feature: the ResNet paper's C4 design
    (conv1..res4 shared, res5 per region with `res5`), VGG-16's conv5_3 (fc6/fc7 per region with
    `vgg_fc`), or any backbone with two fc layers per region (`2fc`).

    A ResNet's res5 is built with the backbone (so ImageNet weights reach it) and moved into the
    box head with `res5`; with `2fc` it is discarded.
    """
    name, r = cfg.model.backbone.name, cfg.model.roi_heads
    spec = get_backbone(name)
    feature = spec.c4_feature
    last = spec.c4_head or feature
    backbone = build_backbone(name, out_features=[last], **_backbone_options(cfg))
    box_head = None
    if r.box_head == "vgg_fc":
        box_head = VGGBoxHead(backbone.out_channels[feature], r.pooler_resolution)
        box_head.arch_name = name  # which network's classifier a weights name means
        if weights:
            _load_pretrained(box_head, weights, "the box head (fc6/fc7)")
    if weights:
        what = f"the backbone ({spec.c4_head} included)" if spec.c4_head else "the backbone"
        _load_pretrained(backbone, weights, what)
    if spec.c4_head:
        per_region = backbone.split_after(feature)[spec.c4_head]
        if r.box_head == "res5":
            box_head = Res5Head(per_region)
    stride = spec.features[feature][0]
    return DetectorParts(
        backbone, [feature], [feature], size_divisibility=stride, box_head=box_head
    )


def design_builder(cfg: Config) -> Callable[[Config, str | None], DetectorParts]:
    """The parts builder of the design `cfg.model` names: FPN, or one map (C4, VGG-16)."""
    return fpn_parts if cfg.model.neck.name == "fpn" else single_map_parts


def build_rpn(cfg: Config, parts: DetectorParts) -> RPN:
    """The RPN of `cfg.model.rpn` / `cfg.model.anchors` on the parts' RPN features."""
    m = cfg.model
    anchors = AnchorGenerator(m.anchors.sizes, m.anchors.aspect_ratios)
    return RPN(
        anchors,
        parts.backbone.out_channels[parts.rpn_features[0]],
        pre_nms_topk=(m.rpn.pre_nms_topk_train, m.rpn.pre_nms_topk_test),
        post_nms_topk=(m.rpn.post_nms_topk_train, m.rpn.post_nms_topk_test),
        nms_thresh=m.rpn.nms_thresh,
        min_box_size=m.rpn.min_box_size,
        batch_size_per_image=m.rpn.batch_size_per_image,
        positive_fraction=m.rpn.positive_fraction,
        iou_thresholds=m.rpn.iou_thresholds,
        smooth_l1_beta=m.rpn.smooth_l1_beta,
    )


def build_roi_heads(cfg: Config, parts: DetectorParts) -> RoIHeads:
    """Pooler, box head (the parts' or two fc layers), predictor and RoI heads of `cfg`."""
    r = cfg.model.roi_heads
    channels = parts.backbone.out_channels
    strides = parts.backbone.strides
    pooler = RoIPooler(
        r.pooler_type,
        r.pooler_resolution,
        [strides[f] for f in parts.roi_features],
        sampling_ratio=r.pooler_sampling_ratio,
        aligned=r.pooler_aligned,
    )
    box_head = parts.box_head
    if box_head is None:  # 2fc
        box_head = TwoFCHead(channels[parts.roi_features[0]] * r.pooler_resolution**2, r.fc_dim)
    predictor = FastRCNNPredictor(box_head.out_features, r.num_classes)
    return RoIHeads(
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


def build_model(
    cfg: Config,
    *,
    load_weights: bool = True,
    class_names: Sequence[str] | None = None,
) -> FasterRCNN:
    """The Faster R-CNN that `cfg.model` describes (C4, FPN or VGG-16).

    With `load_weights`, the weights the config names initialise it: `model.weights` (a
    detector checkpoint) the whole detector, with `model.class_map` and `class_names` (the
    training set's) deciding the class predictor, its report in `model.weights_report`; or else
    `model.backbone.weights` (ImageNet) the backbone and the ImageNet part of the box head (res5
    or fc6/fc7). Without, the model keeps its random initialisation (to load a checkpoint into).
    A null model.roi_heads.num_classes becomes the count of `class_names`.
    """
    _check_architecture(cfg)
    m = cfg.model
    if m.roi_heads.num_classes is None:  # null: the data's classes (set in the config here)
        if class_names is None:
            raise ConfigError(
                "model.roi_heads.num_classes is null (the training data's classes, when "
                "training): set it to build a detector without data"
            )
        m.roi_heads.num_classes = len(class_names)
    num_classes = m.roi_heads.num_classes
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(
            f"{len(class_names)} class names but model.roi_heads.num_classes={num_classes}"
        )
    # read and check model.weights and model.class_map before any work
    detector = read_detector_weights(cfg, class_names) if load_weights else None
    # a detector checkpoint replaces every backbone tensor: reading ImageNet weights (or
    # downloading them, for a torchvision name) only to overwrite them would be wasted
    backbone_weights = m.backbone.weights if load_weights and detector is None else None
    parts = design_builder(cfg)(cfg, backbone_weights)
    rpn = build_rpn(cfg, parts)
    roi_heads = build_roi_heads(cfg, parts)
    model = FasterRCNN(
        parts.backbone,
        rpn,
        roi_heads,
        rpn_features=parts.rpn_features,
        roi_features=parts.roi_features,
        pixel_mean=m.pixel_mean,
        pixel_std=m.pixel_std,
        input_format=m.input_format,
        min_size_test=cfg.input.min_size_test,
        max_size_test=cfg.input.max_size_test,
        size_divisibility=parts.size_divisibility,
        class_names=class_names,
        cfg=cfg,
    )
    if detector is not None:
        model.weights_report = apply_detector_weights(model, detector, cfg)
    return model


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
    # model.weights is not read: the checkpoint holds the weights (its start point may be gone)
    model = build_model(cfg, load_weights=False, class_names=ckpt.get("class_names"))
    result = model.load_state_dict(ckpt["model"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint}: weights do not fit the model of its config: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}{hint}"
        )
    return model.to(device).eval()
