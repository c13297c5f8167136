"""Checkpoint files: written atomically, read with weights_only=True."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..config import Config, to_dict


def model_checkpoint(
    model_state: dict[str, torch.Tensor],
    cfg: Config,
    class_names: list[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint dict: weights plus the resolved config and class names that made them."""
    return {"model": model_state, "config": to_dict(cfg), "class_names": class_names, **extra}


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the complete new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # make the rename itself durable
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
