"""The training loop: mixed precision, DDP, periodic checkpoints and evaluation (hooks), exact
resume, metrics and progress."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..data import build_dataset, build_train_loader
from ..data.build import batch_to_device
from ..modeling import build_model
from ..utils.distributed import DistInfo
from ..utils.logging import console_configured, log_to_file, remove_log_file
from ..utils.metrics import MetricsWriter
from ..utils.precision import autocast
from .base import Hook, TrainerBase
from .budget import TimeBudgetHook
from .failures import (
    check_training_config,
    out_of_memory_error,
    training_precision,
    use_channels_last,
)
from .hooks import BestCheckpoint, CheckpointHook, EvalHook, LossMetricsHook
from .optim import build_optimizer, build_scheduler, refresh_lr
from .plan import check_test_split, classes_from_data, epochs_to_iterations

# check_training_config and use_channels_last: imported from here by the benchmark and tests
__all__ = ["Trainer", "check_training_config", "train", "use_channels_last"]

EvalFn = Callable[..., dict[str, Any]]  # evaluate(model, iteration, final=None) -> metrics
Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]
logger = logging.getLogger(__name__)


def _log(message: str) -> None:
    """Progress lines go to the library's logging (the console of a tool, log.txt), and
    straight to stderr where no tool configured the console (the library used from a script)."""
    logger.info(message)
    if not console_configured():
        print(message, file=sys.stderr, flush=True)


class Trainer(TrainerBase):
    """Runs `cfg.solver.max_iter` iterations of Faster R-CNN training on this process's shard.

    Each iteration is one optimizer step over solver.ims_per_batch images (all processes),
    loaded and run as solver.accumulate forward/backward passes; the schedule (max_iter, steps,
    warmup, checkpoint, evaluation and log periods) counts optimizer steps. With
    test.eval_period > 0, `best` keeps model_best.pth by test.best_metric and stops training
    after solver.patience evaluations without improvement (see hooks.BestCheckpoint).
    Checkpoints, resume, DDP and the step are the training core's (base.TrainerBase).

    Args:
        cfg: the resolved config (model, data.train, solver, test.eval_period, output_dir).
        device: "cpu" or "cuda[:i]"; solver.amp "auto" is resolved for it.
        dist_info: this process's rank and world size (init_distributed); None = one process.
        evaluate: `evaluate(model, iteration) -> metrics` run every test.eval_period
            iterations and at the end (detection.evaluation.training_evaluator builds one); it
            must return the same metrics on every rank.
        log: where progress lines go (default: stderr); silent on ranks other than 0.

    Attributes: model (the FasterRCNN, unwrapped), optimizer, scheduler, iteration (optimizer
    steps done), precision (what solver.amp resolved to), best (the BestCheckpoint), last_eval
    ((iteration, metrics) of the last evaluation), stopped_early.
    """

    remedy = "Lower solver.base_lr, raise solver.warmup_iters or set solver.clip_grad_norm."

    def __init__(
        self,
        cfg: Config,
        *,
        device: str = "cpu",
        dist_info: DistInfo | None = None,
        evaluate: EvalFn | None = None,
        log: Callable[[str], None] | None = None,
        resume: bool = False,
    ) -> None:
        info = dist_info or DistInfo()
        check_training_config(cfg, info.world_size)
        super().__init__(cfg, device=device, dist_info=info, log=log or _log)
        self.evaluate = evaluate
        self.dataset = build_dataset(cfg, "train")
        self.class_names = self.dataset.class_names
        classes_from_data(cfg, self.class_names, self.log)
        self.iters_per_epoch = epochs_to_iterations(cfg, len(self.dataset), self.log)
        if evaluate is not None and cfg.test.eval_period >= 0:  # -1: never evaluated
            # the evaluation's data fails now, not after the training
            check_test_split(cfg, self.class_names)
        self.precision = training_precision(cfg.solver.amp, device)
        self.log(f"training precision: {self.precision}")
        # a run that will resume takes every weight from its checkpoint: model.weights and
        # model.backbone.weights are not read (the files it started from may be gone)
        resuming = resume and self.checkpointer.last() is not None
        names = self.class_names
        self.model = build_model(cfg, load_weights=not resuming, class_names=names).to(device)
        if use_channels_last(cfg.solver.memory_format, self.precision.name):
            self.model.set_channels_last(True)
        fp16 = self.precision.name == "fp16"  # a GradScaler: not the fused SGD (see optim)
        self.optimizer = build_optimizer(self.model, cfg, grad_scaling=fp16)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.max_iter = cfg.solver.max_iter
        self.clip_grad_norm = cfg.solver.clip_grad_norm
        t = cfg.test
        self.best = BestCheckpoint(t.best_metric, cfg.solver.patience, t.eval_period > 0)
        self.last_eval: tuple[int, dict[str, Any]] | None = None
        self.budget: TimeBudgetHook | None = None  # solver.max_seconds (built with the hooks)
        self.budget_state: dict[str, Any] = {}  # a resumed run's budget (seconds spent, decision)
        # only now that the data, the model (and model.weights) and the schedule are known
        # good: bad input must fail before anything is written
        self.open_output_dir()
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True

    # -- state: the best-checkpoint / patience state and the data position ---------------------

    def extra_state(self) -> dict[str, Any]:
        """The loader's position and the best-checkpoint / patience state."""
        state = {
            "data": {"start_iter": self.iteration, "world_size": self.info.world_size},
            "best": self.best.state_dict(),
        }
        if self.budget is not None:
            state["budget"] = self.budget.state_dict()
        return state

    def load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        """The core's state, then the best-checkpoint / patience state."""
        super().load_state(ckpt, path)
        if "best" in ckpt:  # absent from checkpoints older than model_best.pth
            problem = self.best.load_state_dict(ckpt["best"])
            if problem:
                warnings.warn(f"resuming {path}: {problem}", stacklevel=3)
        self.budget_state = ckpt.get("budget") or {}
        if self.budget_state.get("max_iter") is None:
            # the config's schedule, as for max_iter: a schedule changed on resume (a warning)
            # applies from here, and a cosine / linear decay ends at the new max_iter rather
            # than at the checkpoint's (a time budget's decision, when there is one, is kept)
            self.scheduler.lr_lambdas[0].reschedule(self.max_iter, self.cfg.solver.steps)
            refresh_lr(self.scheduler)

    # -- one step ------------------------------------------------------------------------------

    def forward_backward(self, model: nn.Module, passes: list[Batch]) -> dict[str, torch.Tensor]:
        """Forward under solver.amp, loss check and backward of each pass, gradients adding up.

        Each pass's loss is scaled by 1 / passes, so the gradient is the mean over the passes
        (with equal per-pass loss normalisation, the gradient of one pass over all the images).
        Under DDP only the last backward all-reduces (no_sync before it). Returns the loss
        terms (scalars), averaged over the passes."""
        k = len(passes)
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        sums: dict[str, torch.Tensor] = {}
        for i, (images, targets) in enumerate(passes):
            sync = not ddp or i == k - 1
            with contextlib.nullcontext() if sync else model.no_sync():
                with autocast(self.device, self.precision.name):
                    losses = model(images, targets)
                total = sum(losses.values())
                self.check_finite_loss(losses, total)
                self.backward(total / k)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0) + value.detach()
        return {name: value / k for name, value in sums.items()}

    def out_of_memory(self, error: BaseException, passes: list[Batch], images: int):
        """The batch, the image sizes and what to change (failures.out_of_memory_error)."""
        return out_of_memory_error(self.cfg, self.device, self.iteration + 1, error, passes)

    # -- the loop ------------------------------------------------------------------------------

    def build_loader(self) -> Iterable:
        """The training loader of this rank's shard, from self.iteration on."""
        return build_train_loader(
            self.cfg,
            rank=self.info.rank,
            world_size=self.info.world_size,
            start_iter=self.iteration,
            dataset=self.dataset,
        )

    def load_batch(self, batches: Iterator) -> tuple[list[Batch], int]:
        """The solver.accumulate batches of the next iteration, on the device."""
        passes = [
            batch_to_device(*self.next_from(batches), self.device)
            for _ in range(self.cfg.solver.accumulate)
        ]
        return passes, sum(len(images) for images, _ in passes)

    def build_hooks(self, writer: MetricsWriter) -> list[Hook]:
        """The periodic work after each step, in order: metrics, evaluation, checkpoint (a
        checkpoint then holds the evaluation of its own iteration in its best/patience state,
        and the RNG state after it, so that --resume repeats the run exactly)."""
        s, t = self.cfg.solver, self.cfg.test
        hooks: list[Hook] = []
        if s.max_seconds is not None:  # first: the others see the end it sets at the same step
            self.budget = TimeBudgetHook(self, s.max_seconds, self.budget_state)
            hooks.append(self.budget)
        hooks.append(LossMetricsHook(self, writer))
        if self.evaluate is not None:
            hooks.append(EvalHook(t.eval_period, lambda: self.run_evaluation(writer)))
        hooks.append(CheckpointHook(s.checkpoint_period))
        return hooks

    def stop_reason(self) -> str | None:
        """Early stopping: solver.patience evaluations without a new best."""
        return self.best.stop_message(self.iteration) if self.best.exhausted else None

    def run_evaluation(self, writer: MetricsWriter, *, final: bool = False) -> dict[str, Any]:
        """Evaluate the model, record the numeric metrics, put the model back in train mode,
        keep them as `last_eval` and let `best` see them; returns {"eval": metrics}. `final`:
        the evaluation of the run's result, which writes eval/ (periodic ones stay in memory);
        the trainer says which, since a time budget can end a run before or after the config's
        solver.max_iter."""
        metrics = self.evaluate(self.model, self.iteration, final=final)
        bbox = metrics.get("bbox", metrics)
        flat = {
            f"bbox/{k}": v
            for k, v in bbox.items()
            if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))
        }
        writer.write({"iteration": self.iteration, **flat})
        self.model.train()
        self.last_eval = (self.iteration, metrics)
        self.best.update(self, bbox, writer)
        return {"eval": metrics}

    def finish(self, writer: MetricsWriter, hooks: list[Hook]) -> dict[str, Any]:
        """The last metrics record, plus {"eval": metrics} of the final evaluation
        (test.eval_period >= 0)."""
        result = dict(next(h for h in hooks if isinstance(h, LossMetricsHook)).last_record)
        if self.evaluate is not None and self.cfg.test.eval_period >= 0:
            result.update(self._final_evaluation(writer))
        writer.close()
        return result

    def _final_evaluation(self, writer: MetricsWriter) -> dict[str, Any]:
        """The evaluation of model_final.pth. After an early stop the model is the one the last
        periodic evaluation saw: that evaluation is reused, not run twice. When the evaluation
        changes the best/patience state, model_final.pth is written again to hold it (so that
        resuming a finished run with a longer schedule continues that state too)."""
        if self.last_eval is not None and self.last_eval[0] == self.iteration:
            # an early stop: the periodic evaluation that ended training wrote no files; the
            # final one of the same model writes eval/ (metrics.json, detections.json and,
            # with test.analyze, analysis/). Its metrics are the periodic one's: the best and
            # patience state, which counts an iteration once, are left alone.
            metrics = self.evaluate(self.model, self.iteration, final=True)
            self.model.train()
            return {"eval": metrics}
        before = self.best.state_dict()
        result = self.run_evaluation(writer, final=True)
        if self.best.state_dict() != before:
            self.save("model_final.pth", periodic=False)
        return result


def train(
    cfg: Config,
    *,
    resume: bool = False,
    device: str = "cpu",
    dist_info: DistInfo | None = None,
    evaluate: EvalFn | None = None,
) -> dict[str, Any]:
    """Train a detector as `cfg` says; returns the last logged metrics (and evaluation)."""
    # what the library logs (rank 0) is kept in output_dir/log.txt, from the start; held in
    # memory until the trainer is built, since bad input must leave nothing written
    is_main = (dist_info or DistInfo()).is_main
    log_file = log_to_file(Path(cfg.output_dir) / "log.txt", hold=True) if is_main else None
    try:
        trainer = Trainer(cfg, device=device, dist_info=dist_info, evaluate=evaluate, resume=resume)
        if log_file is not None:
            log_file.commit()
        if resume:
            trainer.resume()
        return trainer.train()
    finally:
        if log_file is not None:
            remove_log_file(log_file)
