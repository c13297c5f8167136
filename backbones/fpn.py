"""FPN neck (Lin et al. 2017): a backbone wrapper that returns P2..P5 plus P6 by subsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """Top-down pathway with lateral 1x1 and output 3x3 convolutions over `in_features`.

    Outputs are named p<k> for a feature of stride 2**k, plus one extra level (P6, a stride-2
    subsampling of the coarsest output, as torchvision's LastLevelMaxPool).
    """

    def __init__(
        self, bottom_up: nn.Module, in_features: Sequence[str], out_channels: int = 256
    ) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        strides = [bottom_up.strides[f] for f in self.in_features]
        in_channels = [bottom_up.out_channels[f] for f in self.in_features]
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )
        names = [f"p{s.bit_length() - 1}" for s in strides]
        last_stride = strides[-1] * 2
        names.append(f"p{last_stride.bit_length() - 1}")
        self.out_features = names
        self.out_channels = {n: out_channels for n in names}
        self.strides = dict(zip(names, [*strides, last_stride], strict=True))
        self.size_divisibility = max(strides)
        for m in [*self.lateral, *self.output]:
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{p<k>: [N, out_channels, H / 2**k, W / 2**k]} for images `x` [N, 3, H, W]."""
        bottom_up = self.bottom_up(x)
        feats = [bottom_up[f] for f in self.in_features]
        last = self.lateral[-1](feats[-1])
        results = [self.output[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[i](feats[i])
            # in place (the conv output is not needed for its backward): one pass less
            last = lateral.add_(F.interpolate(last, size=lateral.shape[-2:], mode="nearest"))
            results.insert(0, self.output[i](last))
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return dict(zip(self.out_features, results, strict=True))
