"""SGD with per-group weight decay, and the learning-rate schedule: warmup, then steps or a
cosine / linear decay."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch
from torch import nn

try:  # private: the devices with fused optimizer kernels (cpu and cuda in torch >= 2.4)
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
except ImportError:  # pragma: no cover - an older or newer torch without it

    def _get_fused_kernels_supported_devices() -> list[str]:
        return ["cuda"]


from ..config import Config

_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, cfg: Config) -> list[dict]:
    """Trainable parameters split by weight decay: norm layers, biases, everything else."""
    s = cfg.solver
    bias_decay = s.weight_decay if s.weight_decay_bias is None else s.weight_decay_bias
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NORMS):
                decay = s.weight_decay_norm
            elif name == "bias":
                decay = bias_decay
            else:
                decay = s.weight_decay
            groups.setdefault(decay, []).append(p)
    return [{"params": ps, "weight_decay": wd} for wd, ps in groups.items()]


def build_optimizer(
    model: nn.Module, cfg: Config, *, grad_scaling: bool = False
) -> torch.optim.Optimizer:
    """SGD with momentum, fused (one kernel per step: the same update, bit for bit) on the devices
    where torch has the kernel, CPU included; foreach elsewhere, and with fp16's gradient scaling
    (`grad_scaling`).

    On CPU the step is memory bound, and the fused kernel reads and writes each parameter once
    where foreach makes several passes; that is why it is preferred there too. Not with a
    GradScaler: fused SGD allocates its momentum buffers uninitialised and fills them in its
    first step; when the scaler skips that step (an overflow, common at the first fp16
    iteration) they stay garbage and the next step sends the weights to ~1e29 (seen in the
    classifier trainer on an H200, torch 2.11).
    """
    groups = param_groups(model, cfg)
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = not grad_scaling and devices <= set(_get_fused_kernels_supported_devices())
    kwargs = {"fused": True} if fused else {"foreach": True}
    return torch.optim.SGD(groups, lr=cfg.solver.base_lr, momentum=cfg.solver.momentum, **kwargs)


class WarmupSchedule:
    """lr factor at iteration `it`: linear warmup from `warmup_factor` over `warmup_iters`, times
    the decay: x gamma at each of `steps` ("step"), or from 1 down to 0 at `max_iter` along a
    half cosine ("cosine") or a line ("linear"). A time budget (budget.py) moves `steps` and
    `max_iter` while the run goes; `max_iter` = inf holds the cosine / linear decay at 1 until
    it is known."""

    DECAYS = ("step", "cosine", "linear")

    def __init__(
        self,
        warmup_iters: int,
        warmup_factor: float,
        steps: Sequence[int],
        gamma: float,
        decay: str = "step",
        max_iter: float = math.inf,
    ) -> None:
        if decay not in self.DECAYS:
            raise ValueError(f"decay must be one of {self.DECAYS}, not {decay!r}")
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.steps = list(steps)
        self.gamma = gamma
        self.decay = decay
        self.max_iter = max_iter

    def __call__(self, it: int) -> float:
        if self.decay == "step":
            factor = self.gamma ** bisect.bisect_right(self.steps, it)
        else:
            done = min(it / self.max_iter, 1.0)  # 0 while max_iter is inf
            factor = 0.5 * (1 + math.cos(math.pi * done)) if self.decay == "cosine" else 1 - done
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor

    def hold(self) -> None:
        """No decay until `reschedule` says where the schedule ends (a time budget's start)."""
        self.steps, self.max_iter = [], math.inf

    def reschedule(self, max_iter: int, steps: Sequence[int]) -> None:
        """The schedule ends at `max_iter` and steps at `steps` (those of a "step" decay)."""
        self.max_iter, self.steps = max_iter, list(steps)

    def describe(self) -> str:
        """Where the LR decays, for the log: its steps, or its decay to 0 at max_iter."""
        if self.decay == "step":
            return f"LR steps at {self.steps or 'none'}"
        return f"{self.decay} LR decay to 0 at {self.max_iter}"


def refresh_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """The next iteration's LR from a schedule changed since the scheduler last stepped (which
    set it from the schedule as it was)."""
    for group, base, schedule in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * schedule(scheduler.last_epoch)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config
) -> torch.optim.lr_scheduler.LambdaLR:
    """The solver's warmup + decay schedule (WarmupSchedule: solver.lr_schedule over
    solver.max_iter), stepped once per iteration."""
    s = cfg.solver
    schedule = WarmupSchedule(
        s.warmup_iters, s.warmup_factor, s.steps, s.gamma, s.lr_schedule, s.max_iter
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
