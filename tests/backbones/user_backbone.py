"""A backbone of a user's own, outside the library: the tests name this module in a config's
`imports:` and the network as model.backbone.name, as a user would."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from backbones import register_backbone
from backbones.norm import make_norm

# (name, stride, channels) of each stage; every stage halves the size with a stride-2 conv
STAGES = (("stem", 4, 16), ("c3", 8, 32), ("c4", 16, 48), ("c5", 32, 64))


def conv_block(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """3x3 convolution with stride 2, norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        make_norm(norm, out_channels),
        nn.ReLU(inplace=True),
    )


class TinyNet(nn.Module):
    """Four stages of stride-2 conv blocks (the stem has two): strides 4, 8, 16, 32. Only the
    stages up to the last requested output are built."""

    def __init__(self, out_features: Sequence[str], norm: str) -> None:
        super().__init__()
        names = [name for name, _, _ in STAGES]
        self.wanted = list(out_features)
        self.stage_names = names[: max(names.index(f) for f in out_features) + 1]
        in_channels = 3
        for name, _, channels in STAGES[: len(self.stage_names)]:
            first = [conv_block(in_channels, channels, norm)] if name == "stem" else []
            width = channels if name == "stem" else in_channels
            self.add_module(name, nn.Sequential(*first, conv_block(width, channels, norm)))
            in_channels = channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{stage: map} for the requested stages of images [N, 3, H, W]."""
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.wanted:
                out[name] = x
        return out


@register_backbone(
    "tiny_user",
    features={name: (stride, channels) for name, stride, channels in STAGES},
    c4_feature="c4",
    fpn_inputs=("stem", "c3", "c4", "c5"),
    label="Tiny (user)",
)
def build_tiny(out_features: Sequence[str], norm: str) -> nn.Module:
    """The registry's builder: the module, with nothing else declared on it."""
    return TinyNet(out_features, norm)
