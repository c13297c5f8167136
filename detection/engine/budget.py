"""A training time budget (solver.max_seconds): the schedule scaled to the iterations that fit.

The config's schedule (max_iter, steps; or max_epochs) gives the schedule's shape. The run
starts with it and times itself: once 5% of the budget (at most 2 minutes) has passed and at
least `MIN_TIMED` iterations after the first `SKIP` (which carry one-off costs: allocator warm-up,
oneDNN's kernel choice, the loader's first batches), the seconds per iteration so far give how
many iterations fit in what is left; max_iter becomes that, and every LR step moves with it
(step / max_iter kept), or a cosine / linear decay ends there instead (no decay before the
decision). The warmup stays as it is, in iterations. Iterations can slow down later (another
job on the machine, a busier phase of learning), so the run times itself again `REPLANS` times
over what is left: from the pace since the previous look, max_iter becomes the iterations that
still fit, and the steps not yet taken move with it (a step taken stays taken; a cosine /
linear decay stretches or shrinks to the new end). Each decision is logged, broadcast from
rank 0 (every rank runs the same schedule) and kept in checkpoints, so that a resumed run
keeps it. Time is the training loop's: from the first batch's loading to the last step's
hooks, as metrics.jsonl's time_per_iter adds up; the model's building and the final
evaluation are outside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..utils.distributed import broadcast_from_main
from .base import Hook, TrainerBase
from .optim import refresh_lr

SKIP = 2  # first iterations left out of the timing
MIN_TIMED = 8  # timed iterations before the decision
TIMED_FRACTION, TIMED_MAX_S = 0.05, 120.0  # the timed start: 5% of the budget, <= 2 minutes
REPLANS = 10  # looks at the pace after the decision, evenly over the iterations it laid out


def scaled_steps(steps: Sequence[float], max_iter: float, new_max_iter: int) -> list[int]:
    """The LR steps of a `max_iter` schedule (iterations, or epochs of a `max_iter`-epoch one)
    moved to a `new_max_iter` one (fractions kept); steps that would fall at 0 or at / after
    the end are dropped."""
    moved = {round(step * new_max_iter / max_iter) for step in steps}
    return sorted(step for step in moved if 0 < step < new_max_iter)


def replanned_steps(
    steps: Sequence[int], max_iter: int, placed: Sequence[int], iteration: int, new_max_iter: int
) -> list[int]:
    """The LR steps after a later look at the pace: those of `placed` already taken (at or
    before `iteration`) stay; the config's remaining `steps` (of a `max_iter` schedule) move to
    the `new_max_iter` one, not before the next iteration; none at or after the end."""
    taken = [step for step in placed if step <= iteration]
    rest = sorted(steps)[len(taken) :]
    moved = [max(round(step * new_max_iter / max_iter), iteration + 1) for step in rest]
    return sorted({*taken, *(step for step in moved if step < new_max_iter)})


class TimeBudgetHook(Hook):
    """Decides max_iter from the timed start of the run (see the module docstring). Put it first
    in the trainer's hooks, so that the others see the new max_iter at the same step.

    `state` is a resumed run's (its checkpoint's `state_dict()`): the training time spent before
    this process, and the decision (none yet: no `max_iter`)."""

    def __init__(
        self, trainer: TrainerBase, seconds: float, state: dict[str, Any] | None = None
    ) -> None:
        state = state or {}
        self.seconds, self.spent = seconds, state.get("seconds_spent", 0.0)
        self.decided: int | None = state.get("max_iter")
        # the later looks: every `every` iterations from iteration `decided_at`
        self.decided_at: int = state.get("decided_at", 0)
        self.every: int = state.get("replan_every", 0)  # 0: no later looks
        self.config_max_iter = trainer.max_iter
        self.first = trainer.iteration
        self.start = time.perf_counter()
        self.skip_time: float | None = None
        self.mark: tuple[int, float] | None = None  # (iteration, clock) of this process's last look
        self.steps = list(trainer.cfg.solver.steps)  # the schedule's, before scaling
        if self.decided is not None:
            trainer.max_iter = self.decided
        else:  # no LR decay before the decision says where the schedule ends
            trainer.scheduler.lr_lambdas[0].hold()

    def now(self) -> float:
        """Seconds since this process's training loop started (one clock reading)."""
        return time.perf_counter() - self.start

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the seconds spent and the decision."""
        return {
            "seconds_spent": self.spent + self.now(),
            "max_iter": self.decided,
            "decided_at": self.decided_at,
            "replan_every": self.every,
        }

    def after_step(self, trainer: TrainerBase, outputs: dict[str, torch.Tensor], images: int):
        """Time the start; at its end, scale the schedule to the budget; later, look again."""
        done = trainer.iteration - self.first
        now = self.now()
        elapsed = self.spent + now  # the run's, a resumed run's earlier processes included
        if self.decided is not None:
            self.look_again(trainer, now, elapsed)
            return
        if done == SKIP:
            self.skip_time = now
        if self.skip_time is None or done == SKIP:
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
            self.decided_at = trainer.iteration
            # each look times at least MIN_TIMED iterations
            self.every = max(MIN_TIMED, (new_max - trainer.iteration) // REPLANS)
            self.mark = (trainer.iteration, now)

    def look_again(self, trainer: TrainerBase, now: float, elapsed: float) -> None:
        """At every `every`-th iteration after the decision: the pace since this process's last
        look gives the iterations that still fit; move the end and the steps not yet taken."""
        it = trainer.iteration
        if not self.every or it >= trainer.max_iter or (it - self.decided_at) % self.every:
            return
        if self.mark is None:  # a resumed process: its pace starts here
            self.mark = (it, now)
            return
        since, then = self.mark
        per_iter = (now - then) / (it - since)
        self.mark = (it, now)
        new_max = it + max(0, math.floor((self.seconds - elapsed) / per_iter))
        (new_max,) = broadcast_from_main((new_max,))
        if new_max == trainer.max_iter:
            return
        schedule = trainer.scheduler.lr_lambdas[0]
        old_max, old_steps = trainer.max_iter, schedule.steps
        steps = replanned_steps(self.steps, self.config_max_iter, old_steps, it, new_max)
        schedule.reschedule(new_max, steps)
        refresh_lr(trainer.scheduler)
        self.decided = trainer.max_iter = new_max
        were = f" (were {old_steps or 'none'})" if schedule.decay == "step" else ""
        trainer.log(
            f"time budget: at iteration {it}, {per_iter:.3g} s/iteration since iteration "
            f"{since} with {self.seconds - elapsed:.0f} s left -> max_iter={new_max} "
            f"(was {old_max}), {schedule.describe()}{were}"
        )

    def apply(self, trainer: TrainerBase, new_max: int, per_iter: float, timing: str) -> None:
        """Set max_iter and move the scheduler's steps; say so."""
        self.decided = new_max
        schedule = trainer.scheduler.lr_lambdas[0]  # a WarmupSchedule (optim.build_scheduler)
        schedule.reschedule(new_max, scaled_steps(self.steps, self.config_max_iter, new_max))
        refresh_lr(trainer.scheduler)
        trainer.max_iter = new_max
        was = f"were {self.steps or 'none'}" if schedule.decay == "step" else "held until now"
        trainer.log(
            f"time budget solver.max_seconds={self.seconds:g}: {timing} "
            f"({per_iter:.3g} s/iteration after the first {SKIP}) -> "
            f"max_iter={new_max} (the schedule's {self.config_max_iter} x "
            f"{new_max / self.config_max_iter:.3g}), {schedule.describe()} ({was})"
        )

    def after_train(self, trainer: TrainerBase) -> None:
        """Say how the run kept to its budget."""
        spent = self.spent + self.now()
        trainer.log(
            f"time budget: {trainer.iteration} iterations in {spent:.0f} s of "
            f"{self.seconds:g} s ({100 * (spent / self.seconds - 1):+.1f}%)"
        )
