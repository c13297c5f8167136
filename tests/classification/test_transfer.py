"""Pretrain -> detect: a classifier run's model_final.pth, as model.backbone.weights, gives the
detector every pretrained backbone tensor (and VGG-16's fc6/fc7 with the vgg_fc box head)."""

from __future__ import annotations

from pathlib import Path

import torch

from detection.classification import load_classifier_config, train_classifier
from detection.config import load_config
from detection.modeling import build_model


def _pretrain(tiny_classifier, name) -> tuple[Path, dict[str, torch.Tensor]]:
    cfg = load_classifier_config(tiny_classifier(name=name, iters=2, out=name))
    train_classifier(cfg)
    path = Path(cfg.output_dir) / "model_final.pth"
    return path, torch.load(path, weights_only=True)["model"]


def _assert_all_loaded(module: torch.nn.Module, pretrained: dict, prefix: str) -> int:
    """Every tensor of `module` equals the pretrained `prefix` one, and every pretrained tensor
    under `prefix` (but BN's batch counters) reached the module; returns how many."""
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = {
        k[len(prefix) :]: v
        for k, v in pretrained.items()
        if k.startswith(prefix) and not k.endswith("num_batches_tracked")
    }
    assert own.keys() == theirs.keys()
    for key, value in own.items():
        assert torch.equal(value, theirs[key]), key
    return len(own)


def test_resnet18_pretraining_initialises_the_fpn_detector(tiny_classifier):
    path, pretrained = _pretrain(tiny_classifier, "resnet18")
    # the schema's defaults (FrozenBN, as with ImageNet weights) made an FPN detector
    cfg = load_config(
        None,
        [
            "model.backbone.name=resnet18",
            f"model.backbone.weights={path}",
            "model.neck.name=fpn",
            "model.anchors.sizes=[[32], [64], [128], [256], [512]]",
            "model.roi_heads.box_head=2fc",
            "model.roi_heads.num_classes=80",  # no data to take it from
        ],
    )
    detector = build_model(cfg)
    n = _assert_all_loaded(detector.backbone.bottom_up, pretrained, "backbone.")
    assert n == 100  # 20 convs and 20 norms (4 tensors each) of ResNet-18
    # the pretrained BN statistics arrive in the detector's FrozenBN
    assert pretrained["backbone.stem.bn1.running_var"].ne(1).all()


# VGG-16's fc6 alone is 103M weights: 20 s and 3 GB here, the classifier's checkpoint 1.1 GB
def test_vgg16_pretraining_initialises_backbone_and_fc6_fc7(tiny_classifier):
    path, pretrained = _pretrain(tiny_classifier, "vgg16")
    cfg = load_config(
        None,
        [
            "model.backbone.name=vgg16",
            f"model.backbone.weights={path}",
            "model.roi_heads.box_head=vgg_fc",
            "model.roi_heads.pooler_resolution=7",  # fc6's 7x7 input
            "model.roi_heads.num_classes=80",  # no data to take it from
        ],
    )
    detector = build_model(cfg)
    assert _assert_all_loaded(detector.backbone, pretrained, "backbone.") == 26  # 13 convs
    box_head = detector.roi_heads.box_head
    assert _assert_all_loaded(box_head, pretrained, "head.") == 4  # fc6, fc7
