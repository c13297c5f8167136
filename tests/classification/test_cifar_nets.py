"""The CIFAR-10 ResNets of the paper's section 4.2: depth, parameters, shapes, shortcuts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones import build_classifier, list_backbones, list_classifiers
from backbones.cifar import CIFAR_SPECS, cifar_depth
from backbones.resnet import ZeroPadShortcut

# the paper's Table 6 parameter counts, in its rounding (millions)
PAPER_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def _weighted_layers(net: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d | nn.Linear) for m in net.modules())


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
@pytest.mark.parametrize("shortcut", ["A", "none"])
def test_depth_and_parameters_match_the_paper(depth, shortcut):
    name = f"cifar_resnet{depth}"
    net = build_classifier(name, 10, shortcut=shortcut)
    assert _weighted_layers(net) == cifar_depth(name) == depth  # 6n + 2
    params = sum(p.numel() for p in net.parameters()) / 1e6
    digits = 1 if depth == 110 else 2
    # option A shortcuts have no parameters: the plain twin has exactly as many
    assert round(params, digits) == PAPER_PARAMS[depth]


def test_output_shapes_and_stage_maps():
    net = build_classifier("cifar_resnet20", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = []
    hooks = [
        getattr(net, s).register_forward_hook(lambda m, i, o: maps.append(o.shape))
        for s in net.stage_names
    ]
    assert net(x).shape == (2, 10)
    for h in hooks:
        h.remove()
    # 32x32, 16x16, 8x8 maps with 16, 32 and 64 filters
    assert maps == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    assert build_classifier("cifar_resnet32", 7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_option_a_shortcut_is_zero_padded_identity():
    net = build_classifier("cifar_resnet20", 10)
    first = net.stage2[0]
    assert isinstance(first.downsample, ZeroPadShortcut)
    x = torch.randn(2, 16, 32, 32)
    y = first.downsample(x)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 16:], torch.zeros(2, 16, 16, 16))
    assert all(block.downsample is None for block in net.stage1)


def test_plain_twin_has_no_shortcuts():
    plain = build_classifier("cifar_resnet20", 10, shortcut="none")
    blocks = [b for s in plain.stage_names for b in getattr(plain, s)]
    assert len(blocks) == 9 and not any(b.residual for b in blocks)
    # with every residual branch at zero, a plain block outputs ReLU(0) and a residual block its
    # input: the shortcut is what carries the signal
    res = build_classifier("cifar_resnet20", 10)
    x = torch.rand(1, 16, 32, 32)
    for net in (plain, res):
        nn.init.zeros_(net.stage1[0].bn2.weight)
        nn.init.zeros_(net.stage1[0].bn2.bias)
    assert torch.equal(res.stage1[0].eval()(x), x)
    assert torch.equal(plain.stage1[0].eval()(x), torch.zeros_like(x))


def test_cifar_nets_are_classifiers_not_detection_backbones():
    assert set(CIFAR_SPECS) <= set(list_classifiers())
    assert not set(CIFAR_SPECS) & set(list_backbones())
    with pytest.raises(ValueError, match="freeze_at must be 0"):
        build_classifier("cifar_resnet20", 10, freeze_at=1)
    with pytest.raises(ValueError, match="unknown classifier 'cifar_resnet21'.*cifar_resnet20"):
        build_classifier("cifar_resnet21")
    # the ImageNet classifiers keep option B by default
    assert not isinstance(build_classifier("resnet18").backbone.res3[0].downsample, ZeroPadShortcut)
