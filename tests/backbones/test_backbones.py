"""Feature shapes, strides, shortcut variants, norms and freezing."""

import pytest
import torch
import torchvision
from torch import nn

from backbones import FrozenBatchNorm2d, build_backbone, build_classifier, list_backbones
from backbones.resnet import ZeroPadShortcut

RESNET_CHANNELS = {
    "resnet18": [64, 64, 128, 256, 512],
    "resnet34": [64, 64, 128, 256, 512],
    "resnet50": [64, 256, 512, 1024, 2048],
    "resnet101": [64, 256, 512, 1024, 2048],
    "resnet152": [64, 256, 512, 1024, 2048],
}
RESNET_STAGES = ["stem", "res2", "res3", "res4", "res5"]


def test_list_backbones():
    assert list_backbones() == [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "vgg16",
        "vgg16_bn",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "wide_resnet50_2",
    ]


@pytest.mark.parametrize("name", list(RESNET_CHANNELS))
def test_resnet_features(name):
    backbone = build_backbone(name, out_features=RESNET_STAGES).eval()
    assert backbone.out_channels == dict(zip(RESNET_STAGES, RESNET_CHANNELS[name], strict=True))
    assert backbone.strides == {"stem": 4, "res2": 4, "res3": 8, "res4": 16, "res5": 32}
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        out = backbone(x)
    assert list(out) == RESNET_STAGES
    for stage, fmap in out.items():
        stride = backbone.strides[stage]
        assert fmap.shape == (1, backbone.out_channels[stage], 128 // stride, 96 // stride)


def test_default_out_features_is_last_stage():
    assert list(build_backbone("resnet18").out_channels) == ["res5"]
    assert build_backbone("vgg16").out_channels == {"conv5": 512}


def test_unused_stages_are_not_built():
    backbone = build_backbone("resnet50", out_features=["res2", "res4"])
    assert not hasattr(backbone, "res5")
    assert list(backbone(torch.randn(1, 3, 64, 64))) == ["res2", "res4"]


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn"])
def test_vgg_features(name):
    backbone = build_backbone(name, out_features=["conv3", "conv4", "conv5"]).eval()
    assert backbone.out_channels == {"conv3": 256, "conv4": 512, "conv5": 512}
    assert backbone.strides == {"conv3": 4, "conv4": 8, "conv5": 16}
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))
    assert out["conv3"].shape == (1, 256, 16, 24)
    assert out["conv4"].shape == (1, 512, 8, 12)
    assert out["conv5"].shape == (1, 512, 4, 6)


def test_vgg_pool5_is_conv5_max_pooled_and_adds_no_weights():
    plain = build_backbone("vgg16", out_features=["conv5"]).eval()
    both = build_backbone("vgg16", out_features=["conv5", "pool5"]).eval()
    both.load_state_dict(plain.state_dict())  # the same keys: pool5 has no weights
    assert both.strides["pool5"] == 32 and both.out_channels["pool5"] == 512
    with torch.no_grad():
        out = both(torch.randn(1, 3, 64, 96))
    assert out["pool5"].shape == (1, 512, 2, 3)
    torch.testing.assert_close(out["pool5"], torch.nn.functional.max_pool2d(out["conv5"], 2))
    with pytest.raises(ValueError, match="its features are conv1, .*conv5, pool5"):
        build_backbone("vgg16", out_features=["pool6"])
    with pytest.raises(ValueError, match="freeze_at must be an integer in 0..5"):
        build_backbone("vgg16", freeze_at=6)  # pool5 is an output, not a stage


def shortcut_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "downsample." in n)


def blocks(model: nn.Module):
    return [m for m in model.modules() if hasattr(m, "residual")]


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_shortcut_options(name):
    nets = {s: build_backbone(name, shortcut=s) for s in ("A", "B", "C", "none")}
    # A: parameter-free; B: projections only where the shape changes; C: on every block.
    assert shortcut_params(nets["A"]) == 0
    projections_b = [b for b in blocks(nets["B"]) if isinstance(b.downsample, nn.Sequential)]
    changes = [
        b
        for b in blocks(nets["B"])
        if b.conv1.in_channels != b.out_channels or max(b.conv1.stride + b.conv2.stride) > 1
    ]
    assert len(projections_b) == len(changes) == (4 if name == "resnet50" else 3)
    assert all(isinstance(b.downsample, nn.Sequential) for b in blocks(nets["C"]))
    assert shortcut_params(nets["C"]) > shortcut_params(nets["B"]) > 0
    a_blocks = [b for b in blocks(nets["A"]) if b.downsample is not None]
    assert all(isinstance(b.downsample, ZeroPadShortcut) for b in a_blocks)
    # plain: the same layers as A, no shortcut at all
    n = {s: sum(p.numel() for p in m.parameters()) for s, m in nets.items()}
    assert n["none"] == n["A"]
    assert all(b.downsample is None for b in blocks(nets["none"]))
    for net in nets.values():
        out = net(torch.randn(2, 3, 64, 64))["res5"]
        out.mean().backward()
        assert all(p.grad is not None for p in net.parameters())


