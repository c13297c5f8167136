"""Per-region box heads: res5 (ResNet C4), two fc layers (FPN), fc6/fc7 (VGG-16)."""

from __future__ import annotations

import torch
from torch import nn

from backbones.vgg import VGGHead


class Res5Head(nn.Module):
    """The paper's ResNet design: RoI features -> res5 (stride 2) -> global average pool.

    Args:
        res5: the ResNet's res5 stage (split off the backbone with its weights).
    """

    def __init__(self, res5: nn.Module) -> None:
        super().__init__()
        self.res5 = res5
        self.out_features = res5[-1].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RoI features [R, C_res4, S, S] -> [R, out_features] (2048 for ResNet-50+, 512 else)."""
        return self.res5(x).mean(dim=(2, 3))


class TwoFCHead(nn.Module):
    """Flatten, fc6 + ReLU, fc7 + ReLU (torchvision's TwoMLPHead).

    Args:
        in_features: C * S * S of the pooled RoI features [R, C, S, S].
        fc_dim: width of fc6 and fc7, and `out_features`.
    """

    def __init__(self, in_features: int, fc_dim: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.out_features = fc_dim
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.constant_(fc.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RoI features [R, C, S, S] -> [R, fc_dim]."""
        x = torch.relu(self.fc6(x.flatten(1)))
        return torch.relu(self.fc7(x))


class VGGBoxHead(VGGHead):
    """VGG-16's fc6/fc7 (4096-d, dropout) on 7x7 RoI features: loadable from ImageNet weights.

    forward: RoI features [R, in_channels, resolution, resolution] -> [R, 4096].

    Args:
        in_channels: channels of the pooled features (512 for conv5_3).
        resolution: side of the pooled features (7 for ImageNet's fc6).
    """

    def __init__(self, in_channels: int = 512, resolution: int = 7) -> None:
        super().__init__(in_features=in_channels * resolution * resolution)
        for fc in (self.fc6, self.fc7):
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.constant_(fc.bias, 0)


class FastRCNNPredictor(nn.Module):
    """Class scores (K + 1, background first) and class-specific box deltas ((K + 1) * 4).

    Args:
        in_features: D, the box head's output width.
        num_classes: K, the object classes (background not counted).
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, (num_classes + 1) * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box head features [R, D] -> logits [R, K + 1] and deltas [R, (K + 1) * 4]."""
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)
