"""Shared steps of tests/gpu (a uniquely named module: test files import it, not conftest)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from detection.config import Config
from detection.engine.trainer import Trainer


def leave_only_checkpoint(src: Path, iteration: int, dst: Path) -> Path:
    """What a run killed after its checkpoint at `iteration` leaves: that checkpoint (copied
    from the finished run in `src`) and the pointer to it, alone in `dst`."""
    name = f"model_{iteration:07d}.pth"
    dst.mkdir(parents=True)
    shutil.copy(src / name, dst / name)
    (dst / "last_checkpoint").write_text(name + "\n")
    return dst / name


def train_on_cuda(cfg: Config, *, resume: bool = False, autotune: bool = True) -> Trainer:
    """Train `cfg` on the GPU (resuming from its output_dir with `resume`); returns the
    Trainer. `autotune` = False turns off cuDNN's algorithm search, which the trainer turns on:
    the algorithm it picks can differ from one process or run to the next, and so can the
    result in the last bits, even with deterministic algorithms only."""
    trainer = Trainer(cfg, device="cuda", resume=resume)
    torch.backends.cudnn.benchmark = autotune
    if resume:
        trainer.resume()
    trainer.train()
    return trainer


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
