"""The training loop: mixed precision, DDP, periodic checkpoints and evaluation (hooks), exact
resume, metrics and progress."""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import Config, ConfigError, save_config, to_dict
from ..data import build_dataset, build_train_loader, worker_error
from ..modeling import build_model, read_checkpoint
from ..utils.distributed import DistInfo
from ..utils.precision import Precision, autocast, resolve_precision
from .checkpoint import Checkpointer, config_differences, model_checkpoint
from .hooks import CheckpointHook, EvalHook, Hook, MetricsHook, MetricsWriter, run_evaluation
from .optim import build_optimizer, build_scheduler
from .rng import get_rng_state, seed_all, set_rng_state

EvalFn = Callable[[nn.Module, int], dict[str, Any]]


class TrainingError(RuntimeError):
    """Training cannot go on (out of memory); the message says at what and what to change."""


def use_channels_last(memory_format: str, precision: str) -> bool:
    """solver.memory_format: "channels_last", "contiguous", or "auto" (channels_last when
    training runs in bf16 / fp16, the resolved solver.amp)."""
    return memory_format == "channels_last" or (memory_format == "auto" and precision != "fp32")


def training_precision(amp: str, device: str) -> Precision:
    """solver.amp resolved for `device` (see detection.utils.precision); ConfigError if it
    cannot run there."""
    try:
        return resolve_precision(amp, device)
    except ValueError as e:
        raise ConfigError(f"solver.amp={amp}: {e}") from None


def _to_device(images, targets, device: str):
    nb = device.startswith("cuda")
    images = [img.to(device, non_blocking=nb) for img in images]
    targets = [
        {
            "boxes": t["boxes"].to(device, non_blocking=nb),
            "labels": t["labels"].to(device, non_blocking=nb),
        }
        for t in targets
    ]
    return images, targets


