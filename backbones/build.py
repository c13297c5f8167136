"""Building backbones and classifiers by name, from the registry's entries.

Detection backbones (`list_backbones`) are the feature extractors: the ImageNet ResNets, ResNeXt,
Wide ResNet, VGG-16 and any registered with `register_backbone`; classifiers
(`list_classifiers`) are those plus the CIFAR-10 ResNets, which only classify 32x32 images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .norm import NORMS, freeze
from .registry import (
    OPTIONS,
    BackboneSpec,
    _did_you_mean,
    get_backbone,
    list_backbones,
    list_classifiers,
)
from .resnet import SHORTCUTS

__all__ = [
    "PooledClassifier",
    "build_backbone",
    "build_classifier",
    "feature_names",
    "list_backbones",
    "list_classifiers",
    "stage_names",
]

# Why a network cannot take an option it does not declare (the value must stay at OPTIONS').
_NOT_TAKEN = {
    "shortcut": "{name} has no shortcut connections: leave shortcut at 'B'",
    "stride_in_1x1": "{name} has no bottleneck blocks to move a stride in: stride_in_1x1 must be "
    "false",
    "zero_init_residual": "zero_init_residual needs residual blocks; {name} has none (a zero "
    "branch would cut the signal)",
}


def stage_names(name: str) -> list[str]:
    """A backbone's stages in network order (what `freeze_at` counts)."""
    return list(get_backbone(name).stages)


def feature_names(name: str) -> list[str]:
    """Feature names a backbone can return, in network order (VGG-16: its stages and pool5)."""
    return list(get_backbone(name).features)


