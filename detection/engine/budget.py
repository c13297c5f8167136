"""A training time budget (solver.max_seconds): the schedule scaled to the iterations that fit.

The config's schedule (max_iter, steps; or max_epochs) gives the schedule's shape. The run
starts with it and times itself: once 5% of the budget (at most 2 minutes) has passed and at
least `MIN_TIMED` iterations after the first `SKIP` (which carry one-off costs: allocator warm-up,
oneDNN's kernel choice, the loader's first batches), the seconds per iteration so far give how
many iterations fit in what is left; max_iter becomes that, and every LR step moves with it
(step / max_iter kept; no step is taken before the decision). The warmup stays as it is, in
iterations. The decision is made once, logged, broadcast from rank 0 (every rank runs the same
schedule) and kept in checkpoints, so that a resumed run keeps it. Time is the training loop's:
from the first batch's loading to the last step's hooks, as metrics.jsonl's time_per_iter adds
up; the model's building and the final evaluation are outside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..utils.distributed import broadcast_from_main
from .base import Hook, TrainerBase

SKIP = 2  # first iterations left out of the timing
MIN_TIMED = 8  # timed iterations before the decision
TIMED_FRACTION, TIMED_MAX_S = 0.05, 120.0  # the timed start: 5% of the budget, <= 2 minutes


def scaled_steps(steps: Sequence[int], max_iter: int, new_max_iter: int) -> list[int]:
    """The LR steps of a `max_iter` schedule moved to a `new_max_iter` one (fractions kept);
    steps that would fall at 0 or at / after the end are dropped."""
    moved = {round(step * new_max_iter / max_iter) for step in steps}
    return sorted(step for step in moved if 0 < step < new_max_iter)


class TimeBudgetHook(Hook):
    """Decides max_iter from the timed start of the run (see the module docstring). Put it first
    in the trainer's hooks, so that the others see the new max_iter at the same step.

    `spent` is the training time of the run before this process (a resumed run's checkpoint);
    `decided` is the max_iter chosen before (None: not yet)."""

    def __init__(
        self, trainer: TrainerBase, seconds: float, spent: float = 0.0, decided: int | None = None
    ) -> None:
        self.seconds, self.spent, self.decided = seconds, spent, decided
        self.config_max_iter = trainer.max_iter
        self.first = trainer.iteration
        self.start = time.perf_counter()
        self.skip_time: float | None = None
        self.steps = list(trainer.cfg.solver.steps)  # the schedule's, before scaling
        if decided is not None:
            trainer.max_iter = decided
        else:  # no LR step before the decision says where the steps are
            trainer.scheduler.lr_lambdas[0].steps = []

    def now(self) -> float:
        """Seconds since this process's training loop started (one clock reading)."""
        return time.perf_counter() - self.start

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the seconds spent and the decision."""
        return {"seconds_spent": self.spent + self.now(), "max_iter": self.decided}

    def after_step(self, trainer: TrainerBase, outputs: dict[str, torch.Tensor], images: int):
        """Time the start; at its end, scale the schedule to the budget."""
        done = trainer.iteration - self.first
        now = self.now()
        elapsed = self.spent + now  # the run's, a resumed run's earlier processes included
        if done == SKIP:
            self.skip_time = now
        if self.decided is not None or self.skip_time is None or done == SKIP:
            return
        timed_enough = done >= SKIP + MIN_TIMED and (
            now >= min(TIMED_FRACTION * self.seconds, TIMED_MAX_S) or elapsed >= self.seconds
        )
        # a schedule that would end before the timed start does: decide at its last step but one
        ready = timed_enough or trainer.iteration >= self.config_max_iter - 1
        per_iter = (now - self.skip_time) / (done - SKIP)
        new_max = trainer.iteration + max(0, math.floor((self.seconds - elapsed) / per_iter))
        # rank 0's clock decides for every rank (a collective each step of the timed start only)
        ready, new_max = broadcast_from_main((ready, new_max))
        if ready:
            self.apply(trainer, new_max, per_iter, f"{done} iterations took {elapsed:.1f} s")

    def apply(self, trainer: TrainerBase, new_max: int, per_iter: float, timing: str) -> None:
        """Set max_iter and move the scheduler's steps; say so."""
        self.decided = new_max
        schedule = trainer.scheduler.lr_lambdas[0]  # a WarmupMultiStep (optim.build_scheduler)
        schedule.steps = scaled_steps(self.steps, self.config_max_iter, new_max)
        trainer.max_iter = new_max
        trainer.log(
            f"time budget solver.max_seconds={self.seconds:g}: {timing} "
            f"({per_iter:.3g} s/iteration after the first {SKIP}) -> "
            f"max_iter={new_max} (the schedule's {self.config_max_iter} x "
            f"{new_max / self.config_max_iter:.3g}), LR steps at {schedule.steps or 'none'} "
            f"(were {self.steps or 'none'})"
        )

    def after_train(self, trainer: TrainerBase) -> None:
        """Say how the run kept to its budget."""
        spent = self.spent + self.now()
        trainer.log(
            f"time budget: {trainer.iteration} iterations in {spent:.0f} s of "
            f"{self.seconds:g} s ({100 * (spent / self.seconds - 1):+.1f}%)"
        )
