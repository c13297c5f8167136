"""Building backbones and classifiers by name.

Detection backbones (`list_backbones`) are the ImageNet ResNets and VGG-16; classifiers
(`list_classifiers`) are those plus the CIFAR-10 ResNets, which only classify 32x32 images.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from torch import nn

from .cifar import CIFAR_SPECS, CifarResNet
from .norm import NORMS, freeze
from .resnet import RESNET_SPECS, SHORTCUTS, STAGES, ResNet, ResNetClassifier
from .vgg import VGG, VGG_FEATURES, VGG_SPECS, VGG_STAGES, VGGClassifier


def list_backbones() -> list[str]:
    """Names accepted by build_backbone (and build_classifier): the detection backbones."""
    return [*RESNET_SPECS, *VGG_SPECS]


def list_classifiers() -> list[str]:
    """Names accepted by build_classifier: the backbones and the CIFAR-10 ResNets."""
    return [*list_backbones(), *CIFAR_SPECS]


def stage_names(name: str) -> list[str]:
    """A backbone's stages in network order (what `freeze_at` counts)."""
    _check_name(name)
    return list(STAGES if name in RESNET_SPECS else VGG_STAGES)


def feature_names(name: str) -> list[str]:
    """Feature names a backbone can return, in network order: its stages (and VGG's pool5)."""
    _check_name(name)
    return list(STAGES if name in RESNET_SPECS else VGG_FEATURES)


def _did_you_mean(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_name(name: str) -> None:
    if name not in RESNET_SPECS and name not in VGG_SPECS:
        raise ValueError(
            f"unknown backbone {name!r}{_did_you_mean(str(name), list_backbones())}; "
            f"valid names: {', '.join(list_backbones())}"
        )


def _check_options(
    name: str,
    out_features: Sequence[str] | None,
    shortcut: str,
    freeze_at: int,
    norm: str,
    stride_in_1x1: bool,
    zero_init_residual: bool = False,
) -> None:
    _check_name(name)
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    stages, features = stage_names(name), feature_names(name)
    for f in out_features or ():
        if f not in features:
            raise ValueError(
                f"{name} has no feature {f!r}{_did_you_mean(str(f), features)}; "
                f"its features are {', '.join(features)}"
            )
    if not isinstance(freeze_at, int) or not 0 <= freeze_at <= len(stages):
        raise ValueError(
            f"freeze_at must be an integer in 0..{len(stages)} for {name}, got {freeze_at!r}"
        )
    if name in VGG_SPECS:
        if shortcut != "B":
            raise ValueError(f"{name} has no shortcut connections: leave shortcut at 'B'")
        if stride_in_1x1:
            raise ValueError(f"{name} has no 1x1 convolutions: stride_in_1x1 must be false")
    if zero_init_residual:
        if name in VGG_SPECS or shortcut == "none":
            raise ValueError(
                f"zero_init_residual needs residual blocks; {name} with shortcut {shortcut!r} has "
                "none (a zero branch would cut the signal)"
            )
        if norm == "FrozenBN":
            raise ValueError(
                "zero_init_residual needs trainable norms (BN or GN): FrozenBN would keep every "
                "residual branch at zero"
            )


def _freeze_stages(backbone: nn.Module, freeze_at: int) -> None:
    """Freeze the first `freeze_at` stages: gradients off and BatchNorm made FrozenBatchNorm2d."""
    if freeze_at <= 0:
        return
    if isinstance(backbone, ResNet):
        for stage in backbone.stage_names[:freeze_at]:
            setattr(backbone, stage, freeze(getattr(backbone, stage)))
    else:
        end = backbone.stage_ends[VGG_STAGES[freeze_at - 1]]
        for i in range(end + 1):
            backbone.features[i] = freeze(backbone.features[i])


def _construct(
    name: str,
    resnet_cls: type[nn.Module],
    vgg_cls: type[nn.Module],
    *,
    shortcut: str,
    norm: str,
    stride_in_1x1: bool,
    zero_init_residual: bool,
    **common,
) -> nn.Module:
    """`resnet_cls` for a ResNet name, else `vgg_cls`, built with the options that apply to it.

    VGG-16 has no shortcuts and no 1x1 convolutions: it takes only `norm` and `common`.
    """
    if name in RESNET_SPECS:
        return resnet_cls(
            name,
            shortcut=shortcut,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            zero_init_residual=zero_init_residual,
            **common,
        )
    return vgg_cls(name, norm=norm, **common)


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
    _check_options(name, out_features, shortcut, freeze_at, norm, stride_in_1x1, zero_init_residual)
    backbone = _construct(
        name,
        ResNet,
        VGG,
        out_features=out_features,
        shortcut=shortcut,
        norm=norm,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
    )
    _freeze_stages(backbone, freeze_at)
    return backbone


def _check_cifar_options(
    name: str, shortcut: str, freeze_at: int, norm: str, stride_in_1x1: bool, zero_init: bool
) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; choose one of {', '.join(SHORTCUTS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if freeze_at != 0:
        raise ValueError(f"{name} is trained whole: freeze_at must be 0, got {freeze_at!r}")
    if stride_in_1x1:
        raise ValueError(f"{name} has no 1x1 convolutions: stride_in_1x1 must be false")
    if zero_init and (shortcut == "none" or norm == "FrozenBN"):
        raise ValueError(
            f"zero_init_residual needs residual blocks with trainable norms; {name} with shortcut "
            f"{shortcut!r} and norm {norm!r} would keep a zero branch at zero"
        )


def build_classifier(
    name: str,
    num_classes: int = 1000,
    *,
    shortcut: str | None = None,
    freeze_at: int = 0,
    norm: str = "BN",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
) -> nn.Module:
    """The classifier of `name` (backbone, pooling, fc layers) for pretraining and transfer.

    ImageNet ResNets: global average pool + fc; VGG-16: pool5, fc6, fc7, fc8; CIFAR ResNets
    (`cifar_resnet20` ... `cifar_resnet110`): global average pool + fc on 32x32 inputs.
    `shortcut` defaults to the paper's choice: "A" for the CIFAR nets, "B" for the others.
    """
    if name in CIFAR_SPECS:
        shortcut = "A" if shortcut is None else shortcut
        _check_cifar_options(name, shortcut, freeze_at, norm, stride_in_1x1, zero_init_residual)
        return CifarResNet(
            name,
            num_classes,
            shortcut=shortcut,
            norm=norm,
            zero_init_residual=zero_init_residual,
        )
    if name not in RESNET_SPECS and name not in VGG_SPECS:
        raise ValueError(
            f"unknown classifier {name!r}{_did_you_mean(str(name), list_classifiers())}; "
            f"valid names: {', '.join(list_classifiers())}"
        )
    shortcut = "B" if shortcut is None else shortcut
    _check_options(name, None, shortcut, freeze_at, norm, stride_in_1x1, zero_init_residual)
    model = _construct(
        name,
        ResNetClassifier,
        VGGClassifier,
        num_classes=num_classes,
        shortcut=shortcut,
        norm=norm,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
    )
    _freeze_stages(model.backbone, freeze_at)
    return model
