"""Training a classifier on the engine's training core (checkpoints checked for rank agreement
and finiteness, exact resume, precision, DDP, metrics and hooks), around a cross-entropy loop
with top-1 / top-5 validation.

Outputs in cfg.output_dir: config.yaml, metrics.jsonl (training loss and top-1 error every
solver.log_period iterations, validation error every test.eval_period), model_<iter>.pth with a
`last_checkpoint` pointer, model_final.pth and metrics.json. A checkpoint's "model" is the
classifier in the layout backbones.load_pretrained reads (backbone.*, head.*, fc.*), so
model_final.pth is usable as `model.backbone.weights` of a detection config as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config.loader import ConfigError
from ..engine.base import Hook, TrainerBase
from ..engine.failures import training_precision, use_channels_last
from ..engine.hooks import CheckpointHook, EvalHook, MetricsHook
from ..utils.distributed import DistInfo, reduce_mean
from ..utils.io import write_json
from ..utils.metrics import MetricsWriter
from ..utils.precision import autocast, resolve_precision
from .config import ClassifierConfig
from .data import build_datasets, train_loader, val_loader
from .evaluate import Normalizer, evaluate
from .model import build_model, classifier_state
from .solver import StepSchedule, build_optimizer, resolve_schedule

logger = logging.getLogger(__name__)


class ClassifierMetricsHook(MetricsHook):
    """The classifier's record: epoch, learning rate, mean loss and training top-1 error."""

    def summarize(self, trainer: TrainerBase) -> dict[str, Any]:
        """iteration, epoch, lr, the mean loss and the top-1 error (%) over the period and
        every rank's images."""
        means = reduce_mean(
            {"loss": self.sums["loss"] / self.count, "train_err": self.sums["mistakes"]}
        )
        return {
            "iteration": trainer.iteration,
            "epoch": trainer.iteration / trainer.schedule.iters_per_epoch,
            "lr": trainer.last_lr,
            "loss": means["loss"],
            "train_err": 100.0 * means["train_err"] / self.images,
        }

    def progress(self, trainer: TrainerBase, record: dict[str, Any]) -> tuple[dict, str]:
        """Loss and error on the bar; also lr and images/s in the log line."""
        postfix = dict(loss=f"{record['loss']:.3f}", err=f"{record['train_err']:.1f}%")
        line = (
            f"iter {trainer.iteration}/{trainer.max_iter} loss={record['loss']:.4g} "
            f"train_err={record['train_err']:.2f}% lr={record['lr']:.3g} "
            f"{record['images_per_s']:.1f} img/s"
        )
        return postfix, line


