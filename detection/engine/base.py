"""The training core that the detection Trainer and the classifier trainer share: the state
and its checkpoints (checked for rank agreement and finiteness before any is written), exact
resume, DDP wrapping, the mixed-precision step through the fp16 GradScaler, and the loop that
runs the hooks (metrics, evaluation, checkpoints) after each optimizer step."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, save_config, to_dict
from ..data import worker_error
from ..utils.checkpoint import (
    POINTER,
    Checkpointer,
    config_differences,
    model_checkpoint,
    read_checkpoint,
)
from ..utils.distributed import DistInfo, RanksDivergedError, check_ranks_agree
from ..utils.metrics import MetricsWriter
from ..utils.precision import Precision
from .failures import TrainingError, is_out_of_memory
from .rng import gather_rng_states, seed_all, set_rng_state


class Hook:
    """Periodic work of the training loop; override what you need."""

    def after_step(self, trainer: TrainerBase, outputs: dict[str, torch.Tensor], images: int):
        """After optimizer step `trainer.iteration` (already counted) on `images` images of
        this process; `outputs` are the step's scalars (forward_backward's)."""

    def after_train(self, trainer: TrainerBase) -> None:
        """After the last iteration, before the final checkpoint (also after an error)."""


def check_resumable(
    old_config: dict, cfg: Any, path: str | os.PathLike, sections: Iterable[str] = ("model",)
) -> None:
    """Refuse to resume checkpoint `path` (trained with `old_config`) into another model: a
    ConfigError naming the differing keys of `sections`. A changed schedule (solver) is only
    a warning."""
    new, sections = to_dict(cfg), list(sections)
    changed = [d for s in sections for d in config_differences(old_config, new, s)]
    if changed:
        what = " or ".join(sections) + (" differs" if len(sections) == 1 else " differ")
        raise ConfigError(
            f"cannot resume from {path}: the {what} from the one it was trained with:\n  "
            + "\n  ".join(changed)
            + "\nuse a new output_dir for a new experiment"
        )
    schedule = config_differences(old_config, new, "solver")
    if schedule:
        warnings.warn(
            f"resuming {path} with a changed schedule:\n  " + "\n  ".join(schedule),
            stacklevel=3,
        )


class TrainerBase:
    """What every trainer does the same way, around what it does its own way.

    A subclass's constructor calls `super().__init__`, builds its data, `model` (unwrapped),
    `optimizer`, `scheduler`, and sets `precision`, `class_names` and `max_iter`; then, once
    all of them are known good, `open_output_dir()` (bad input must leave nothing written).
    It implements `build_loader()`, `load_batch()`, `forward_backward()`, `build_hooks()` and
    `finish()`, and may extend `model_state()`, `extra_state()`, `load_state()`,
    `stop_reason()` and `out_of_memory()`.

    Attributes: iteration (optimizer steps done), last_lr (the learning rate of the last step),
    last_data_time (seconds the last step waited for its batch), stopped_early, checkpointer.
    """

    resume_sections: tuple[str, ...] = ("model",)  # config sections a resume must not change
    remedy = "Lower solver.base_lr or raise solver.warmup_iters."  # for a diverged run

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    class_names: list[str]
    max_iter: int

    def __init__(
        self,
        cfg: Any,
        *,
        device: str,
        dist_info: DistInfo | None,
        log: Callable[[str], None],
    ) -> None:
        self.cfg, self.device = cfg, device
        self.info = dist_info or DistInfo()
        self.out = Path(cfg.output_dir)
        self.log = log if self.info.is_main else lambda msg: None
        self.checkpointer = Checkpointer(self.out, cfg.solver.keep_checkpoints)
        self.scaler: torch.amp.GradScaler | None = None
        self.clip_grad_norm = 0.0  # solver.clip_grad_norm where the config has one
        self.iteration, self.last_lr, self.last_data_time = 0, 0.0, 0.0
        self.stopped_early = False
        seed_all(cfg.seed)  # equal initial weights on every rank

    def open_output_dir(self) -> None:
        """Create output_dir with config.yaml (rank 0) and the fp16 GradScaler: the last step
        of a subclass's constructor."""
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.name == "fp16" else None

    # -- state ---------------------------------------------------------------------------------

    def model_state(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint's "model" holds."""
        return self.model.state_dict()

    def extra_state(self) -> dict[str, Any]:
        """What a subclass adds to its checkpoints."""
        return {}

    def state(self) -> dict[str, Any]:
        """The checkpoint dict of the run so far: weights, config, classes, optimizer,
        scheduler, scaler, iteration, every rank's RNG state (collective with DDP) and the
        subclass's extra_state()."""
        rng = gather_rng_states(self.info.world_size)
        return model_checkpoint(
            self.model_state(),
            self.cfg,
            self.class_names,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            iteration=self.iteration,
            rng=rng,
            **self.extra_state(),
        )

    def save(self, name: str, *, periodic: bool = True, pointer: bool = True) -> None:
        """Write checkpoint `name` atomically (rank 0) after checking that every weight is
        finite; `periodic` ones count against solver.keep_checkpoints; `pointer` = False leaves
        last_checkpoint naming the previous one (model_best.pth). With DDP the ranks first
        check that they hold the same weights (before any rank can raise alone)."""
        self.check_weights(name)
        state = self.state()  # collective: every rank takes part
        if self.info.is_main:
            path = self.checkpointer.save(name, state, periodic=periodic, pointer=pointer)
            self.log(f"saved {path}")

    def check_weights(self, name: str) -> None:
        """A checkpoint must never hold weights that cannot be resumed from: TrainingError when
        the ranks hold different weights (collective), FloatingPointError when a weight is not
        finite."""
        try:
            check_ranks_agree(self.model.named_parameters(), f"at iteration {self.iteration}")
        except RanksDivergedError as e:
            raise TrainingError(f"{e} Not saving {name}.") from None
        names, params = zip(*self.model.named_parameters(), strict=True)
        finite = torch.stack([torch.isfinite(p).all() for p in params]).tolist()  # one sync
        bad = [n for n, ok in zip(names, finite, strict=True) if not ok]
        if bad:
            raise FloatingPointError(
                f"non-finite weights at iteration {self.iteration} ({', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''}); not saving {name}. "
                + self._last_good()
                + self.remedy
            )

    def resume(self) -> None:
        """Continue from the `last_checkpoint` pointer, or start fresh (and say so)."""
        path = self.checkpointer.last()
        if path is None:
            self.log(f"--resume: no checkpoint in {self.out}; starting from iteration 0")
            return
        try:
            ckpt = read_checkpoint(path)
        except ValueError as e:
            raise ValueError(
                f"{e} To resume, point {self.out / POINTER} at an earlier model_*.pth, or start "
                "afresh without --resume"
            ) from None
        check_resumable(ckpt["config"], self.cfg, path, self.resume_sections)
        self.load_state(ckpt, path)
        self.log(f"resumed from {path} at iteration {self.iteration}")

    def load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        """Take the run's state from checkpoint dict `ckpt` (read from `path`)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        rng = ckpt["rng"]
        set_rng_state(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])

    # -- one step ------------------------------------------------------------------------------

    def wrap(self) -> nn.Module:
        """The module to run forward on: DDP around the model when there are several ranks."""
        if self.info.world_size == 1:
            return self.model
        cuda = self.device.startswith("cuda")
        return nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.info.local_rank] if cuda else None
        )

    def step(self, model: nn.Module, batch: Any, params: list[torch.Tensor]):
        """One iteration: forward and backward of `batch` (forward_backward), then one update.
        Returns forward_backward's scalars."""
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self.forward_backward(model, batch)
        self.update(params)
        return outputs

    def forward_backward(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward under self.precision, check_finite_loss, backward (the subclass's)."""
        raise NotImplementedError

    def check_finite_loss(self, losses: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        """FloatingPointError, before any backward pass, when the loss is not finite."""
        if torch.isfinite(total):
            return
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        raise FloatingPointError(
            f"non-finite loss at iteration {self.iteration + 1}: {terms}; no update was applied. "
            + self._last_good()
            + self.remedy
        )

    def _last_good(self) -> str:
        last = self.checkpointer.last() if self.info.is_main else None
        return f"The last good checkpoint {last} is intact. " if last else ""

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), through the GradScaler under fp16."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def update(self, params: list[torch.Tensor]) -> None:
        """Clipping (clip_grad_norm), the optimizer step (through the fp16 GradScaler) and the
        scheduler step: one iteration done."""
        clip = self.clip_grad_norm
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

    def out_of_memory(self, error: BaseException, batch: Any, images: int) -> TrainingError:
        """The error that says what to change when a step runs out of memory."""
        return TrainingError(
            f"out of memory on {self.device} at iteration {self.iteration + 1} with {images} "
            f"images per process (solver.ims_per_batch={self.cfg.solver.ims_per_batch}). Lower "
            "solver.ims_per_batch (and solver.base_lr with it) or use solver.amp=bf16. "
            f"({str(error).splitlines()[0][:200]})"
        )

    # -- the loop ------------------------------------------------------------------------------

    def build_loader(self) -> Iterable:
        """This rank's training batches from self.iteration on."""
        raise NotImplementedError

    def load_batch(self, batches: Iterator) -> tuple[Any, int]:
        """(the next iteration's batch, on the device; its number of images)."""
        raise NotImplementedError

    @staticmethod
    def next_from(batches: Iterator) -> Any:
        """The next item of the loader; a data worker's error as the message it deserves."""
        try:
            return next(batches)
        except Exception as e:
            raise worker_error(e) from None

    def build_hooks(self, writer: MetricsWriter) -> list[Hook]:
        """The periodic work after each step, in order."""
        raise NotImplementedError

    def stop_reason(self) -> str | None:
        """Why training stops before max_iter (early stopping), or None to go on."""
        return None

    def finish(self, writer: MetricsWriter, hooks: list[Hook]) -> dict[str, Any]:
        """The work after model_final.pth (final evaluation); returns train()'s result."""
        raise NotImplementedError

    def train(self) -> dict[str, Any]:
        """Train from `self.iteration` to max_iter, or until stop_reason(); save
        model_final.pth; returns finish()'s result."""
        model = self.wrap()
        model.train()
        writer = MetricsWriter(self.out, self.info.is_main, self.cfg.dashboards, to_dict(self.cfg))
        writer.truncate(self.iteration)  # a resumed run redoes what came after its checkpoint
        batches = iter(self.build_loader())
        hooks = self.build_hooks(writer)
        self.run(model, batches, hooks)
        self.save("model_final.pth", periodic=False)
        return self.finish(writer, hooks)

    def run(self, model: nn.Module, batches: Iterator, hooks: list[Hook]) -> None:
        """The iterations: load, step, hooks; the hooks' after_train however it ends."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            while self.iteration < self.max_iter and self.stop_reason() is None:
                t0 = time.perf_counter()
                batch, images = self.load_batch(batches)
                self.last_data_time = time.perf_counter() - t0
                try:
                    outputs = self.step(model, batch, params)
                except (RuntimeError, MemoryError) as e:
                    if not is_out_of_memory(e):
                        raise
                    raise self.out_of_memory(e, batch, images) from e
                for hook in hooks:
                    hook.after_step(self, outputs, images)
            reason = self.stop_reason()
            self.stopped_early = reason is not None
        finally:
            for hook in hooks:
                hook.after_train(self)
        if reason is not None:
            self.log(reason)
