"""ResNet-18/34/50/101/152 after He et al. (2016), with the paper's shortcut options and plain nets;
ResNeXt (Xie et al. 2017) and Wide ResNet (Zagoruyko & Komodakis 2016) as torchvision builds them.

Block internals use torchvision's parameter names (conv1, bn1, ..., downsample.0/1) so that
ImageNet checkpoints map onto these modules by renaming stages only (see weights.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .norm import conv_norm, make_norm

SHORTCUTS = ("A", "B", "C", "none")
STAGES = ("stem", "res2", "res3", "res4", "res5")
STAGE_STRIDES = {"stem": 4, "res2": 4, "res3": 8, "res4": 16, "res5": 32}


class ResNetSpec(NamedTuple):
    """One ResNet's layout: block type, blocks per stage res2..res5, and the grouped 3x3 of a
    bottleneck (ResNeXt: `groups` groups of `width_per_group` channels; Wide ResNet: one group,
    twice torchvision's 64 channels per group)."""

    block: str
    depths: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3)),
    "resnet152": ResNetSpec("bottleneck", (3, 8, 36, 3)),
    "resnext50_32x4d": ResNetSpec("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext101_32x8d": ResNetSpec("bottleneck", (3, 4, 23, 3), groups=32, width_per_group=8),
    "wide_resnet50_2": ResNetSpec("bottleneck", (3, 4, 6, 3), width_per_group=128),
}


class ZeroPadShortcut(nn.Module):
    """Option A: identity with stride subsampling, extra channels filled with zeros (no params)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_channels, H, W] -> [N, out_channels, ceil(H / stride), ceil(W / stride)]."""
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


def make_shortcut(
    shortcut: str, in_channels: int, out_channels: int, stride: int, norm: str
) -> nn.Module | None:
    """The shortcut branch of one block; None means identity (or no shortcut for "none")."""
    changes_shape = stride != 1 or in_channels != out_channels
    if shortcut == "none":
        return None
    if shortcut == "C" or (shortcut == "B" and changes_shape):
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            make_norm(norm, out_channels),
        )
    if shortcut == "A" and changes_shape:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return None


class ResidualBlock(nn.Module):
    """What BasicBlock and Bottleneck share: the ReLU, the shortcut branch and the residual sum.

    A subclass builds its convolutions and norms, then calls `_add_shortcut` (so that the
    shortcut's parameters come after them, as in torchvision), and ends its forward with
    `_merge`.
    """

    def _add_shortcut(
        self, shortcut: str, in_channels: int, out_channels: int, stride: int, norm: str
    ) -> None:
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride, norm)
        self.residual = shortcut != "none"
        self.out_channels = out_channels

    def _merge(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ReLU(residual branch `out` + shortcut of the block input `x`); plain nets: ReLU(out)."""
        if self.residual:
            out += x if self.downsample is None else self._shortcut(x)  # in place: a pass less
        return self.relu(out)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        d = self.downsample
        if isinstance(d, nn.Sequential) and len(d) == 2 and isinstance(d[0], nn.Conv2d):
            return conv_norm(d[0], d[1], x, self.training)  # projection + norm (B, C)
        return d(x)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34); the first one carries the stride.

    Args:
        in_channels: channels of the input [N, in_channels, H, W].
        channels: channels of both convolutions and of the output [N, channels, H/s, W/s].
        stride: s, the spatial subsampling of the block.
        shortcut: "A", "B", "C" or "none" (see make_shortcut).
        norm: "BN", "FrozenBN" or "GN".
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        norm: str = "BN",
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, out_channels)
        self._add_shortcut(shortcut, in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_channels, H, W] -> [N, channels, H / stride, W / stride]."""
        out = self.relu(conv_norm(self.conv1, self.bn1, x, self.training))
        out = conv_norm(self.conv2, self.bn2, out, self.training)
        return self._merge(out, x)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101/152, ResNeXt, Wide ResNet).

    Args:
        in_channels: channels of the input [N, in_channels, H, W].
        channels: the output has 4 * channels [N, 4 * channels, H/s, W/s]; the 1x1 reduce and the
            3x3 have channels * width_per_group / 64 * groups (= channels for ResNet-50).
        stride: s, the spatial subsampling of the block.
        shortcut: "A", "B", "C" or "none" (see make_shortcut).
        norm: "BN", "FrozenBN" or "GN".
        stride_in_1x1: the stride on the first 1x1 (MSRA/Caffe models) instead of the 3x3
            (torchvision).
        groups: groups of the 3x3 convolution (ResNeXt's cardinality).
        width_per_group: channels per group of the 3x3 at channels = 64 (torchvision's naming).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        norm: str = "BN",
        stride_in_1x1: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        width = int(channels * (width_per_group / 64.0)) * groups
        # The original MSRA/Caffe models put the stride on the first 1x1; torchvision on the 3x3.
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=s1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=1, groups=groups, bias=False)
        self.bn2 = make_norm(norm, width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = make_norm(norm, out_channels)
        self._add_shortcut(shortcut, in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_channels, H, W] -> [N, 4 * channels, H / stride, W / stride]."""
        out = self.relu(conv_norm(self.conv1, self.bn1, x, self.training))
        out = self.relu(conv_norm(self.conv2, self.bn2, out, self.training))
        out = conv_norm(self.conv3, self.bn3, out, self.training)
        return self._merge(out, x)


class Stem(nn.Module):
    """7x7/2 convolution, norm, ReLU, 3x3/2 max pool: total stride 4."""

    def __init__(self, norm: str = "BN", out_channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] -> [N, out_channels, H / 4, W / 4]."""
        return self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x, self.training)))


