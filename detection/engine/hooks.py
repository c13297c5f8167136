"""The trainer's periodic work as hooks: metrics and progress, checkpoints, evaluation.

A hook sees the trainer after each optimizer step (`after_step`) and at the end of training
(`after_train`); the trainer calls its hooks in list order. This is Detectron2's HookBase idea
without its registry: the list is built in `Trainer.build_hooks` and reads as the schedule.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from ..utils.distributed import reduce_mean

if TYPE_CHECKING:
    from .trainer import Trainer


class MetricsWriter:
    """Appends one JSON object per record to metrics.jsonl (and TensorBoard when installed)."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(output_dir / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` (it must hold "iteration"); numbers also go to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "iteration" and isinstance(v, int | float) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, record["iteration"])
            self.tb.flush()

    def truncate(self, iteration: int) -> None:
        """Drop the records written after `iteration`: a run resumed there redoes them (torn
        lines from a kill go too); a fresh run (0) starts a fresh file."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= iteration:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line torn by the kill
        self.path.write_text("".join(k + "\n" for k in kept))

    def close(self) -> None:
        """Close the TensorBoard writer (metrics.jsonl is closed after every record)."""
        if self.tb is not None:
            self.tb.close()


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process so far: max allocated on CUDA, peak RSS on CPU (MiB)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class Hook:
    """Periodic work of the training loop; override what you need."""

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor], images: int) -> None:
        """After optimizer step `trainer.iteration` (already counted) on `images` images."""

    def after_train(self, trainer: Trainer) -> None:
        """After the last iteration, before the final checkpoint (also after an error)."""


class MetricsHook(Hook):
    """Averages the losses over `log_period` iterations; writes a metrics.jsonl record, updates
    the progress bar and, when stderr is not a terminal, logs one line per period."""

    def __init__(self, trainer: Trainer, writer: MetricsWriter) -> None:
        self.writer = writer
        self.period = trainer.cfg.solver.log_period
        self.max_iter = trainer.cfg.solver.max_iter
        self.world_size = trainer.info.world_size
        self.is_main = trainer.info.is_main
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=self.max_iter,
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
        self.count, self.images, self.data_time = 0, 0, 0.0
        self.start = time.perf_counter()

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor], images: int) -> None:
        """Accumulate the losses; at the end of a period write the record and reset."""
        self.bar.update(1)
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.count += 1
        self.images += images * self.world_size
        self.data_time += trainer.last_data_time
        if trainer.iteration % self.period == 0 or trainer.iteration == self.max_iter:
            self._write(trainer)
            self._reset()

    def _write(self, trainer: Trainer) -> None:
        means = reduce_mean({k: v / self.count for k, v in self.sums.items()})
        elapsed = time.perf_counter() - self.start
        lr = trainer.last_lr
        record = {
            "iteration": trainer.iteration,
            "lr": lr,
            **means,
            "total_loss": sum(means.values()),
            "time_per_iter": elapsed / self.count,
            "data_time": self.data_time / self.count,
            "images_per_s": self.images / elapsed,
            "peak_memory_mb": peak_memory_mb(trainer.device),
            "precision": trainer.precision.name,
        }
        self.last_record = record
        self.writer.write(record)
        self.bar.set_postfix(
            loss=f"{record['total_loss']:.3f}",
            lr=f"{lr:.2g}",
            img_s=f"{record['images_per_s']:.1f}",
            mem=f"{record['peak_memory_mb']:.0f}M",
        )
        if not self.tty and self.is_main:
            trainer.log(
                f"iter {trainer.iteration}/{self.max_iter} "
                + " ".join(f"{k}={v:.4g}" for k, v in means.items())
                + f" lr={lr:.3g} {record['images_per_s']:.1f} img/s"
            )

    def after_train(self, trainer: Trainer) -> None:
        """Write the last, partial period of an early-stopped run; close the progress bar."""
        if trainer.stopped_early and self.count:
            self._write(trainer)
            self._reset()
        self.bar.close()


class CheckpointHook(Hook):
    """Saves `model_<iteration>.pth` every `solver.checkpoint_period` iterations (the final
    checkpoint is the trainer's own)."""

    def __init__(self, period: int, max_iter: int) -> None:
        self.period, self.max_iter = period, max_iter

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor], images: int) -> None:
        """Save a periodic checkpoint when the iteration is a multiple of the period."""
        if trainer.iteration % self.period == 0 and trainer.iteration < self.max_iter:
            trainer.save(f"model_{trainer.iteration:07d}.pth")


class EvalHook(Hook):
    """Evaluates every `test.eval_period` iterations (> 0), writes the AP to metrics.jsonl as
    `bbox/<metric>` and updates the trainer's BestCheckpoint; the final evaluation is the
    trainer's own. It runs before CheckpointHook, so that a checkpoint taken at an evaluated
    iteration holds the best-so-far and patience state that includes that evaluation."""

    def __init__(self, period: int, max_iter: int, writer: MetricsWriter) -> None:
        self.period, self.max_iter, self.writer = period, max_iter, writer

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor], images: int) -> None:
        """Evaluate when the iteration is a multiple of test.eval_period (before the end)."""
        if self.period > 0 and trainer.iteration % self.period == 0:
            if trainer.iteration < self.max_iter:
                run_evaluation(trainer, self.writer)


def run_evaluation(trainer: Trainer, writer: MetricsWriter) -> dict[str, Any]:
    """Evaluate the trainer's model, record the numeric metrics, put the model back in train
    mode, keep them as `trainer.last_eval` and let `trainer.best` see them; returns
    {"eval": metrics}."""
    metrics = trainer.evaluate(trainer.model, trainer.iteration)
    bbox = metrics.get("bbox", metrics)
    flat = {
        f"bbox/{k}": v
        for k, v in bbox.items()
        if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))
    }
    writer.write({"iteration": trainer.iteration, **flat})
    trainer.model.train()
    trainer.last_eval = (trainer.iteration, metrics)
    trainer.best.update(trainer, bbox, writer)
    return {"eval": metrics}


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

    def update(self, trainer: Trainer, bbox: dict[str, Any], writer: MetricsWriter) -> None:
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