def test_plain_block_adds_nothing():
    net = build_backbone("resnet18", shortcut="none").eval()
    block = net.res3[0]
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        expected = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)


def test_shortcut_a_zero_pads_and_subsamples():
    sc = ZeroPadShortcut(4, 8, stride=2)
    x = torch.randn(1, 4, 6, 6)
    y = sc(x)
    assert y.shape == (1, 8, 3, 3)
    torch.testing.assert_close(y[:, :4], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 4:]) == 0


def test_stride_in_1x1():
    net = build_backbone("resnet50", stride_in_1x1=True)
    first = net.res3[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    default = build_backbone("resnet50").res3[0]
    assert default.conv1.stride == (1, 1) and default.conv2.stride == (2, 2)
    assert net(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 2048, 2, 2)


@pytest.mark.parametrize("build", [build_backbone, build_classifier])
def test_stride_in_1x1_is_refused_for_basic_blocks(build):
    with pytest.raises(ValueError, match="basic blocks .* have none"):
        build("resnet18", stride_in_1x1=True)


def test_frozen_bn_equals_bn_eval_and_torchvision():
    bn = nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    frozen = FrozenBatchNorm2d.from_batchnorm(bn)
    tv = torchvision.ops.FrozenBatchNorm2d(8)
    tv.load_state_dict(bn.state_dict(), strict=False)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x))
    assert torch.equal(frozen(x), tv(x))
    assert list(frozen.parameters()) == []


def test_frozen_bn_backbone_has_no_norm_parameters():
    net = build_backbone("resnet18", norm="FrozenBN")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(not n.endswith(("bn1.weight", "bn2.weight")) for n, _ in net.named_parameters())


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_freeze_at(name):
    net = build_backbone(name, freeze_at=2, out_features=["res2", "res3"])
    net(torch.randn(2, 3, 64, 64))["res3"].sum().backward()
    for stage in ("stem", "res2"):
        part = getattr(net, stage)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in part.modules())
        for p in part.parameters():
            assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for p in net.res3.parameters())


def test_freeze_at_vgg():
    net = build_backbone("vgg16_bn", freeze_at=2)
    net(torch.randn(1, 3, 32, 32))["conv5"].sum().backward()
    frozen_end = net.stage_ends["conv2"]
    for i, layer in enumerate(net.features):
        for p in layer.parameters():
            assert (p.grad is None) == (i <= frozen_end)


def test_group_norm():
    net = build_classifier("resnet18", norm="GN", num_classes=10)
    assert any(isinstance(m, nn.GroupNorm) for m in net.modules())
    net(torch.randn(2, 3, 32, 32)).sum().backward()


@pytest.mark.parametrize("name, norm", [("resnet18", "GN"), ("resnet50", "BN")])
def test_zero_init_residual_starts_every_block_as_its_shortcut(name, norm):
    torch.manual_seed(0)
    net = build_backbone(name, norm=norm, zero_init_residual=True).eval()
    plain = build_backbone(name, norm=norm).eval()
    x = torch.relu(torch.randn(2, 64, 16, 16))  # a stem output: non-negative
    for stage in ["res2", "res3", "res4", "res5"]:
        for block in getattr(net, stage):
            if block.downsample is None:  # identity shortcut: the block passes x through
                torch.testing.assert_close(block(x), x)
            else:  # projection shortcut: the block is that projection (and the ReLU)
                torch.testing.assert_close(block(x), torch.relu(block.downsample(x)))
            x = block(x)
    # only the last norm of each residual branch changes; training moves it off zero
    last = {"resnet18": "bn2", "resnet50": "bn3"}[name]
    for (key, a), b in zip(net.state_dict().items(), plain.state_dict().values(), strict=True):
        if key.endswith(f"{last}.weight"):
            assert not a.any() and b.eq(1).all(), key
        elif "conv" not in key and "downsample.0" not in key:
            torch.testing.assert_close(a, b, msg=key)
    net.train()
    net(torch.randn(2, 3, 64, 64))["res5"].sum().backward()
    assert getattr(net.res2[0], last).weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "resnet5"}, "unknown backbone 'resnet5'.*valid names: resnet18, resnet34"),
        ({"name": "resnet50", "shortcut": "D"}, "choose one of A, B, C, none"),
        ({"name": "resnet50", "norm": "LN"}, "choose one of BN, FrozenBN, GN"),
        ({"name": "resnet50", "out_features": ["res6"]}, "has no feature 'res6'.*res5"),
        ({"name": "resnet50", "freeze_at": 9}, "freeze_at must be an integer in 0..5"),
        ({"name": "vgg16", "shortcut": "A"}, "no shortcut connections"),
        ({"name": "vgg16_bn", "norm": "BN", "zero_init_residual": True}, "needs residual blocks"),
        (
            {"name": "resnet18", "norm": "GN", "shortcut": "none", "zero_init_residual": True},
            "needs residual blocks",
        ),
        (
            {"name": "resnet18", "norm": "FrozenBN", "zero_init_residual": True},
            "FrozenBN would keep",
        ),
    ],
)
def test_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(**kwargs)