def make_stage(
    block: str,
    num_blocks: int,
    in_channels: int,
    channels: int,
    stride: int,
    *,
    shortcut: str = "B",
    norm: str = "BN",
    stride_in_1x1: bool = False,
    groups: int = 1,
    width_per_group: int = 64,
) -> nn.Sequential:
    """One ResNet stage: `num_blocks` blocks ("basic" or "bottleneck"), the first with `stride`.

    `stride_in_1x1`, `groups` and `width_per_group` apply to bottleneck blocks; basic blocks
    have no 1x1 convolution, and asking for it with them is an error.
    """
    if block == "basic" and stride_in_1x1:
        raise ValueError(
            "stride_in_1x1=True moves a bottleneck's stride to its first 1x1 convolution; basic "
            "blocks (ResNet-18/34) have none: leave stride_in_1x1 false"
        )
    if block == "basic" and (groups, width_per_group) != (1, 64):
        raise ValueError("grouped and widened 3x3 convolutions are bottleneck options")
    cls = BasicBlock if block == "basic" else Bottleneck
    options = {}
    if cls is Bottleneck:
        options = dict(stride_in_1x1=stride_in_1x1, groups=groups, width_per_group=width_per_group)
    blocks = []
    for i in range(num_blocks):
        block_stride = stride if i == 0 else 1
        blocks.append(
            cls(in_channels, channels, block_stride, shortcut=shortcut, norm=norm, **options)
        )
        in_channels = channels * cls.expansion
    return nn.Sequential(*blocks)


def init_weights(module: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's ResNet initialisation (He normal, fan-out; norms at identity).

    With `zero_init_residual` the last norm of every residual branch starts at zero, so each
    block starts as its shortcut (torchvision's option of that name; Goyal et al. 2017): the
    stem's signal reaches the deep stages intact, which speeds up training from scratch.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            # nn.Linear's own default, as torchvision leaves fc untouched
            m.reset_parameters()
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, Bottleneck | BasicBlock):
                last = m.bn3 if isinstance(m, Bottleneck) else m.bn2
                if isinstance(last, nn.BatchNorm2d | nn.GroupNorm):
                    nn.init.zeros_(last.weight)


class ResNet(nn.Module):
    """ResNet feature extractor: returns {stage name: feature map} for `out_features`.

    Stages after the last requested one are not built (their checkpoint keys are reported as
    unused by `load_pretrained`).
    """

    def __init__(
        self,
        name: str,
        *,
        out_features: Sequence[str] | None = None,
        shortcut: str = "B",
        norm: str = "BN",
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        spec = RESNET_SPECS[name]
        out_features = list(out_features) if out_features else ["res5"]
        last = max(STAGES.index(f) for f in out_features)
        self.arch_name = name
        self.out_features = out_features
        self.shortcut = shortcut
        self.stem = Stem(norm)
        channels = {"stem": self.stem.out_channels}
        in_channels = self.stem.out_channels
        for i, stage in enumerate(STAGES[1 : last + 1]):
            width = 64 * 2**i
            stride = 1 if i == 0 else 2
            layer = make_stage(
                spec.block,
                spec.depths[i],
                in_channels,
                width,
                stride,
                shortcut=shortcut,
                norm=norm,
                stride_in_1x1=stride_in_1x1,
                groups=spec.groups,
                width_per_group=spec.width_per_group,
            )
            self.add_module(stage, layer)
            in_channels = layer[-1].out_channels
            channels[stage] = in_channels
        self.stage_names = list(STAGES[: last + 1])
        self.out_channels = {f: channels[f] for f in out_features}
        self.strides = {f: STAGE_STRIDES[f] for f in out_features}
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{stage: [N, out_channels[stage], H / strides[stage], W / strides[stage]]} for images
        `x` [N, 3, H, W], for each stage of `out_features`."""
        outputs = {}
        for stage in self.stage_names:
            x = getattr(self, stage)(x)
            if stage in self.out_channels:
                outputs[stage] = x
        return outputs

    def split_after(self, last: str) -> dict[str, nn.Module]:
        """Remove the stages after `last` and return them by name.

        The C4 detector uses this to move res5 (with its pretrained weights) into the RoI head.
        """
        keep = self.stage_names.index(last) + 1
        removed = {}
        for stage in self.stage_names[keep:]:
            removed[stage] = getattr(self, stage)
            delattr(self, stage)
        self.stage_names = self.stage_names[:keep]
        self.out_features = [f for f in self.out_features if f in self.stage_names] or [last]
        channels = {"stem": self.stem.out_channels}
        for stage in self.stage_names[1:]:
            channels[stage] = getattr(self, stage)[-1].out_channels
        self.out_channels = {f: channels[f] for f in self.out_features}
        self.strides = {f: STAGE_STRIDES[f] for f in self.out_features}
        return removed


class ResNetClassifier(nn.Module):
    """The ImageNet classifier: ResNet, global average pool, fc."""

    def __init__(self, name: str, num_classes: int = 1000, **options) -> None:
        super().__init__()
        self.arch_name = name
        self.backbone = ResNet(name, out_features=["res5"], **options)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.backbone.out_channels["res5"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes] of images [N, 3, H, W]."""
        x = self.avgpool(self.backbone(x)["res5"])
        return self.fc(torch.flatten(x, 1))
