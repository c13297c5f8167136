"""Equality with torchvision on equal weights, for every backbone name torchvision has."""

import pytest
import torch
import torchvision
from torch import nn

from backbones import build_backbone, build_classifier, list_backbones, load_pretrained

# The registered backbones with a torchvision twin (not a user's, registered by another test).
NAMES = [name for name in list_backbones() if hasattr(torchvision.models, name)]

# Parameter counts of the ImageNet classifiers: the paper's table (ResNets) and VGG-16.
PAPER_MILLIONS = {
    "resnet18": 11.7,
    "resnet34": 21.8,
    "resnet50": 25.6,
    "resnet101": 44.5,
    "resnet152": 60.2,
    "vgg16": 138.4,
}


def randomize_bn_stats(model: nn.Module) -> None:
    """Non-trivial BN statistics, so that eval-mode equality tests the BN arithmetic."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def tv_checkpoints(tmp_path_factory):
    """Saved state dicts of freshly initialised torchvision classifiers, one per name."""
    root = tmp_path_factory.mktemp("tv")
    paths = {}
    for name in NAMES:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)()
        randomize_bn_stats(model)
        paths[name] = root / f"{name}.pth"
        torch.save(model.state_dict(), paths[name])
    return paths


def tv_model(name, path):
    model = getattr(torchvision.models, name)()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_classifier_equals_torchvision(name, tv_checkpoints):
    ours = build_classifier(name)
    report = load_pretrained(ours, tv_checkpoints[name])
    assert not report.missing and not report.unexpected and not report.ignored
    ours.eval()
    theirs = tv_model(name, tv_checkpoints[name])
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    assert n_params(ours) == n_params(theirs)
    if name in PAPER_MILLIONS:
        assert round(n_params(ours) / 1e6, 1) == PAPER_MILLIONS[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_frozen_bn_classifier_equals_torchvision(name, tv_checkpoints):
    """FrozenBN gives exactly torchvision's FrozenBN model (the detection setting)."""
    ours = build_classifier(name, norm="FrozenBN")
    report = load_pretrained(ours, tv_checkpoints[name])
    assert not report.missing and not report.unexpected
    theirs = getattr(torchvision.models, name)(norm_layer=torchvision.ops.FrozenBatchNorm2d)
    theirs.load_state_dict(torch.load(tv_checkpoints[name], weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))
        # and BN in eval mode up to float rounding (relative to the logits' scale)
        bn = tv_model(name, tv_checkpoints[name])(x)
        torch.testing.assert_close(ours(x), bn, atol=1e-5 * bn.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet34", "resnet101"])
def test_res4_equals_torchvision_layer3(name, tv_checkpoints):
    backbone = build_backbone(name, out_features=["res4"])
    report = load_pretrained(backbone, tv_checkpoints[name])
    assert not report.missing and not report.unexpected
    # the classifier head and the unbuilt res5 are reported as ignored
    assert "fc.weight" in report.ignored
    assert any(k.startswith("backbone.res5.") for k in report.ignored)
    theirs = tv_model(name, tv_checkpoints[name])
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        ref = theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x))))
        ref = theirs.layer3(theirs.layer2(theirs.layer1(ref)))
        out = backbone.eval()(x)
    assert list(out) == ["res4"]
    torch.testing.assert_close(out["res4"], ref, atol=1e-5, rtol=1e-5)


def test_vgg_conv5_equals_torchvision_features(tv_checkpoints):
    backbone = build_backbone("vgg16")
    report = load_pretrained(backbone, tv_checkpoints["vgg16"])
    assert not report.missing and not report.unexpected
    assert {"head.fc6.weight", "head.fc7.weight", "fc8.weight"} <= set(report.ignored)
    theirs = tv_model("vgg16", tv_checkpoints["vgg16"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = theirs.features[:-1](x)  # everything but pool5
        torch.testing.assert_close(backbone.eval()(x)["conv5"], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnext50_32x4d", "wide_resnet50_2"])
def test_resnext_and_wide_resnet_features_equal_torchvision(name, tv_checkpoints):
    """Every stage of the registered successors equals torchvision's layers on equal weights."""
    stages = ["stem", "res2", "res3", "res4", "res5"]
    backbone = build_backbone(name, out_features=stages)
    report = load_pretrained(backbone, tv_checkpoints[name])
    assert not report.missing and not report.unexpected
    theirs = tv_model(name, tv_checkpoints[name])
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = [theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x))))]
        for layer in (theirs.layer1, theirs.layer2, theirs.layer3, theirs.layer4):
            ref.append(layer(ref[-1]))
        out = backbone.eval()(x)
    assert list(out) == stages
    for stage, expected in zip(stages, ref, strict=True):
        assert backbone.out_channels[stage] == expected.shape[1]
        torch.testing.assert_close(out[stage], expected, atol=1e-5, rtol=1e-5, msg=stage)
    # the grouped / widened 3x3 is where these differ from ResNet-50
    conv = backbone.res3[0].conv2
    assert (conv.groups, conv.out_channels) == {
        "resnext50_32x4d": (32, 256),
        "wide_resnet50_2": (1, 256),
    }[name]