class ClassifierTrainer(TrainerBase):
    """Trains cfg.model on cfg.data for the solver's schedule on this process's shard.

    Everything that can be wrong with the config, the dataset or model.weights fails in the
    constructor, before output_dir is created. Checkpoints, resume, DDP and the step are the
    training core's (detection.engine.base.TrainerBase); a resume refuses another model or
    dataset. Attributes: model (unwrapped), optimizer, scheduler, schedule, iteration
    (optimizer steps done), class_names, precision.
    """

    resume_sections = ("model", "data")

    def __init__(
        self, cfg: ClassifierConfig, *, device: str = "cpu", dist_info: DistInfo | None = None
    ) -> None:
        info = dist_info or DistInfo()
        s = cfg.solver
        if s.ims_per_batch % info.world_size:
            raise ConfigError(
                f"solver.ims_per_batch={s.ims_per_batch} must be a multiple of the number of "
                f"processes ({info.world_size})"
            )
        super().__init__(cfg, device=device, dist_info=info, log=logger.info)
        self.train_set, self.val_set = build_datasets(cfg)
        self.class_names = list(self.train_set.class_names)
        k = len(self.class_names)
        if cfg.model.num_classes not in (None, k):
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but the training set has {k} "
                f"classes; set model.num_classes to null (or {k})"
            )
        self.schedule = resolve_schedule(s, len(self.train_set))
        self.max_iter = self.schedule.max_iter
        self.precision = training_precision(s.amp, device)
        try:
            self.test_precision = resolve_precision(cfg.test.precision, device).name
        except ValueError as e:
            raise ConfigError(f"test.precision={cfg.test.precision}: {e}") from None
        self.channels_last = use_channels_last(s.memory_format, self.precision.name)
        self.model = build_model(cfg, k).to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.normalize = Normalizer(cfg.input.pixel_mean, cfg.input.pixel_std).to(device)
        fp16 = self.precision.name == "fp16"
        self.optimizer = build_optimizer(self.model, s, device, grad_scaling=fp16)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            StepSchedule(
                self.schedule.steps, s.gamma, s.warmup_iters, s.warmup_factor, s.warmup_method
            ),
        )
        self._val_loader = None
        self.open_output_dir()
        logger.info(
            "%s on %d classes, %d training images (%d iterations = %.1f epochs), precision %s",
            cfg.model.name,
            k,
            len(self.train_set),
            self.schedule.max_iter,
            self.schedule.max_iter / self.schedule.iters_per_epoch,
            self.precision,
        )

    # -- state: load_pretrained's layout, and the architecture's name --------------------------

    def model_state(self) -> dict[str, torch.Tensor]:
        """The classifier in the layout backbones.load_pretrained reads."""
        return classifier_state(self.model)

    def extra_state(self) -> dict[str, Any]:
        """The architecture's name (model.name)."""
        return {"arch": self.cfg.model.name}

    # -- the loop ------------------------------------------------------------------------------

    def build_loader(self) -> Iterable:
        """The training loader of this rank's shard, from self.iteration on."""
        return train_loader(
            self.cfg,
            self.train_set,
            rank=self.info.rank,
            world_size=self.info.world_size,
            start_iter=self.iteration,
        )

    def load_batch(self, batches: Iterator) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        """(images, labels) of the next iteration, as the loader gives them."""
        images, labels = self.next_from(batches)
        return (images, labels), len(labels)

    def forward_backward(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        """Cross-entropy forward under solver.amp, loss check, backward. Returns the loss and
        the batch's top-1 mistakes."""
        images, labels = batch
        x = self.normalize(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision.name):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels)
        self.check_finite_loss({"loss": loss}, loss)
        self.backward(loss)
        mistakes = (logits.detach().argmax(dim=1) != labels).sum()
        return {"loss": loss.detach(), "mistakes": mistakes}

    def build_hooks(self, writer: MetricsWriter) -> list[Hook]:
        """Metrics, validation (test.eval_period > 0), checkpoint, in that order."""
        s, t = self.cfg.solver, self.cfg.test
        return [
            ClassifierMetricsHook(self, writer),
            EvalHook(t.eval_period, lambda: self.validate(writer)),
            CheckpointHook(s.checkpoint_period),
        ]

    def validate(self, writer: MetricsWriter | None = None) -> dict[str, float]:
        """Top-1 (and top-5) error on the validation set; recorded in metrics.jsonl."""
        if self._val_loader is None:
            self._val_loader = val_loader(
                self.cfg, self.val_set, rank=self.info.rank, world_size=self.info.world_size
            )
        result = evaluate(
            self.model,
            self._val_loader,
            self.normalize,
            device=self.device,
            precision=self.test_precision,
            channels_last=self.channels_last,
        )
        if writer is not None:
            writer.write(
                {"iteration": self.iteration, **{f"val/{k}": v for k, v in result.items()}}
            )
        logger.info(
            "iteration %d: validation top-1 error %.2f%%%s",
            self.iteration,
            result["top1_err"],
            f", top-5 {result['top5_err']:.2f}%" if "top5_err" in result else "",
        )
        return result

    def finish(self, writer: MetricsWriter, hooks: list[Hook]) -> dict[str, Any]:
        """Validate (unless test.eval_period is -1) and write metrics.json; returns its
        content: the last training record and the final validation error."""
        result: dict[str, Any] = {
            "iteration": self.iteration,
            "epochs": self.iteration / self.schedule.iters_per_epoch,
            "arch": self.cfg.model.name,
            "classes": len(self.class_names),
            "train": hooks[0].last_record,
        }
        if self.cfg.test.eval_period >= 0:
            result["val"] = self.validate(writer)
        writer.close()
        if self.info.is_main:
            write_json(self.out / "metrics.json", result)
        return result


def train_classifier(
    cfg: ClassifierConfig,
    *,
    resume: bool = False,
    device: str = "cpu",
    dist_info: DistInfo | None = None,
) -> dict[str, Any]:
    """Train the classifier `cfg` describes; returns metrics.json's content (last training
    record, final validation error)."""
    trainer = ClassifierTrainer(cfg, device=device, dist_info=dist_info)
    if resume:
        trainer.resume()
    return trainer.train()
