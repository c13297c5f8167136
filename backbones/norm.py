"""Normalization layers: FrozenBatchNorm2d, the norm factory, and BN freezing helpers."""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("BN", "FrozenBN", "GN")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers, no gradients).

    The arithmetic follows torchvision.ops.FrozenBatchNorm2d operation for operation so that
    detectors built on it give bit-identical outputs to torchvision's.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # BatchNorm checkpoints carry a step counter that has no meaning once frozen.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """([C] scale, [C] shift) with forward(x) = x * scale + shift, per channel."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] scaled and shifted per channel (same shape)."""
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        bias = b - rm * scale
        return x * scale + bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of `bn`'s statistics and affine parameters, on `bn`'s device."""
        frozen = cls(bn.num_features, bn.eps)
        if bn.affine:
            frozen.weight.copy_(bn.weight.detach())
            frozen.bias.copy_(bn.bias.detach())
        if bn.track_running_stats:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
        return frozen.to(bn.weight.device if bn.affine else bn.running_mean.device)


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalization layer named by `norm` ("BN", "FrozenBN" or "GN") for `channels`."""
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "GN":
        # 32 groups as in Wu & He (2018), fewer where the width does not allow it.
        groups = 32
        while channels % groups:
            groups //= 2
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d inside `module` (or `module` itself) by a FrozenBatchNorm2d."""
    if isinstance(module, nn.BatchNorm2d | nn.SyncBatchNorm):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for name, child in module.named_children():
        new_child = convert_frozen_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def freeze(module: nn.Module) -> nn.Module:
    """Stop all gradients into `module` and fix its BatchNorm statistics."""
    for p in module.parameters():
        p.requires_grad_(False)
    return convert_frozen_batchnorm(module)


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor, fold: bool) -> torch.Tensor:
    """norm(conv(x)). With `fold` and a FrozenBatchNorm2d after a bias-free conv, one
    convolution computes it: the norm's scale multiplies the conv's weight (a [C_out, ...]
    tensor, cheap) instead of the output feature map, and its shift is the conv's bias. The same
    function up to float rounding, with a pass over the feature map fewer in the forward and in
    the backward; conv.weight's gradient flows through the product, and no parameter or buffer
    changes, so checkpoints are untouched. Blocks fold in training (fold=self.training); at
    inference the fast path folds once for good (fold_frozen_batchnorm) and the plain path keeps
    torchvision's arithmetic."""
    if not fold or type(norm) is not FrozenBatchNorm2d or conv.bias is not None:
        return norm(conv(x))
    scale, shift = norm.scale_shift()
    weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
    return conv._conv_forward(x, weight, shift.to(conv.weight.dtype))


def _fold_into(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> None:
    """conv <- norm(conv(.)), with FrozenBatchNorm2d's scale and shift."""
    with torch.no_grad():
        scale, shift = norm.scale_shift()
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
        else:
            conv.bias.mul_(scale).add_(shift)


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Fold every FrozenBatchNorm2d that follows a Conv2d into that conv, for inference.

    The pairs are those the backbones build: attributes `convN` / `bnN` of one module (ResNet
    blocks and stem) and a Conv2d directly followed by the norm in an nn.Sequential (shortcuts,
    VGG-BN). Each folded norm becomes nn.Identity, so the network computes the same function
    (up to float rounding) with one pass over each feature map fewer. Trainable norms (BN, GN) are
    left alone. Returns the number of norms folded.
    """
    folded = 0
    for parent in list(module.modules()):
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            pairs = [(a, b) for a, b in zip(names, names[1:], strict=False)]
        else:
            convs = [n for n in children if n.startswith("conv") and n[4:].isdigit()]
            pairs = [(n, "bn" + n[4:]) for n in convs]
        for conv_name, norm_name in pairs:
            conv, norm = children.get(conv_name), children.get(norm_name)
            if isinstance(conv, nn.Conv2d) and type(norm) is FrozenBatchNorm2d:
                _fold_into(conv, norm)
                setattr(parent, norm_name, nn.Identity())
                folded += 1
    return folded
