"""The backbone registry: what each entry declares matches what it builds; registering checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from backbones import (
    PooledClassifier,
    RegisteredNames,
    build_backbone,
    build_classifier,
    get_backbone,
    list_backbones,
    list_classifiers,
    register_backbone,
    registry,
)
from detection.config.schema import BackboneConfig

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = list_backbones()


@pytest.fixture
def restore_registry():
    table = dict(registry._TABLE)
    yield
    registry._TABLE.clear()
    registry._TABLE.update(table)


@pytest.mark.parametrize("name", BUILT_IN)
def test_declared_features_are_what_the_network_gives(name):
    spec = get_backbone(name)
    features = list(spec.features)
    net = build_backbone(name, out_features=features).eval()
    assert net.out_channels == {f: c for f, (_, c) in spec.features.items()}
    assert net.strides == {f: s for f, (s, _) in spec.features.items()}
    size = 64
    with torch.no_grad():
        out = net(torch.randn(1, 3, size, size))
    assert list(out) == features
    for f, (stride, channels) in spec.features.items():
        assert out[f].shape == (1, channels, size // stride, size // stride), f
    # what a detector reads: one stride-16 map without FPN, doubling strides under an FPN
    assert spec.features[spec.c4_feature][0] == 16
    assert [spec.features[f][0] for f in spec.fpn_inputs] == [4, 8, 16, 32]
    assert spec.stages[-1] == list(build_backbone(name).out_channels)[0]  # the default output


def test_classifier_only_networks_are_not_backbones():
    assert "cifar_resnet20" in list_classifiers() and "cifar_resnet20" not in list_backbones()
    with pytest.raises(ValueError, match="cifar_resnet20 is a classifier only"):
        build_backbone("cifar_resnet20")
    assert get_backbone("cifar_resnet20", classifier=True).options["shortcut"] == "A"


class Flat(nn.Module):
    """One stride-2 convolution, its output named "x"; no stage submodules."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": self.conv(images)}


def _tiny(out_features, norm):
    return Flat()


def test_schema_choices_follow_the_registry(restore_registry):
    choices = dataclasses.fields(BackboneConfig)[0].metadata["choices"]
    assert isinstance(choices, RegisteredNames) and "late_net" not in choices
    register_backbone("late_net", _tiny, features={"x": (2, 8)})
    assert "late_net" in choices and list(choices)[-1] == "late_net"


def test_register_checks_the_declaration(restore_registry):
    register_backbone("dup_net", _tiny, features={"x": (2, 8)})
    register_backbone("dup_net", _tiny, features={"x": (2, 8)})  # the same function again
    with pytest.raises(ValueError, match="'resnet50' is registered already"):
        register_backbone("resnet50", _tiny, features={"x": (2, 8)})
    bad = [
        ({}, "features: give"),
        ({"features": {"x": (2, -8)}}, r"features\['x'\] must be \(stride, channels\)"),
        ({"features": {"x": (2, 8)}, "c4_feature": "y"}, "c4_feature names 'y'"),
        ({"features": {"a": (4, 8), "b": (16, 8)}, "fpn_inputs": ("a", "b")}, "double"),
        ({"features": {"x": (2, 8)}, "norms": ("LN",)}, "norms must be among"),
    ]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            register_backbone("bad_net", _tiny, **fields)
    assert "bad_net" not in list_backbones()


def test_a_module_that_contradicts_its_declaration_is_refused(restore_registry):
    def build(out_features, norm):
        net = _tiny(out_features, norm)
        net.out_channels = {"x": 16}
        return net

    register_backbone("liar_net", build, features={"x": (2, 8)})
    with pytest.raises(ValueError, match=r"out_channels \{'x': 16\} differ from the registered"):
        build_backbone("liar_net")
    register_backbone("flat_net", _tiny, features={"x": (2, 8)}, stages=("x",))
    with pytest.raises(ValueError, match="freezes stage 'x', which is not a submodule"):
        build_backbone("flat_net", freeze_at=1)
    with pytest.raises(ValueError, match="stride_in_1x1 must be false"):
        build_backbone("flat_net", stride_in_1x1=True)
    # no classifier of its own: global average pooling and one fc on the last stage
    logits = build_classifier("flat_net", num_classes=3)(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 3)


@pytest.mark.parametrize(
    "config, name",
    [
        ("faster_rcnn_X50_32x4d_FPN_1x.yaml", "resnext50_32x4d"),
        ("faster_rcnn_X101_32x8d_FPN_1x.yaml", "resnext101_32x8d"),
        ("faster_rcnn_WR50_2_FPN_1x.yaml", "wide_resnet50_2"),
    ],
)
def test_successor_coco_configs_build_their_backbone(config, name):
    from detection.config import load_config
    from detection.modeling import build_model

    cfg = load_config(ROOT / "configs/coco" / config)
    assert cfg.model.backbone.weights in get_backbone(name).weights
    model = build_model(cfg, load_weights=False)
    bottom_up = model.backbone.bottom_up
    assert bottom_up.arch_name == name and list(bottom_up.out_channels) == list(
        get_backbone(name).fpn_inputs
    )


def test_pooled_head_is_the_resnet_head_and_vggs_light_one():
    """model.head=pool_fc: global average pooling + fc; for a ResNet the same network as its
    own classifier, for VGG-16 in place of fc6/fc7/fc8; the CIFAR nets keep theirs."""
    from detection.classification.config import load_classifier_config
    from detection.classification.model import build_model

    torch.manual_seed(0)
    default = build_classifier("resnet18", 5).eval()
    torch.manual_seed(0)
    pooled = build_classifier("resnet18", 5, pooled=True).eval()
    assert isinstance(pooled, PooledClassifier)
    theirs = pooled.state_dict()
    assert list(default.state_dict()) == list(theirs)
    assert all(torch.equal(v, theirs[k]) for k, v in default.state_dict().items())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(default(x), pooled(x))
    overrides = ["model.name=vgg16", "model.head=pool_fc", "data.root=unused"]
    cfg = load_classifier_config(None, overrides)
    vgg = build_model(cfg, num_classes=5)
    assert {k.split(".")[0] for k in vgg.state_dict()} == {"backbone", "fc"}
    assert vgg.fc.in_features == 512
    assert type(build_classifier("cifar_resnet20", 10, pooled=True)).__name__ == "CifarResNet"