def _check_options(spec: BackboneSpec, norm: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options `spec` takes, checked; ValueError saying what to change otherwise."""
    name, shortcut = spec.name, options["shortcut"]
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if norm not in spec.norms:
        raise ValueError(f"{name} takes norm {', '.join(spec.norms)}, not {norm!r}")
    for key, value in options.items():
        if key not in spec.options and value != OPTIONS[key]:
            raise ValueError(_NOT_TAKEN[key].format(name=name))
    if options["zero_init_residual"]:
        if shortcut == "none":
            raise ValueError(
                f"zero_init_residual needs residual blocks; {name} with shortcut 'none' has none "
                "(a zero branch would cut the signal)"
            )
        if norm == "FrozenBN":
            raise ValueError(
                "zero_init_residual needs trainable norms (BN or GN): FrozenBN would keep every "
                "residual branch at zero"
            )
    return {k: v for k, v in options.items() if k in spec.options}


def _check_features(spec: BackboneSpec, out_features: Sequence[str] | None) -> list[str]:
    """The requested features (default: the last stage), each one the network has."""
    features = list(spec.features)
    for f in out_features or ():
        if f not in spec.features:
            raise ValueError(
                f"{spec.name} has no feature {f!r}{_did_you_mean(str(f), features)}; "
                f"its features are {', '.join(features)}"
            )
    return list(out_features) if out_features else [spec.stages[-1]]


def _check_freeze_at(spec: BackboneSpec, freeze_at: int) -> None:
    n = len(spec.stages)
    if n == 0 and freeze_at != 0:
        raise ValueError(f"{spec.name} is trained whole: freeze_at must be 0, got {freeze_at!r}")
    if not isinstance(freeze_at, int) or not 0 <= freeze_at <= n:
        raise ValueError(
            f"freeze_at must be an integer in 0..{n} for {spec.name}, got {freeze_at!r}"
        )


def _describe(backbone: nn.Module, spec: BackboneSpec, features: list[str]) -> None:
    """Give the built module what the detector reads (`arch_name`, `out_features`,
    `out_channels`, `strides`) from the registry, or check what it already has."""
    declared = {
        "out_channels": {f: spec.features[f][1] for f in features},
        "strides": {f: spec.features[f][0] for f in features},
    }
    for attr, value in declared.items():
        have = getattr(backbone, attr, None)
        if have is None:
            setattr(backbone, attr, value)
        elif dict(have) != value:
            raise ValueError(
                f"{spec.name}: the module's {attr} {dict(have)} differ from the registered "
                f"features {value}; correct the features given to register_backbone"
            )
    if getattr(backbone, "out_features", None) is None:
        backbone.out_features = list(features)
    if getattr(backbone, "arch_name", None) is None:
        backbone.arch_name = spec.name


def _freeze_stages(spec: BackboneSpec, backbone: nn.Module, freeze_at: int) -> None:
    """Freeze the first `freeze_at` stages: gradients off and BatchNorm made FrozenBatchNorm2d."""
    if freeze_at <= 0:
        return
    if spec.freeze is not None:
        spec.freeze(backbone, freeze_at)
        return
    built = getattr(backbone, "stage_names", spec.stages)  # a ResNet builds up to its outputs
    for stage in spec.stages[:freeze_at]:
        if stage not in built:
            continue
        if not isinstance(getattr(backbone, stage, None), nn.Module):
            raise ValueError(
                f"{spec.name}: freeze_at={freeze_at} freezes stage {stage!r}, which is not a "
                "submodule of the same name; name the stages so, or register a `freeze` function"
            )
        setattr(backbone, stage, freeze(getattr(backbone, stage)))


def build_backbone(
    name: str,
    *,
    out_features: Sequence[str] | None = None,
    shortcut: str = "B",
    freeze_at: int = 0,
    norm: str = "BN",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
) -> nn.Module:
    """A feature extractor whose forward gives {feature name: map}.

    The module has `out_channels` and `strides` (dicts keyed like the output). `out_features`
    defaults to the last stage ("res5" for ResNets, "conv5" for VGG-16). `norm` applies where the
    network has normalization layers (not plain vgg16). `zero_init_residual` starts every
    residual branch at zero (ResNets with trainable norms; for training from scratch).
    """
    spec = get_backbone(name)
    given = dict(
        shortcut=shortcut, stride_in_1x1=stride_in_1x1, zero_init_residual=zero_init_residual
    )
    options = _check_options(spec, norm, given)
    features = _check_features(spec, out_features)
    _check_freeze_at(spec, freeze_at)
    backbone = spec.build(out_features=features, norm=norm, **options)
    _describe(backbone, spec, features)
    _freeze_stages(spec, backbone, freeze_at)
    return backbone


class PooledClassifier(nn.Module):
    """A backbone's one output, global average pooling and one fc: the classifier of a network
    registered without its own (and VGG-16's light head, model.head=pool_fc).

    Its keys (backbone.*, fc.*) are the classifier layout load_pretrained reads, so its backbone
    transfers to a detector as any other classifier's does.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.arch_name = backbone.arch_name
        self.backbone = backbone
        (self.feature,) = backbone.out_features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(backbone.out_channels[self.feature], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes] of images [N, 3, H, W]."""
        x = self.avgpool(self.backbone(x)[self.feature])
        return self.fc(torch.flatten(x, 1))


def build_classifier(
    name: str,
    num_classes: int = 1000,
    *,
    shortcut: str | None = None,
    freeze_at: int = 0,
    norm: str = "BN",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    pooled: bool = False,
) -> nn.Module:
    """The classifier of `name` (backbone, pooling, fc layers) for pretraining and transfer.

    ImageNet ResNets: global average pool + fc; VGG-16: pool5, fc6, fc7, fc8; CIFAR ResNets
    (`cifar_resnet20` ... `cifar_resnet110`): global average pool + fc on 32x32 inputs; a
    network registered without a classifier, or any backbone with `pooled`: PooledClassifier.
    `shortcut` defaults to the network's (the paper's choice: "A" for the CIFAR nets, else "B").
    """
    spec = get_backbone(name, classifier=True)
    shortcut = spec.options.get("shortcut", "B") if shortcut is None else shortcut
    given = dict(
        shortcut=shortcut, stride_in_1x1=stride_in_1x1, zero_init_residual=zero_init_residual
    )
    options = _check_options(spec, norm, given)
    _check_freeze_at(spec, freeze_at)
    if spec.classifier is not None and not (pooled and spec.build is not None):
        model = spec.classifier(num_classes, norm=norm, **options)
    else:
        features = _check_features(spec, None)
        backbone = spec.build(out_features=features, norm=norm, **options)
        _describe(backbone, spec, features)
        model = PooledClassifier(backbone, num_classes)
    if freeze_at:
        _freeze_stages(spec, model.backbone, freeze_at)
    return model
