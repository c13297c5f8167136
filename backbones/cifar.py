"""The CIFAR-10 ResNets of He et al. (2016), section 4.2, and their plain twins.

A 3x3 convolution with 16 filters, then three stages of n basic blocks on 32x32, 16x16 and 8x8
maps with 16, 32 and 64 filters (subsampling by a stride-2 convolution at the start of stages 2
and 3), global average pooling and a 10-way fc: 6n + 2 weighted layers. The paper's shortcuts
are option A (identity, zero-padded channels when the width doubles: no parameters), and a
plain net (shortcut "none") is the same stack without them. Blocks are the ImageNet ResNets'
BasicBlock, so shortcut options and norms behave the same as there.
"""

from __future__ import annotations

import torch
from torch import nn

from .norm import make_norm
from .resnet import init_weights, make_stage

# name -> n, the blocks per stage (6n + 2 layers)
CIFAR_SPECS: dict[str, int] = {
    "cifar_resnet20": 3,
    "cifar_resnet32": 5,
    "cifar_resnet44": 7,
    "cifar_resnet56": 9,
    "cifar_resnet110": 18,
}
CIFAR_STAGES = ("stage1", "stage2", "stage3")
CIFAR_WIDTHS = (16, 32, 64)


class CifarStem(nn.Module):
    """3x3 convolution with 16 filters, norm, ReLU: stride 1 (32x32 inputs keep their size)."""

    def __init__(self, norm: str = "BN", out_channels: int = CIFAR_WIDTHS[0]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, 3, padding=1, bias=False)
        self.bn1 = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] -> [N, 16, H, W]."""
        return self.relu(self.bn1(self.conv1(x)))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images (a plain net with shortcut "none"), ending in class logits.

    Args:
        name: a key of CIFAR_SPECS, e.g. "cifar_resnet20".
        num_classes: outputs of the final fc (10 for CIFAR-10).
        shortcut: "A" (the paper's CIFAR choice), "B", "C" or "none" (the plain twin).
        norm: "BN", "FrozenBN" or "GN".
        zero_init_residual: start every residual branch at zero (see resnet.init_weights).
    """

    def __init__(
        self,
        name: str,
        num_classes: int = 10,
        *,
        shortcut: str = "A",
        norm: str = "BN",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        n = CIFAR_SPECS[name]
        self.arch_name = name
        self.shortcut = shortcut
        self.stem = CifarStem(norm)
        in_channels = self.stem.out_channels
        for i, (stage, width) in enumerate(zip(CIFAR_STAGES, CIFAR_WIDTHS, strict=True)):
            layer = make_stage(
                "basic", n, in_channels, width, 1 if i == 0 else 2, shortcut=shortcut, norm=norm
            )
            self.add_module(stage, layer)
            in_channels = width
        self.stage_names = list(CIFAR_STAGES)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes] of images [N, 3, H, W] (H = W = 32 in the paper)."""
        x = self.stem(x)
        for stage in self.stage_names:
            x = getattr(self, stage)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_depth(name: str) -> int:
    """The number of weighted layers of a CIFAR net, 6n + 2 (the 20 of ResNet-20)."""
    return 6 * CIFAR_SPECS[name] + 2
