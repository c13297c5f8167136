"""Small detectors of the three designs (random weights, scaled so that they detect) and
images for them."""

import numpy as np
import torch
from helpers import ROOT

from detection.config import load_config
from detection.data.shapes import render_shapes_image
from detection.modeling import build_model

SMALL = [
    "model.backbone.weights=null",
    "model.roi_heads.num_classes=3",
    "input.min_size_test=96",
    "input.max_size_test=128",
    "model.rpn.pre_nms_topk_test=200",
    "model.rpn.post_nms_topk_test=30",
    "test.precision=fp32",
]
NAMES = ["circle", "square", "triangle"]
# config, overrides, factor on the class scores' weights (spreads the random scores so that
# the detector finds objects; the FPN's 2fc features are larger, so it needs less)
DESIGNS = {
    "C4": (
        "faster_rcnn_R50_C4_1x.yaml",
        ["model.backbone.name=resnet18", "model.roi_heads.pooler_resolution=8"],
        30.0,
    ),
    "FPN": (
        "faster_rcnn_R50_FPN_1x.yaml",
        [
            "model.backbone.name=resnet18",
            "model.anchors.sizes=[[16], [32], [64], [128], [256]]",
            "model.neck.out_channels=64",
            "model.roi_heads.fc_dim=128",
        ],
        3.0,
    ),
    # VGG-16's conv1..conv5 and RoI pooling; a narrow 2fc head instead of the 4096-d fc6/fc7
    # (100M parameters would make the checkpoint 400 MB; VGGBoxHead is two Linear layers)
    "VGG16": (
        "faster_rcnn_VGG16_1x.yaml",
        ["model.roi_heads.box_head=2fc", "model.roi_heads.fc_dim=128"],
        30.0,
    ),
}


def small_model(design: str, extra=()):
    config, overrides, factor = DESIGNS[design]
    cfg = load_config(ROOT / "configs/coco" / config, [*SMALL, *overrides, *extra])
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False, class_names=NAMES).eval()
    with torch.no_grad():
        model.roi_heads.predictor.cls_score.weight.mul_(factor)
    return model


def scene(index: int, crop=None) -> np.ndarray:
    """A generated shapes scene (HxWx3 uint8), optionally cropped to (h, w)."""
    image, _ = render_shapes_image(7, index)
    if crop is not None:
        image = np.ascontiguousarray(image[: crop[0], : crop[1]])
    return image


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.tensor(image).permute(2, 0, 1).float().div(255.0)


# A detector with many candidates: 20 classes, 1500 proposals at 320 px, class scores x300 so
# that nearly every proposal gives one candidate scoring exactly 1.0 in fp32 (a confident
# detector saturates so): more than 1000 candidates, where torchvision's batched_nms runs one
# NMS per class instead of its coordinate trick, and far more equal scores than the
# detections cut keeps, whose order decides which ones stay
DENSE = [
    "model.backbone.weights=null",
    "model.roi_heads.num_classes=20",
    "input.min_size_test=320",
    "input.max_size_test=427",
    "model.rpn.pre_nms_topk_test=2000",
    "model.rpn.post_nms_topk_test=1500",
    "test.precision=fp32",
    "model.backbone.name=resnet18",
    "model.anchors.sizes=[[16], [32], [64], [128], [256]]",
    "model.neck.out_channels=64",
    "model.roi_heads.fc_dim=128",
]
DENSE_NAMES = [f"class{i}" for i in range(1, 21)]


def dense_model():
    cfg = load_config(ROOT / "configs/coco/faster_rcnn_R50_FPN_1x.yaml", DENSE)
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False, class_names=DENSE_NAMES).eval()
    with torch.no_grad():
        model.roi_heads.predictor.cls_score.weight.mul_(300.0)
    return model
