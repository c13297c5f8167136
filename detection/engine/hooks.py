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
        """Close the progress bar."""
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
    """Evaluates every `test.eval_period` iterations (> 0) and writes the AP to metrics.jsonl
    as `bbox/<metric>`; the final evaluation is the trainer's own."""

    def __init__(self, period: int, max_iter: int, writer: MetricsWriter) -> None:
        self.period, self.max_iter, self.writer = period, max_iter, writer

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor], images: int) -> None:
        """Evaluate when the iteration is a multiple of test.eval_period (before the end)."""
        if self.period > 0 and trainer.iteration % self.period == 0:
            if trainer.iteration < self.max_iter:
                run_evaluation(trainer, self.writer)


def run_evaluation(trainer: Trainer, writer: MetricsWriter) -> dict[str, Any]:
    """Evaluate the trainer's model, record the numeric metrics, put the model back in train
    mode; returns {"eval": metrics}."""
    metrics = trainer.evaluate(trainer.model, trainer.iteration)
    flat = {
        f"bbox/{k}": v
        for k, v in (metrics.get("bbox", metrics)).items()
        if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))
    }
    writer.write({"iteration": trainer.iteration, **flat})
    trainer.model.train()
    return {"eval": metrics}
