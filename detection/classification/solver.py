"""The classifier's optimizer and learning-rate schedule: SGD, linear scaling, steps, warmup."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
from torch import nn

from .config import ClassifierSolverConfig


@dataclass
class Schedule:
    """solver's length and steps in iterations (epochs converted with the training set size)."""

    iters_per_epoch: int
    max_iter: int
    steps: list[int]


def resolve_schedule(s: ClassifierSolverConfig, num_images: int) -> Schedule:
    """An epoch is len(training set) // ims_per_batch iterations (at least one)."""
    ipe = max(1, num_images // s.ims_per_batch)
    if s.max_epochs is not None:
        return Schedule(ipe, s.max_epochs * ipe, [round(x * ipe) for x in s.steps])
    return Schedule(ipe, int(s.max_iter), [round(x) for x in s.steps])


class StepSchedule:
    """Learning-rate factor at iteration `it`: warmup (constant or linear), x gamma per step."""

    def __init__(self, steps: list[int], gamma: float, warmup: int, factor: float, method: str):
        self.steps, self.gamma = list(steps), gamma
        self.warmup, self.factor, self.method = warmup, factor, method

    def __call__(self, it: int) -> float:
        value = self.gamma ** bisect.bisect_right(self.steps, it)
        if it < self.warmup:
            alpha = it / self.warmup if self.method == "linear" else 0.0
            value *= self.factor * (1 - alpha) + alpha
        return value


def scaled_lr(s: ClassifierSolverConfig) -> float:
    """The linear scaling rule: base_lr at reference_batch, proportional to ims_per_batch."""
    return s.base_lr * s.ims_per_batch / s.reference_batch


def build_optimizer(
    model: nn.Module, s: ClassifierSolverConfig, device: str, *, grad_scaling: bool = False
) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every trainable parameter: fused on CPU / CUDA,
    foreach with fp16's gradient scaling (`grad_scaling`).

    Why not fused with a GradScaler: fused SGD allocates its momentum buffers uninitialised and
    fills them in its first step; when the scaler skips that step (an overflow, common at the
    first fp16 iteration) they stay garbage and the next step sends the weights to ~1e29
    (seen on an H200 with torch 2.11, ResNet-56 in fp16).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = torch.device(device).type in ("cpu", "cuda") and not grad_scaling
    return torch.optim.SGD(
        params,
        lr=scaled_lr(s),
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        **({"fused": True} if fused else {"foreach": True}),
    )
