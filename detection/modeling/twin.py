"""torchvision's Faster R-CNN R50-FPN carrying the weights and test settings of one of ours: a
twin to compare speed and detections with (tools/benchmark.py --vs-torchvision)."""

from __future__ import annotations

from torch import nn

from .convert import convert_torchvision_fpn, freeze_torchvision_bn


def torchvision_twin(model: nn.Module, *, purpose: str = "a torchvision twin") -> nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn carrying `model`'s weights and test settings
    (from `model.cfg`), with the same parameters trainable.

    Raises a ValueError, starting with `purpose`, when `model` does not have torchvision's R50-FPN
    layout.
    """
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    cfg = model.cfg
    tv = fasterrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=cfg.model.roi_heads.num_classes + 1,
        min_size=cfg.input.min_size_test,
        max_size=cfg.input.max_size_test,
        box_score_thresh=cfg.model.roi_heads.score_thresh,
        box_detections_per_img=cfg.test.detections_per_image,
        rpn_pre_nms_top_n_test=cfg.model.rpn.pre_nms_topk_test,
        rpn_post_nms_top_n_test=cfg.model.rpn.post_nms_topk_test,
    )
    freeze_torchvision_bn(tv)
    # the converter renames keys only: fed key names, it gives {our key: torchvision key}
    ours_to_tv = convert_torchvision_fpn({k: k for k in tv.state_dict()})
    ours = model.state_dict()
    missing = [k for k in ours_to_tv if k not in ours]
    if missing:
        raise ValueError(
            f"{purpose} needs torchvision's R50-FPN layout (e.g. "
            f"configs/coco/faster_rcnn_R50_FPN_1x.yaml); this model lacks {missing[:3]}"
        )
    tv.load_state_dict({t: ours[o] for o, t in ours_to_tv.items()}, strict=False)
    # train the same parameters: freeze what our model freezes (e.g. freeze_at=2: stem, res2)
    trainable = {o for o, p in model.named_parameters() if p.requires_grad}
    tv_params = dict(tv.named_parameters())
    for o, t in ours_to_tv.items():
        if t in tv_params:
            tv_params[t].requires_grad_(o in trainable)
    return tv
