"""Anchor generation: a grid of sizes x aspect ratios at every location of every feature level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """Anchors [A, 4] centred at (0, 0), ratios outer and sizes inner, rounded to pixels.

    A = len(sizes) * len(aspect_ratios); an anchor of size s and ratio r (height / width) has
    width s / sqrt(r) and height s * sqrt(r) (area s**2), as torchvision's.
    """
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """Anchors for a list of feature maps; `sizes[i]` are the sizes of level i.

    Every location of level i gets len(sizes[i]) * len(aspect_ratios) anchors, centred on the
    location's top-left pixel in the padded image (torchvision's AnchorGenerator, equal outputs).
    Grids are cached per (feature sizes, padded size, device).

    Args:
        sizes: per level, the anchor sizes (square root of the area, pixels).
        aspect_ratios: height / width ratios, the same on every level.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float]) -> None:
        super().__init__()
        self.sizes = [list(s) for s in sizes]
        self.aspect_ratios = list(aspect_ratios)
        self.cells = [cell_anchors(s, self.aspect_ratios) for s in self.sizes]
        self._cache: dict[tuple, list[torch.Tensor]] = {}

    @property
    def num_anchors_per_location(self) -> list[int]:
        """Anchors A_l at each location of level l."""
        return [len(s) * len(self.aspect_ratios) for s in self.sizes]

    def forward(
        self, feature_maps: Sequence[torch.Tensor], padded_size: Sequence[int]
    ) -> list[torch.Tensor]:
        """The anchors of every level.

        Args:
            feature_maps: one [N, C, H_l, W_l] per level (only the shapes and device are used).
            padded_size: (height, width) of the padded batch; its ratio to a level's grid is
                that level's stride.

        Returns:
            per level, anchors [H_l * W_l * A_l, 4] (xyxy, float32, padded-image pixels) in
            (y, x, anchor) order, the order of RPNHead's flattened outputs.
        """
        if len(feature_maps) != len(self.cells):
            raise ValueError(
                f"{len(self.cells)} anchor levels configured (model.anchors.sizes) but the "
                f"model has {len(feature_maps)} feature levels"
            )
        device = feature_maps[0].device
        dtype = torch.float32  # also under autocast: box arithmetic needs the precision
        grids = tuple(tuple(f.shape[-2:]) for f in feature_maps)
        key = (grids, tuple(padded_size), device, dtype)
        if key not in self._cache:
            anchors = []
            for (gh, gw), cell in zip(grids, self.cells, strict=True):
                sy, sx = padded_size[0] // gh, padded_size[1] // gw
                shift_x = torch.arange(0, gw, dtype=torch.int32, device=device) * sx
                shift_y = torch.arange(0, gh, dtype=torch.int32, device=device) * sy
                yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
                xx, yy = xx.reshape(-1), yy.reshape(-1)
                shifts = torch.stack((xx, yy, xx, yy), dim=1)
                cell = cell.to(device=device, dtype=dtype)
                anchors.append((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4))
            if len(self._cache) > 64:  # sizes vary in training; keep the cache bounded
                self._cache.clear()
            self._cache[key] = anchors
        return self._cache[key]
