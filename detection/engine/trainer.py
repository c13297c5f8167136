"""The training loop: AMP, DDP, periodic checkpoints, exact resume, metrics and progress."""

from __future__ import annotations

import json
import math
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ..config import Config, ConfigError, save_config, to_dict
from ..data import build_dataset, build_train_loader, worker_error
from ..modeling import build_model, read_checkpoint
from ..modeling.fast import autocast
from .checkpoint import Checkpointer, config_differences, model_checkpoint
from .distributed import DistInfo, reduce_mean
from .optim import build_optimizer, build_scheduler
from .rng import get_rng_state, seed_all, set_rng_state

EvalFn = Callable[[nn.Module, int], dict[str, Any]]


class TrainingError(RuntimeError):
    """Training cannot go on (out of memory); the message says at what and what to change."""


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
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "iteration" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["iteration"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def use_channels_last(memory_format: str, amp: str) -> bool:
    """solver.memory_format: "channels_last", "contiguous", or "auto" (channels_last under
    mixed precision)."""
    return memory_format == "channels_last" or (memory_format == "auto" and amp != "off")


def _autocast(amp: str, device: str):
    if amp == "fp16" and not device.startswith("cuda"):
        raise ConfigError("solver.amp=fp16 needs a CUDA device; use solver.amp=bf16 on CPU")
    return autocast(device, "fp32" if amp == "off" else amp)


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


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
    """Runs `cfg.solver.max_iter` iterations of Faster R-CNN training on this process's shard."""

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
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out)
        seed_all(cfg.seed)  # equal initial weights on every rank
        self.dataset = build_dataset(cfg, "train")
        k = len(self.dataset.class_names)
        if k != cfg.model.roi_heads.num_classes:
            raise ConfigError(
                f"the training set has {k} classes but model.roi_heads.num_classes="
                f"{cfg.model.roi_heads.num_classes}; set model.roi_heads.num_classes={k}"
            )
        self.model = build_model(cfg, class_names=self.dataset.class_names).to(device)
        if use_channels_last(cfg.solver.memory_format, cfg.solver.amp):
            self.model.to(memory_format=torch.channels_last)
            self.model.channels_last = True
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        use_scaler = cfg.solver.amp == "fp16" and device.startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.checkpointer = Checkpointer(self.out, cfg.solver.keep_checkpoints)
        self.iteration = 0
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
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

    def _step(self, model: nn.Module, images, targets, params) -> dict[str, torch.Tensor]:
        """Forward, loss check, backward and optimizer step of one iteration."""
        s = self.cfg.solver
        with _autocast(s.amp, self.device):
            losses = model(images, targets)
        total = sum(losses.values())
        self._check_finite(losses, total)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            if s.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, s.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if s.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, s.clip_grad_norm)
            self.optimizer.step()
        return losses

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        s = cfg.solver
        model: nn.Module = self.model
        if self.info.world_size > 1:
            model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.info.local_rank] if self.device.startswith("cuda") else None,
            )
        model.train()
        self._truncate_metrics()  # a fresh run starts a fresh file; a resumed one drops redone
        loader = build_train_loader(
            cfg,
            rank=self.info.rank,
            world_size=self.info.world_size,
            start_iter=self.iteration,
            dataset=self.dataset,
        )
        batches = iter(loader)
        writer = MetricsWriter(self.out, self.info.is_main)
        tty = sys.stderr.isatty()
        bar = tqdm(
            total=s.max_iter,
            initial=self.iteration,
            desc="train",
            unit="it",
            disable=not self.info.is_main,
            dynamic_ncols=True,
            mininterval=0.5 if tty else 30.0,
            file=sys.stderr,
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        sums: dict[str, torch.Tensor] = {}
        count, images_seen, data_time = 0, 0, 0.0
        period_start = time.perf_counter()
        last_record: dict[str, Any] = {}
        try:
            while self.iteration < s.max_iter:
                t0 = time.perf_counter()
                try:
                    images, targets = next(batches)
                except Exception as e:
                    raise worker_error(e) from None
                images, targets = _to_device(images, targets, self.device)
                data_time += time.perf_counter() - t0
                try:
                    losses = self._step(model, images, targets, params)
                except (RuntimeError, MemoryError) as e:
                    if not _is_out_of_memory(e):
                        raise
                    raise self._out_of_memory(e, images) from e
                lr = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
                self.iteration += 1
                bar.update(1)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0) + v.detach().float()
                count += 1
                images_seen += len(images) * self.info.world_size
                if self.iteration % s.log_period == 0 or self.iteration == s.max_iter:
                    means = reduce_mean({k: v / count for k, v in sums.items()})
                    elapsed = time.perf_counter() - period_start
                    last_record = {
                        "iteration": self.iteration,
                        "lr": lr,
                        **means,
                        "total_loss": sum(means.values()),
                        "time_per_iter": elapsed / count,
                        "data_time": data_time / count,
                        "images_per_s": images_seen / elapsed,
                        "peak_memory_mb": _peak_memory_mb(self.device),
                    }
                    writer.write(last_record)
                    bar.set_postfix(
                        loss=f"{last_record['total_loss']:.3f}",
                        lr=f"{lr:.2g}",
                        img_s=f"{last_record['images_per_s']:.1f}",
                        mem=f"{last_record['peak_memory_mb']:.0f}M",
                    )
                    if not tty and self.info.is_main:
                        self.log(
                            f"iter {self.iteration}/{s.max_iter} "
                            + " ".join(f"{k}={v:.4g}" for k, v in means.items())
                            + f" lr={lr:.3g} {last_record['images_per_s']:.1f} img/s"
                        )
                    sums, count, images_seen, data_time = {}, 0, 0, 0.0
                    period_start = time.perf_counter()
                if self.iteration % s.checkpoint_period == 0 and self.iteration < s.max_iter:
                    self.save(f"model_{self.iteration:07d}.pth")
                if (
                    self.evaluate is not None
                    and cfg.test.eval_period > 0
                    and self.iteration % cfg.test.eval_period == 0
                    and self.iteration < s.max_iter
                ):
                    self._run_eval(writer)
                    model.train()
        finally:
            bar.close()
        self.save("model_final.pth", periodic=False)
        result = dict(last_record)
        if self.evaluate is not None and cfg.test.eval_period >= 0:
            result.update(self._run_eval(writer))
        writer.close()
        return result

    def _run_eval(self, writer: MetricsWriter) -> dict[str, Any]:
        metrics = self.evaluate(self.model, self.iteration)
        flat = {
            f"bbox/{k}": v
            for k, v in (metrics.get("bbox", metrics)).items()
            if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))
        }
        writer.write({"iteration": self.iteration, **flat})
        self.model.train()
        return {"eval": metrics}


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
