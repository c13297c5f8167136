"""Training a classifier: the detection engine's checkpoints, exact resume, precision, DDP and
metrics, around a cross-entropy loop with top-1 / top-5 validation.

Outputs in cfg.output_dir: config.yaml, metrics.jsonl (training loss and top-1 error every
solver.log_period iterations, validation error every test.eval_period), model_<iter>.pth with a
`last_checkpoint` pointer, model_final.pth and metrics.json. A checkpoint's "model" is the
classifier in the layout backbones.load_pretrained reads (backbone.*, head.*, fc.*), so
model_final.pth is usable as `model.backbone.weights` of a detection config as it is.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..config.loader import ConfigError, save_config, to_dict
from ..data.build import worker_error
from ..engine.checkpoint import gather_rng_states
from ..engine.hooks import MetricsWriter, peak_memory_mb
from ..engine.rng import seed_all, set_rng_state
from ..utils.checkpoint import Checkpointer, config_differences
from ..utils.distributed import DistInfo, reduce_mean
from ..utils.io import write_json
from ..utils.precision import autocast, resolve_precision
from .config import ClassifierConfig
from .data import build_datasets, train_loader, val_loader
from .evaluate import Normalizer, evaluate
from .model import build_model, classifier_state
from .solver import StepSchedule, build_optimizer, resolve_schedule

logger = logging.getLogger(__name__)


class _Meter:
    """Sums over one log period: loss, top-1 mistakes, images, data time."""

    def __init__(self) -> None:
        self.loss, self.mistakes = torch.zeros(()), torch.zeros(())
        self.steps, self.images, self.data_time = 0, 0, 0.0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, mistakes: torch.Tensor, images: int, data_time: float):
        self.loss = self.loss + loss.detach().float().cpu()
        self.mistakes = self.mistakes + mistakes.float().cpu()
        self.steps += 1
        self.images += images
        self.data_time += data_time


class ClassifierTrainer:
    """Trains cfg.model on cfg.data for the solver's schedule on this process's shard.

    Everything that can be wrong with the config, the dataset or model.weights fails in the
    constructor, before output_dir is created. Attributes: model (unwrapped), optimizer,
    scheduler, schedule, iteration (optimizer steps done), class_names, precision.
    """

    def __init__(
        self, cfg: ClassifierConfig, *, device: str = "cpu", dist_info: DistInfo | None = None
    ) -> None:
        self.cfg, self.device = cfg, device
        self.info = dist_info or DistInfo()
        self.out = Path(cfg.output_dir)
        s = cfg.solver
        if s.ims_per_batch % self.info.world_size:
            raise ConfigError(
                f"solver.ims_per_batch={s.ims_per_batch} must be a multiple of the number of "
                f"processes ({self.info.world_size})"
            )
        seed_all(cfg.seed)  # equal initial weights on every rank
        self.train_set, self.val_set = build_datasets(cfg)
        self.class_names = list(self.train_set.class_names)
        k = len(self.class_names)
        if cfg.model.num_classes not in (None, k):
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but the training set has {k} "
                f"classes; set model.num_classes to null (or {k})"
            )
        self.schedule = resolve_schedule(s, len(self.train_set))
        try:
            self.precision = resolve_precision(s.amp, device)
            self.test_precision = resolve_precision(cfg.test.precision, device).name
        except ValueError as e:
            raise ConfigError(f"solver.amp / test.precision: {e}") from None
        self.channels_last = s.memory_format == "channels_last" or (
            s.memory_format == "auto" and self.precision.name != "fp32"
        )
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
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.iteration, self.last_lr = 0, 0.0
        self.checkpointer = Checkpointer(self.out, s.keep_checkpoints)
        self._val_loader = None
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out)
        logger.info(
            "%s on %d classes, %d training images (%d iterations = %.1f epochs), precision %s",
            cfg.model.name,
            k,
            len(self.train_set),
            self.schedule.max_iter,
            self.schedule.max_iter / self.schedule.iters_per_epoch,
            self.precision,
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The checkpoint dict: the classifier (load_pretrained's layout), config, classes,
        optimizer, scheduler, scaler, iteration and every rank's RNG state (collective)."""
        return {
            "model": classifier_state(self.model),
            "config": to_dict(self.cfg),
            "class_names": self.class_names,
            "arch": self.cfg.model.name,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "iteration": self.iteration,
            "rng": gather_rng_states(self.info.world_size),
        }

    def save(self, name: str, *, periodic: bool = True) -> None:
        """Write checkpoint `name` (rank 0) once every weight is known to be finite."""
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise FloatingPointError(
                f"non-finite weights at iteration {self.iteration} ({', '.join(bad[:5])}); not "
                f"saving {name}. Lower solver.base_lr or use warmup (solver.warmup_iters)"
            )
        state = self.state()
        if self.info.is_main:
            logger.info("saved %s", self.checkpointer.save(name, state, periodic=periodic))

    def resume(self) -> None:
        """Continue from the `last_checkpoint` pointer, or start fresh (and say so)."""
        path = self.checkpointer.last()
        if path is None:
            logger.info("--resume: no checkpoint in %s; starting from iteration 0", self.out)
            return
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torn, or not tensors and plain data
            raise ValueError(
                f"cannot read checkpoint {path} ({type(e).__name__}: {e}); point "
                f"{self.out / 'last_checkpoint'} at an earlier model_*.pth or start afresh"
            ) from None
        new = to_dict(self.cfg)
        changed = config_differences(ckpt["config"], new, "model")
        changed += config_differences(ckpt["config"], new, "data")
        if changed:
            raise ConfigError(
                f"cannot resume from {path}: the model or data differ from the run's:\n  "
                + "\n  ".join(changed)
                + "\nuse a new output_dir for a new experiment"
            )
        schedule = config_differences(ckpt["config"], new, "solver")
        if schedule:
            warnings.warn(
                f"resuming {path} with a changed schedule:\n  " + "\n  ".join(schedule),
                stacklevel=2,
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        rng = ckpt["rng"]
        set_rng_state(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])
        logger.info("resumed from %s at iteration %d", path, self.iteration)

    # -- loop ----------------------------------------------------------------------------------

    def step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        """One SGD iteration; returns (loss, top-1 mistakes) of the batch as tensors."""
        x = self.normalize(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision.name):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at iteration {self.iteration + 1}; no update was applied. "
                "Lower solver.base_lr or use warmup (solver.warmup_iters)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.iteration += 1
        return loss.detach(), (logits.detach().argmax(dim=1) != labels).sum()

    def _wrap(self) -> nn.Module:
        if self.info.world_size == 1:
            return self.model
        cuda = self.device.startswith("cuda")
        return nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.info.local_rank] if cuda else None
        )

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

    def _record(self, meter: _Meter, writer: MetricsWriter, bar: tqdm) -> dict[str, Any]:
        means = reduce_mean({"loss": meter.loss / meter.steps, "train_err": meter.mistakes})
        elapsed = time.perf_counter() - meter.start
        images = meter.images * self.info.world_size
        record = {
            "iteration": self.iteration,
            "epoch": self.iteration / self.schedule.iters_per_epoch,
            "lr": self.last_lr,
            "loss": means["loss"],
            "train_err": 100.0 * means["train_err"] / meter.images,
            "time_per_iter": elapsed / meter.steps,
            "data_time": meter.data_time / meter.steps,
            "images_per_s": images / elapsed,
            "peak_memory_mb": peak_memory_mb(self.device),
            "precision": self.precision.name,
        }
        writer.write(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", err=f"{record['train_err']:.1f}%")
        if not bar.disable and not sys.stderr.isatty():
            logger.info(
                "iter %d/%d loss=%.4g train_err=%.2f%% lr=%.3g %.1f img/s",
                self.iteration,
                self.schedule.max_iter,
                record["loss"],
                record["train_err"],
                self.last_lr,
                record["images_per_s"],
            )
        return record

    def _periodic(self, meter: _Meter, writer: MetricsWriter, bar: tqdm) -> _Meter:
        """Metrics, validation and checkpoints due after this iteration; returns the meter to
        go on with (a fresh one after a record)."""
        s, it, end = self.cfg.solver, self.iteration, self.schedule.max_iter
        if it % s.log_period == 0 or it == end:
            self.last_record = self._record(meter, writer, bar)
            meter = _Meter()
        if 0 < self.cfg.test.eval_period and it % self.cfg.test.eval_period == 0 and it < end:
            self.validate(writer)
        if it % s.checkpoint_period == 0 and it < end:
            self.save(f"model_{it:07d}.pth")
        return meter

    def train(self) -> dict[str, Any]:
        """Train from `self.iteration` to the end of the schedule, save model_final.pth, validate
        (unless test.eval_period is -1) and write metrics.json; returns its content."""
        model = self._wrap()
        model.train()
        writer = MetricsWriter(self.out, self.info.is_main)
        writer.truncate(self.iteration)  # a resumed run redoes the records after its checkpoint
        loader = train_loader(
            self.cfg,
            self.train_set,
            rank=self.info.rank,
            world_size=self.info.world_size,
            start_iter=self.iteration,
        )
        batches, meter = iter(loader), _Meter()
        self.last_record: dict[str, Any] = {}
        bar = tqdm(
            total=self.schedule.max_iter,
            initial=self.iteration,
            desc="train",
            unit="it",
            disable=not self.info.is_main,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
            file=sys.stderr,
        )
        try:
            while self.iteration < self.schedule.max_iter:
                t0 = time.perf_counter()
                try:
                    images, labels = next(batches)
                except Exception as e:
                    raise worker_error(e) from None
                loss, mistakes = self.step(model, images, labels)
                meter.add(loss, mistakes, len(labels), time.perf_counter() - t0)
                bar.update(1)
                meter = self._periodic(meter, writer, bar)
        finally:
            bar.close()
        self.save("model_final.pth", periodic=False)
        return self._finish(writer)

    def _finish(self, writer: MetricsWriter) -> dict[str, Any]:
        result: dict[str, Any] = {
            "iteration": self.iteration,
            "epochs": self.iteration / self.schedule.iters_per_epoch,
            "arch": self.cfg.model.name,
            "classes": len(self.class_names),
            "train": self.last_record,
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