def _is_out_of_memory(error: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; the CPU allocator a RuntimeError saying so."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError | MemoryError) or (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    state = get_rng_state()
    if info.world_size == 1:
        return [state]
    states: list = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


class Trainer:
    """Runs `cfg.solver.max_iter` iterations of Faster R-CNN training on this process's shard.

    Args:
        cfg: the resolved config (model, data.train, solver, test.eval_period, output_dir).
        device: "cpu" or "cuda[:i]"; solver.amp "auto" is resolved for it.
        dist_info: this process's rank and world size (init_distributed); None = one process.
        evaluate: `evaluate(model, iteration) -> metrics` run every test.eval_period
            iterations and at the end (detection.evaluation.training_evaluator builds one).
        log: where progress lines go (default: stderr); silent on ranks other than 0.

    Attributes: model (the FasterRCNN, unwrapped), optimizer, scheduler, iteration (optimizer
    steps done), precision (what solver.amp resolved to).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        device: str = "cpu",
        dist_info: DistInfo | None = None,
        evaluate: EvalFn | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.info = dist_info or DistInfo()
        self.evaluate = evaluate
        self.out = Path(cfg.output_dir)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if not self.info.is_main:
            self.log = lambda msg: None
        seed_all(cfg.seed)  # equal initial weights on every rank
        self.dataset = build_dataset(cfg, "train")
        k = len(self.dataset.class_names)
        if k != cfg.model.roi_heads.num_classes:
            raise ConfigError(
                f"the training set has {k} classes but model.roi_heads.num_classes="
                f"{cfg.model.roi_heads.num_classes}; set model.roi_heads.num_classes={k}"
            )
        self.precision = training_precision(cfg.solver.amp, device)
        self.log(f"training precision: {self.precision}")
        self.model = build_model(cfg, class_names=self.dataset.class_names).to(device)
        if use_channels_last(cfg.solver.memory_format, self.precision.name):
            self.model.set_channels_last(True)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        # only now that the data, the model (and model.weights) and the schedule are known
        # good: bad input must fail before anything is written
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out)
        use_scaler = self.precision.name == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.checkpointer = Checkpointer(self.out, cfg.solver.keep_checkpoints)
        self.iteration = 0
        self.last_lr = 0.0  # the learning rate of the last step (before the scheduler's step)
        self.last_data_time = 0.0  # seconds the last step waited for its batch
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The checkpoint dict of the run so far: weights, config, classes, optimizer,
        scheduler, scaler, iteration and every rank's RNG state (collective with DDP)."""
        rng = _gather_rng(self.info)
        return model_checkpoint(
            self.model.state_dict(),
            self.cfg,
            self.dataset.class_names,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            iteration=self.iteration,
            rng=rng,
            data={"start_iter": self.iteration, "world_size": self.info.world_size},
        )

    def save(self, name: str, *, periodic: bool = True) -> None:
        """Write checkpoint `name` atomically (rank 0) after checking that every weight is
        finite; `periodic` ones count against solver.keep_checkpoints."""
        names, params = zip(*self.model.named_parameters(), strict=True)
        finite = torch.stack([torch.isfinite(p).all() for p in params]).tolist()  # one sync
        bad = [n for n, ok in zip(names, finite, strict=True) if not ok]
        if bad:
            # a checkpoint must never hold weights that cannot be resumed from
            raise FloatingPointError(
                f"non-finite weights at iteration {self.iteration} ({', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''}); not saving {name}. "
                + self._last_good()
                + "Lower solver.base_lr, raise solver.warmup_iters or set solver.clip_grad_norm."
            )
        state = self.state()  # collective: every rank takes part
        if self.info.is_main:
            path = self.checkpointer.save(name, state, periodic=periodic)
            self.log(f"saved {path}")

    def resume(self) -> None:
        """Continue from the `last_checkpoint` pointer, or start fresh (and say so)."""
        path = self.checkpointer.last()
        if path is None:
            self.log(f"--resume: no checkpoint in {self.out}; starting from iteration 0")
            return
        ckpt = read_checkpoint(path)
        new = to_dict(self.cfg)
        changed = config_differences(ckpt["config"], new, "model")
        if changed:
            raise ConfigError(
                f"cannot resume from {path}: the model differs from the one it was trained "
                "with:\n  " + "\n  ".join(changed) + "\nuse a new output_dir for a new model"
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
        self.log(f"resumed from {path} at iteration {self.iteration}")

    def _truncate_metrics(self) -> None:
        """Drop metrics.jsonl records written after the checkpoint (they will be redone)."""
        path = self.out / "metrics.jsonl"
        if not self.info.is_main or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= self.iteration:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line torn by the kill
        path.write_text("".join(k + "\n" for k in kept))

    # -- loop ----------------------------------------------------------------------------------

    def _check_finite(self, losses: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        if torch.isfinite(total):
            return
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        raise FloatingPointError(
            f"non-finite loss at iteration {self.iteration + 1}: {terms}; no update was applied. "
            + self._last_good()
            + "Lower solver.base_lr, raise solver.warmup_iters or set solver.clip_grad_norm."
        )

    def _last_good(self) -> str:
        last = self.checkpointer.last() if self.info.is_main else None
        return f"The last good checkpoint {last} is intact. " if last else ""

    def _out_of_memory(self, error: BaseException, images: list[torch.Tensor]) -> TrainingError:
        i = self.cfg.input
        sizes = ", ".join(f"{t.shape[-1]}x{t.shape[-2]}" for t in images)
        return TrainingError(
            f"out of memory on {self.device} at iteration {self.iteration + 1} with "
            f"{len(images)} images per process (solver.ims_per_batch="
            f"{self.cfg.solver.ims_per_batch}), input images {sizes} resized to short side "
            f"{list(i.min_size_train)} (at most {i.max_size_train}). Lower solver.ims_per_batch "
            "(and base_lr with it), input.min_size_train / input.max_size_train, or use "
            f"solver.amp=bf16. ({str(error).splitlines()[0][:200]})"
        )

    def step(self, model: nn.Module, images, targets, params) -> dict[str, torch.Tensor]:
        """One iteration: forward under solver.amp, loss check, backward, clipping, optimizer
        and scheduler steps. Returns the loss terms (scalars)."""
        clip = self.cfg.solver.clip_grad_norm
        with autocast(self.device, self.precision.name):
            losses = model(images, targets)
        total = sum(losses.values())
        self._check_finite(losses, total)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.optimizer.step()
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.iteration += 1
        return losses

    def build_hooks(self, writer: MetricsWriter) -> list[Hook]:
        """The periodic work after each step, in order: metrics, checkpoint, evaluation."""
        s, t = self.cfg.solver, self.cfg.test
        hooks: list[Hook] = [
            MetricsHook(self, writer),
            CheckpointHook(s.checkpoint_period, s.max_iter),
        ]
        if self.evaluate is not None:
            hooks.append(EvalHook(t.eval_period, s.max_iter, writer))
        return hooks

    def _wrap(self) -> nn.Module:
        """The module to run forward on: DDP around the model when there are several ranks."""
        if self.info.world_size == 1:
            return self.model
        cuda = self.device.startswith("cuda")
        return nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.info.local_rank] if cuda else None
        )

    def _next_batch(self, batches) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        t0 = time.perf_counter()
        try:
            images, targets = next(batches)
        except Exception as e:
            raise worker_error(e) from None
        images, targets = _to_device(images, targets, self.device)
        self.last_data_time = time.perf_counter() - t0
        return images, targets

    def train(self) -> dict[str, Any]:
        """Train from `self.iteration` to solver.max_iter; save model_final.pth and run the
        final evaluation (test.eval_period >= 0). Returns the last metrics record, plus
        {"eval": metrics} when evaluated."""
        model = self._wrap()
        model.train()
        self._truncate_metrics()  # a fresh run starts a fresh file; a resumed one drops redone
        loader = build_train_loader(
            self.cfg,
            rank=self.info.rank,
            world_size=self.info.world_size,
            start_iter=self.iteration,
            dataset=self.dataset,
        )
        batches = iter(loader)
        writer = MetricsWriter(self.out, self.info.is_main)
        hooks = self.build_hooks(writer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            while self.iteration < self.cfg.solver.max_iter:
                images, targets = self._next_batch(batches)
                try:
                    losses = self.step(model, images, targets, params)
                except (RuntimeError, MemoryError) as e:
                    if not _is_out_of_memory(e):
                        raise
                    raise self._out_of_memory(e, images) from e
                for hook in hooks:
                    hook.after_step(self, losses, len(images))
        finally:
            for hook in hooks:
                hook.after_train(self)
        self.save("model_final.pth", periodic=False)
        result = dict(hooks[0].last_record)
        if self.evaluate is not None and self.cfg.test.eval_period >= 0:
            result.update(run_evaluation(self, writer))
        writer.close()
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
    trainer = Trainer(cfg, device=device, dist_info=dist_info, evaluate=evaluate)
    if resume:
        trainer.resume()
    return trainer.train()
