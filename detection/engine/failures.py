"""What the trainer decides before training and says when training cannot go on: the training
precision and memory format, the batch split, and out-of-memory errors for people."""

from __future__ import annotations

import torch

from ..config import Config, ConfigError
from ..utils.precision import Precision, resolve_precision


class TrainingError(RuntimeError):
    """Training cannot go on (out of memory, ranks that diverged); the message says at what and
    what to change."""


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


def check_training_config(cfg: Config, world_size: int) -> None:
    """What the config loader cannot check alone (it depends on the process count): the batch
    must split into solver.accumulate passes on every process. ConfigError before any work."""
    from ..data import per_rank_batch_size  # detection.data imports albumentations: lazily

    per_rank_batch_size(cfg.solver.ims_per_batch, world_size, cfg.solver.accumulate)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; the CPU allocator a RuntimeError saying so."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError | MemoryError) or (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def out_of_memory_error(
    cfg: Config, device: str, iteration: int, error: BaseException, passes: list
) -> TrainingError:
    """The TrainingError for running out of memory in iteration `iteration` of a detector's
    training, on the batches `passes`: the batch, the image sizes and what to change."""
    i, s = cfg.input, cfg.solver
    sizes = ", ".join(f"{t.shape[-1]}x{t.shape[-2]}" for images, _ in passes for t in images)
    per_pass = f" per pass ({s.accumulate} passes)" if s.accumulate > 1 else ""
    return TrainingError(
        f"out of memory on {device} at iteration {iteration} with "
        f"{len(passes[0][0])} images per process{per_pass} (solver.ims_per_batch="
        f"{s.ims_per_batch}), input images {sizes} resized to short side "
        f"{list(i.min_size_train)} (at most {i.max_size_train}). Raise solver.accumulate "
        "(fewer images per pass, the same batch; it must divide the images per process), "
        "lower solver.ims_per_batch (and base_lr with it), input.min_size_train / "
        f"input.max_size_train, or use solver.amp=bf16. ({str(error).splitlines()[0][:200]})"
    )
