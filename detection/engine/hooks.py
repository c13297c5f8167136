"""The trainers' periodic work as hooks: metrics and progress, checkpoints, evaluation, and the
best checkpoint with early stopping.

A hook sees the trainer after each optimizer step (`after_step`) and at the end of training
(`after_train`); the trainer calls its hooks in list order. This is Detectron2's HookBase idea
without its registry: each trainer's `build_hooks` makes the list, which reads as the schedule.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from ..utils.distributed import reduce_mean
from ..utils.metrics import MetricsWriter
from .base import Hook, TrainerBase


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process so far: max allocated on CUDA, peak RSS on CPU (MiB)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class MetricsHook(Hook):
    """Sums the step outputs over solver.log_period iterations; at the end of each period writes
    a metrics.jsonl record (the subclass's summary, then time per iteration, data time,
    images/s, peak memory and precision), updates the progress bar and, when stderr is not a
    terminal, logs one line. Subclasses say what the sums mean: `summarize` and `progress`."""

    def __init__(self, trainer: TrainerBase, writer: MetricsWriter) -> None:
        self.writer = writer
        self.period = trainer.cfg.solver.log_period
        self.world_size = trainer.info.world_size
        self.is_main = trainer.info.is_main
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=trainer.max_iter,
            initial=trainer.iteration,
            desc="train",
            unit="it",
            disable=not self.is_main,
            dynamic_ncols=True,
            mininterval=0.5 if self.tty else 30.0,
            file=sys.stderr,
        )
        self.last_record: dict[str, Any] = {}
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.images, self.data_time = 0, 0, 0.0  # images: this process's
        self.start = time.perf_counter()

    def after_step(self, trainer: TrainerBase, outputs: dict[str, torch.Tensor], images: int):
        """Accumulate the outputs; at the end of a period write the record and reset."""
        if self.bar.total != trainer.max_iter:  # a time budget (budget.py) moved the end
            self.bar.total = trainer.max_iter
            self.bar.refresh()
        self.bar.update(1)
        for k, v in outputs.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.count += 1
        self.images += images
        self.data_time += trainer.last_data_time
        if trainer.iteration % self.period == 0 or trainer.iteration == trainer.max_iter:
            self._write(trainer)
            self._reset()

    def summarize(self, trainer: TrainerBase) -> dict[str, Any]:
        """The record's leading fields (iteration, ...) from self.sums over self.count steps
        and self.images images of this process; collective (reduce_mean) with DDP."""
        raise NotImplementedError

    def progress(self, trainer: TrainerBase, record: dict[str, Any]) -> tuple[dict, str]:
        """(the progress bar's postfix, the log line) of a record."""
        raise NotImplementedError

    def _write(self, trainer: TrainerBase) -> None:
        record = self.summarize(trainer)
        elapsed = time.perf_counter() - self.start
        record.update(
            time_per_iter=elapsed / self.count,
            data_time=self.data_time / self.count,
            images_per_s=self.images * self.world_size / elapsed,
            peak_memory_mb=peak_memory_mb(trainer.device),
            precision=trainer.precision.name,
        )
        self.last_record = record
        self.writer.write(record)
        postfix, line = self.progress(trainer, record)
        self.bar.set_postfix(**postfix)
        if not self.tty and self.is_main:
            trainer.log(line)

    def after_train(self, trainer: TrainerBase) -> None:
        """Write the last, partial period of an early-stopped run; close the progress bar."""
        if trainer.stopped_early and self.count:
            self._write(trainer)
            self._reset()
        self.bar.close()


class LossMetricsHook(MetricsHook):
    """The detector's record: learning rate, each loss term's mean and their total."""

    def summarize(self, trainer: TrainerBase) -> dict[str, Any]:
        """iteration, lr, the mean of each loss term over the period and ranks, total_loss."""
        self.means = reduce_mean({k: v / self.count for k, v in self.sums.items()})
        return {
            "iteration": trainer.iteration,
            "lr": trainer.last_lr,
            **self.means,
            "total_loss": sum(self.means.values()),
        }

    def progress(self, trainer: TrainerBase, record: dict[str, Any]) -> tuple[dict, str]:
        """Total loss, lr, images/s and memory on the bar; every term in the log line."""
        lr = record["lr"]
        postfix = dict(
            loss=f"{record['total_loss']:.3f}",
            lr=f"{lr:.2g}",
            img_s=f"{record['images_per_s']:.1f}",
            mem=f"{record['peak_memory_mb']:.0f}M",
        )
        per_epoch = getattr(trainer, "iters_per_epoch", None)
        epoch = f"(epoch {trainer.iteration / per_epoch:.2f}) " if per_epoch else ""
        line = (
            f"iter {trainer.iteration}/{trainer.max_iter} {epoch}"
            + " ".join(f"{k}={v:.4g}" for k, v in self.means.items())
            + f" lr={lr:.3g} {record['images_per_s']:.1f} img/s"
        )
        return postfix, line


class CheckpointHook(Hook):
    """Saves `model_<iteration>.pth` every `solver.checkpoint_period` iterations (the final
    checkpoint is the trainer's own)."""

    def __init__(self, period: int) -> None:
        self.period = period

    def after_step(self, trainer: TrainerBase, outputs: dict[str, torch.Tensor], images: int):
        """Save a periodic checkpoint when the iteration is a multiple of the period."""
        if trainer.iteration % self.period == 0 and trainer.iteration < trainer.max_iter:
            trainer.save(f"model_{trainer.iteration:07d}.pth")


class EvalHook(Hook):
    """Calls `evaluate()` every `period` iterations (> 0) before the last (the final evaluation
    is the trainer's own). It runs before CheckpointHook, so that a checkpoint taken at an
    evaluated iteration holds the best-so-far and patience state that includes that
    evaluation."""

    def __init__(self, period: int, evaluate: Callable[[], Any]) -> None:
        self.period, self.evaluate = period, evaluate

    def after_step(self, trainer: TrainerBase, outputs: dict[str, torch.Tensor], images: int):
        """Evaluate when the iteration is a multiple of the period (before the end)."""
        if self.period > 0 and trainer.iteration % self.period == 0:
            if trainer.iteration < trainer.max_iter:
                self.evaluate()


def _number(value: Any) -> float | None:
    """A metric as a float, or None when it is missing, not a number or NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


class BestCheckpoint:
    """model_best.pth by test.best_metric, and early stopping after solver.patience evaluations
    without improvement.

    Enabled when the run evaluates periodically (test.eval_period > 0): after each evaluation,
    the periodic ones and the final one, bbox/<metric> is compared with the best so far (higher
    is better; a missing or NaN value is no improvement, a tie is none either). A new best is
    written to model_best.pth atomically, without moving the last_checkpoint pointer (--resume
    still continues from the last periodic or final checkpoint), and recorded in metrics.jsonl as
    {"iteration", "best_checkpoint": "model_best.pth", "best/<metric>"}. With
    test.eval_period == 0 the run is evaluated once, at the end: there is nothing to choose
    from, so no model_best.pth is written (model_final.pth is that model).

    Its state (the best value and iteration, the evaluations since, the last iteration
    evaluated) is part of every checkpoint, so --resume continues it exactly; an iteration
    evaluated again (a finished run resumed) is counted once.
    """

    NAME = "model_best.pth"

    def __init__(self, metric: str, patience: int, enabled: bool) -> None:
        self.metric, self.patience, self.enabled = metric, patience, enabled
        self.value: float | None = None  # the best bbox/<metric> so far
        self.iteration: int | None = None  # where it was
        self.stale = 0  # evaluations in a row without improvement
        self.evaluated = -1  # the last iteration evaluated
        self._warned = False

    def state_dict(self) -> dict[str, Any]:
        """Plain data for the checkpoint (loadable with weights_only=True)."""
        return {
            "metric": self.metric,
            "value": self.value,
            "iteration": self.iteration,
            "stale": self.stale,
            "evaluated": self.evaluated,
        }

    def load_state_dict(self, state: dict[str, Any]) -> str | None:
        """Continue from a checkpoint's state; returns a warning when it cannot (the checkpoint
        ranked by another test.best_metric) and starts afresh then."""
        if state.get("metric") != self.metric:
            return (
                f"the checkpoint kept the best bbox/{state.get('metric')}, this run ranks by "
                f"test.best_metric={self.metric}: model_best.pth is chosen afresh from here on"
            )
        self.value, self.iteration = state["value"], state["iteration"]
        self.stale, self.evaluated = int(state["stale"]), int(state["evaluated"])
        return None

    @property
    def exhausted(self) -> bool:
        """solver.patience (> 0) evaluations in a row without a new best: time to stop."""
        return self.enabled and self.patience > 0 and self.stale >= self.patience

    def update(self, trainer: TrainerBase, bbox: dict[str, Any], writer: MetricsWriter) -> None:
        """Rank the evaluation of `trainer.iteration` (its bbox metrics); save a new best.

        Every rank must see the same metrics (training_evaluator broadcasts them): saving is
        collective."""
        if not self.enabled or trainer.iteration <= self.evaluated:
            return
        self.evaluated = trainer.iteration
        value = _number(bbox.get(self.metric))
        if value is None and not self._warned and self.metric not in bbox:
            self._warned = True
            trainer.log(
                f"test.best_metric={self.metric}: the evaluation has no bbox/{self.metric} "
                f"(it has {sorted(bbox)}); no evaluation counts as an improvement"
            )
        if value is not None and (self.value is None or value > self.value):
            self.value, self.iteration, self.stale = value, trainer.iteration, 0
            trainer.save(self.NAME, periodic=False, pointer=False)
            writer.write(
                {
                    "iteration": trainer.iteration,
                    "best_checkpoint": self.NAME,
                    f"best/{self.metric}": value,
                }
            )
        else:
            self.stale += 1

    def stop_message(self, iteration: int) -> str:
        """What the early stop says: where, why, and which model is the best."""
        best = (
            f"the best, bbox/{self.metric}={self.value:.4g}, was at iteration {self.iteration} "
            f"({self.NAME})"
            if self.value is not None
            else f"no evaluation gave a bbox/{self.metric}"
        )
        return (
            f"early stop at iteration {iteration}: bbox/{self.metric} has not improved for "
            f"{self.stale} evaluations (solver.patience={self.patience}); {best}"
        )
