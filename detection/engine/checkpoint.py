"""Resuming from a checkpoint: its config checked against the run's, and every rank's RNG state
for it. The format itself is written and read in detection.utils.checkpoint."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch.distributed as dist

from ..config import Config, ConfigError, to_dict
from ..utils.checkpoint import config_differences
from .rng import get_rng_state


def check_resumable(old_config: dict, cfg: Config, path: str | os.PathLike) -> None:
    """Refuse to resume checkpoint `path` (trained with `old_config`) into another model: a
    ConfigError naming the differing keys. A changed schedule (solver) is only a warning."""
    new = to_dict(cfg)
    changed = config_differences(old_config, new, "model")
    if changed:
        raise ConfigError(
            f"cannot resume from {path}: the model differs from the one it was trained "
            "with:\n  " + "\n  ".join(changed) + "\nuse a new output_dir for a new model"
        )
    schedule = config_differences(old_config, new, "solver")
    if schedule:
        warnings.warn(
            f"resuming {path} with a changed schedule:\n  " + "\n  ".join(schedule),
            stacklevel=3,
        )


def gather_rng_states(world_size: int) -> list[dict[str, Any]]:
    """Every rank's random generator states, in rank order (collective with several ranks)."""
    state = get_rng_state()
    if world_size == 1:
        return [state]
    states: list = [None] * world_size
    dist.all_gather_object(states, state)
    return states
