"""VGG-16 (and VGG-16-BN) with torchvision's parameter layout: the paper's detection baseline.

`features` keeps torchvision's indices up to conv5_3's ReLU (pool5 is not among them: Faster
R-CNN pools RoIs from conv5_3 at stride 16), so ImageNet checkpoints load by key. `pool5` (conv5_3
max-pooled to stride 32, no weights) can be asked for as an extra output, the coarsest input of
an FPN. The classifier's fc6/fc7 are exposed by name for use as a detection box head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .norm import freeze, make_norm

# torchvision's configuration "D": channels per conv, "M" = 2x2 max pool.
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")
VGG_STRIDES = {"conv1": 1, "conv2": 2, "conv3": 4, "conv4": 8, "conv5": 16, "pool5": 32}
VGG_FEATURES = (*VGG_STAGES, "pool5")  # the outputs a VGG can return: the stages and pool5
VGG_SPECS = {"vgg16": False, "vgg16_bn": True}  # name -> batch norm after each conv


def make_features(batch_norm: bool, norm: str) -> tuple[nn.Sequential, dict[str, int]]:
    """VGG-16 conv layers through conv5_3 + ReLU, and the index of each stage's last layer."""
    layers: list[nn.Module] = []
    stage_ends: dict[str, int] = {}
    in_channels, stage = 3, 0
    for v in VGG16_LAYOUT:
        if v == "M":
            stage_ends[VGG_STAGES[stage]] = len(layers) - 1
            stage += 1
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(make_norm(norm, v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    stage_ends[VGG_STAGES[stage]] = len(layers) - 1
    return nn.Sequential(*layers), stage_ends


def init_weights(module: nn.Module) -> None:
    """torchvision's VGG initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


class VGG(nn.Module):
    """VGG-16 features: {stage: map} for conv1..conv5 (conv5 = conv5_3, stride 16) and pool5
    (conv5_3 max-pooled, stride 32)."""

    def __init__(
        self, name: str, *, out_features: Sequence[str] | None = None, norm: str = "BN"
    ) -> None:
        super().__init__()
        self.arch_name = name
        self.out_features = list(out_features) if out_features else ["conv5"]
        self.features, self.stage_ends = make_features(VGG_SPECS[name], norm)
        self._pool5 = "pool5" in self.out_features
        stages = ["conv5" if f == "pool5" else f for f in self.out_features]
        self._outputs = {self.stage_ends[f]: f for f in self.out_features if f != "pool5"}
        # Layers after the last requested stage are not run.
        self._last = max(self.stage_ends[f] for f in stages)
        self.out_channels = {f: 64 * 2 ** min(VGG_FEATURES.index(f), 3) for f in self.out_features}
        self.strides = {f: VGG_STRIDES[f] for f in self.out_features}
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{stage: [N, out_channels[stage], H / strides[stage], W / strides[stage]]} for images
        `x` [N, 3, H, W], for each stage of `out_features`."""
        outputs = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._outputs:
                outputs[self._outputs[i]] = x
            if i == self._last:
                break
        if self._pool5:
            outputs["pool5"] = F.max_pool2d(x, kernel_size=2, stride=2)
        return outputs


def freeze_stages(vgg: VGG, num_stages: int) -> None:
    """Freeze conv1..conv<num_stages>: gradients off, BatchNorm made FrozenBatchNorm2d."""
    if num_stages <= 0:
        return
    end = vgg.stage_ends[VGG_STAGES[num_stages - 1]]
    for i in range(end + 1):
        vgg.features[i] = freeze(vgg.features[i])


class VGGHead(nn.Module):
    """fc6 and fc7 (4096-d each, ReLU + dropout): the per-region layers of the VGG-16 detector."""

    def __init__(self, in_features: int = 512 * 7 * 7, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(p=dropout)
        self.out_features = 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, ...] (flattened to `in_features`) -> [N, 4096]."""
        x = self.dropout(self.relu(self.fc6(torch.flatten(x, 1))))
        return self.dropout(self.relu(self.fc7(x)))


class VGGClassifier(nn.Module):
    """The ImageNet classifier: VGG features, pool5, 7x7 adaptive pool, fc6, fc7, fc8."""

    def __init__(self, name: str, num_classes: int = 1000, norm: str = "BN") -> None:
        super().__init__()
        self.arch_name = name
        self.backbone = VGG(name, out_features=["conv5"], norm=norm)
        self.pool5 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.head = VGGHead()
        self.head.arch_name = name  # the network a weights name means for the head alone
        self.fc8 = nn.Linear(4096, num_classes)
        init_weights(self.head)
        init_weights(self.fc8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes] of images [N, 3, H, W]."""
        x = self.avgpool(self.pool5(self.backbone(x)["conv5"]))
        return self.fc8(self.head(x))
