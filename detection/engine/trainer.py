"""The training loop: mixed precision, DDP, periodic checkpoints and evaluation (hooks), exact
resume, metrics and progress."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, ConfigError, save_config
from ..data import build_dataset, build_train_loader, worker_error
from ..data.build import batch_to_device
from ..modeling import build_model
from ..utils.checkpoint import Checkpointer, model_checkpoint, read_checkpoint
from ..utils.distributed import DistInfo, RanksDivergedError, check_ranks_agree
from ..utils.logging import console_configured, log_to_file, remove_log_file
from ..utils.precision import autocast
from .checkpoint import check_resumable, gather_rng_states
from .failures import (
    TrainingError,
    check_training_config,
    is_out_of_memory,
    out_of_memory_error,
    training_precision,
    use_channels_last,
)
from .hooks import (
    BestCheckpoint,
    CheckpointHook,
    EvalHook,
    Hook,
    MetricsHook,
    MetricsWriter,
    run_evaluation,
)
from .optim import build_optimizer, build_scheduler
from .rng import seed_all, set_rng_state

EvalFn = Callable[..., dict[str, Any]]  # evaluate(model, iteration, final=None) -> metrics
Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]
logger = logging.getLogger(__name__)


def _log(message: str) -> None:
    """Progress lines go to the library's logging (the console of a tool, log.txt), and
    straight to stderr where no tool configured the console (the library used from a script)."""
    logger.info(message)
    if not console_configured():
        print(message, file=sys.stderr, flush=True)


class Trainer:
    """Runs `cfg.solver.max_iter` iterations of Faster R-CNN training on this process's shard.

    Each iteration is one optimizer step over solver.ims_per_batch images (all processes),
    loaded and run as solver.accumulate forward/backward passes; the schedule (max_iter, steps,
    warmup, checkpoint, evaluation and log periods) counts optimizer steps. With
    test.eval_period > 0, `best` keeps model_best.pth by test.best_metric and stops training
    after solver.patience evaluations without improvement (see hooks.BestCheckpoint).

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
        self.cfg = cfg
        self.device = device
        self.info = dist_info or DistInfo()
        self.evaluate = evaluate
        self.out = Path(cfg.output_dir)
        self.log = log or _log
        if not self.info.is_main:
            self.log = lambda msg: None
        check_training_config(cfg, self.info.world_size)
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
        # a run that will resume takes every weight from its checkpoint: model.weights and
        # model.backbone.weights are not read (the files it started from may be gone)
        resuming = resume and Checkpointer(self.out).last() is not None
        names = self.dataset.class_names
        self.model = build_model(cfg, load_weights=not resuming, class_names=names).to(device)
        if use_channels_last(cfg.solver.memory_format, self.precision.name):
            self.model.set_channels_last(True)
        fp16 = self.precision.name == "fp16"  # a GradScaler: not the fused SGD (see optim)
        self.optimizer = build_optimizer(self.model, cfg, grad_scaling=fp16)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        # only now that the data, the model (and model.weights) and the schedule are known
        # good: bad input must fail before anything is written
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out)
        use_scaler = self.precision.name == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.checkpointer = Checkpointer(self.out, cfg.solver.keep_checkpoints)
        t = cfg.test
        self.best = BestCheckpoint(t.best_metric, cfg.solver.patience, t.eval_period > 0)
        self.last_eval: tuple[int, dict[str, Any]] | None = None
        self.stopped_early = False
        self.iteration = 0
        self.last_lr = 0.0  # the learning rate of the last step (before the scheduler's step)
        self.last_data_time = 0.0  # seconds the last step waited for its batch
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The checkpoint dict of the run so far: weights, config, classes, optimizer,
        scheduler, scaler, iteration, every rank's RNG state (collective with DDP) and the
        best-checkpoint / patience state."""
        rng = gather_rng_states(self.info.world_size)
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
            best=self.best.state_dict(),
        )

    def save(self, name: str, *, periodic: bool = True, pointer: bool = True) -> None:
        """Write checkpoint `name` atomically (rank 0) after checking that every weight is
        finite; `periodic` ones count against solver.keep_checkpoints; `pointer` = False leaves
        last_checkpoint naming the previous one (model_best.pth). With DDP the ranks first
        check that they hold the same weights (before any rank can raise alone)."""
        try:
            check_ranks_agree(self.model.named_parameters(), f"at iteration {self.iteration}")
        except RanksDivergedError as e:
            raise TrainingError(f"{e} Not saving {name}.") from None
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
            path = self.checkpointer.save(name, state, periodic=periodic, pointer=pointer)
            self.log(f"saved {path}")

    def resume(self) -> None:
        """Continue from the `last_checkpoint` pointer, or start fresh (and say so)."""
        path = self.checkpointer.last()
        if path is None:
            self.log(f"--resume: no checkpoint in {self.out}; starting from iteration 0")
            return
        ckpt = read_checkpoint(path)
        check_resumable(ckpt["config"], self.cfg, path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        if "best" in ckpt:  # absent from checkpoints older than model_best.pth
            problem = self.best.load_state_dict(ckpt["best"])
            if problem:
                warnings.warn(f"resuming {path}: {problem}", stacklevel=2)
        rng = ckpt["rng"]
        set_rng_state(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])
        self.log(f"resumed from {path} at iteration {self.iteration}")

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

    def step(self, model: nn.Module, passes: list[Batch], params) -> dict[str, torch.Tensor]:
        """One iteration: the forward/backward passes of its batches (solver.accumulate), then
        one update. Returns the loss terms (scalars), averaged over the passes."""
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.forward_backward(model, passes)
        self.update(params)
        return losses

    def forward_backward(self, model: nn.Module, passes: list[Batch]) -> dict[str, torch.Tensor]:
        """Forward under solver.amp, loss check and backward of each pass, gradients adding up.

        Each pass's loss is scaled by 1 / passes, so the gradient is the mean over the passes
        (with equal per-pass loss normalisation, the gradient of one pass over all the images).
        Under DDP only the last backward all-reduces (no_sync before it)."""
        k = len(passes)
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        sums: dict[str, torch.Tensor] = {}
        for i, (images, targets) in enumerate(passes):
            sync = not ddp or i == k - 1
            with contextlib.nullcontext() if sync else model.no_sync():
                with autocast(self.device, self.precision.name):
                    losses = model(images, targets)
                total = sum(losses.values())
                self._check_finite(losses, total)
                total = total / k
                (total if self.scaler is None else self.scaler.scale(total)).backward()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0) + value.detach()
        return {name: value / k for name, value in sums.items()}

    def update(self, params: list[torch.Tensor]) -> None:
        """Clipping (solver.clip_grad_norm), the optimizer step (through the fp16 GradScaler)
        and the scheduler step: one iteration done."""
        clip = self.cfg.solver.clip_grad_norm
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.optimizer.step()
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.iteration += 1

    def build_hooks(self, writer: MetricsWriter) -> list[Hook]:
        """The periodic work after each step, in order: metrics, evaluation, checkpoint (a
        checkpoint then holds the evaluation of its own iteration in its best/patience state,
        and the RNG state after it, so that --resume repeats the run exactly)."""
        s, t = self.cfg.solver, self.cfg.test
        hooks: list[Hook] = [MetricsHook(self, writer)]
        if self.evaluate is not None:
            hooks.append(EvalHook(t.eval_period, s.max_iter, writer))
        hooks.append(CheckpointHook(s.checkpoint_period, s.max_iter))
        return hooks

    def _wrap(self) -> nn.Module:
        """The module to run forward on: DDP around the model when there are several ranks."""
        if self.info.world_size == 1:
            return self.model
        cuda = self.device.startswith("cuda")
        return nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.info.local_rank] if cuda else None
        )

    def _next_passes(self, batches) -> list[Batch]:
        """The solver.accumulate batches of the next iteration, on the device."""
        t0 = time.perf_counter()
        passes = []
        for _ in range(self.cfg.solver.accumulate):
            try:
                images, targets = next(batches)
            except Exception as e:
                raise worker_error(e) from None
            passes.append(batch_to_device(images, targets, self.device))
        self.last_data_time = time.perf_counter() - t0
        return passes

    def train(self) -> dict[str, Any]:
        """Train from `self.iteration` to solver.max_iter, or until solver.patience stops it;
        save model_final.pth and run the final evaluation (test.eval_period >= 0). Returns the
        last metrics record, plus {"eval": metrics} when evaluated."""
        model = self._wrap()
        model.train()
        writer = MetricsWriter(self.out, self.info.is_main)
        writer.truncate(self.iteration)  # a resumed run redoes what came after its checkpoint
        loader = build_train_loader(
            self.cfg,
            rank=self.info.rank,
            world_size=self.info.world_size,
            start_iter=self.iteration,
            dataset=self.dataset,
        )
        batches = iter(loader)
        hooks = self.build_hooks(writer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            while self.iteration < self.cfg.solver.max_iter and not self.best.exhausted:
                passes = self._next_passes(batches)
                try:
                    losses = self.step(model, passes, params)
                except (RuntimeError, MemoryError) as e:
                    if not is_out_of_memory(e):
                        raise
                    raise out_of_memory_error(self, e, passes) from e
                for hook in hooks:
                    hook.after_step(self, losses, sum(len(images) for images, _ in passes))
            self.stopped_early = self.best.exhausted
        finally:
            for hook in hooks:
                hook.after_train(self)
        if self.stopped_early:
            self.log(self.best.stop_message(self.iteration))
        self.save("model_final.pth", periodic=False)
        result = dict(hooks[0].last_record)
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
        result = run_evaluation(self, writer)
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
