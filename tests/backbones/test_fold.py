"""fold_frozen_batchnorm: the folded network computes the same features."""

import pytest
import torch
from torch import nn

from backbones import FrozenBatchNorm2d, build_backbone
from backbones.norm import fold_frozen_batchnorm


def randomize_frozen_bn(model: nn.Module) -> int:
    count = 0
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            count += 1
    return count


@pytest.mark.parametrize(
    "name,kwargs",
    [("resnet50", {}), ("resnet18", {"shortcut": "C"}), ("vgg16_bn", {})],
)
def test_folded_features_equal(name, kwargs):
    torch.manual_seed(0)
    model = build_backbone(name, norm="FrozenBN", out_features=None, **kwargs).eval()
    norms = randomize_frozen_bn(model)
    assert norms > 0
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        before = model(x)
        assert fold_frozen_batchnorm(model) == norms
        after = model(x)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    for key in before:
        scale = before[key].abs().max().item()
        torch.testing.assert_close(after[key], before[key], atol=1e-5 * scale, rtol=1e-4)


def test_trainable_norms_are_left_alone():
    model = build_backbone("resnet18", norm="GN")
    assert fold_frozen_batchnorm(model) == 0
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) > 0
