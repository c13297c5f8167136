"""Checkpoint files: written atomically, read with weights_only=True."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..config import Config, ConfigError, to_dict
from ..utils.io import atomic_write, write_text
from .rng import get_rng_state


def model_checkpoint(
    model_state: dict[str, torch.Tensor],
    cfg: Config,
    class_names: list[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint dict: weights plus the resolved config and class names that made them."""
    return {"model": model_state, "config": to_dict(cfg), "class_names": class_names, **extra}


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically and durably (fsync of the file and its folder).

    A crash at any moment leaves either the old file or the complete new one, never a torn one.
    """
    return atomic_write(path, lambda f: torch.save(obj, f), binary=True, durable=True)


POINTER = "last_checkpoint"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: dict, new: dict, section: str) -> list[str]:
    """'key: old -> new' for every key of `section` that differs between two config dicts."""
    a = _flatten(old.get(section, {}), f"{section}.")
    b = _flatten(new.get(section, {}), f"{section}.")
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


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


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, permissions); the previous one is
    intact."""


class Checkpointer:
    """Periodic checkpoints in `output_dir` with a `last_checkpoint` pointer; keeps the last N.

    The pointer is replaced only after the checkpoint it names is complete and renamed into
    place, so a crash at any point leaves it naming a loadable file (or absent).
    """

    def __init__(self, output_dir: str | os.PathLike, keep: int = 3) -> None:
        self.dir = Path(output_dir)
        self.keep = keep

    def save(
        self, name: str, payload: dict[str, Any], *, periodic: bool = True, pointer: bool = True
    ) -> Path:
        """Write `payload` to <output_dir>/<name>, then point `last_checkpoint` at it.

        periodic: a model_<iteration>.pth that counts towards `keep` (older ones are removed).
        pointer: False leaves `last_checkpoint` alone (model_best.pth: --resume continues the
        last periodic or final checkpoint, not the best one).
        Raises CheckpointWriteError, saying what is left, when the disk refuses the write.
        """
        self._remove_stale_temporaries()
        try:
            path = save_atomic(payload, self.dir / name)
            if pointer:
                write_text(self.dir / POINTER, name + "\n")
        except (OSError, RuntimeError) as e:
            # a full disk surfaces as OSError from open/write/fsync, or as a RuntimeError from
            # torch.save's zip writer ("unexpected pos"): say so, with the space left
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
            try:
                free = f"{shutil.disk_usage(self.dir).free / 2**20:.0f} MiB free there"
            except OSError:
                free = "free space unknown"
            last = self.dir / POINTER
            kept = (
                f"{last} still names the last complete checkpoint ({last.read_text().strip()})"
                if last.is_file()
                else "No earlier checkpoint exists"
            )
            error = CheckpointWriteError(
                f"could not write checkpoint {self.dir / name}: {reason} ({free}). {kept}. "
                "Free disk space or pick another output_dir, then rerun with --resume"
            )
            error.errno = getattr(e, "errno", None)
            raise error from e
        if periodic:
            self._prune()
        return path

    def _remove_stale_temporaries(self) -> None:
        """Temporary files left by a writer that was killed mid-write (one writer per folder)."""
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def _prune(self) -> None:
        periodic = sorted(self.dir.glob("model_[0-9]*.pth"))
        for old in periodic[: max(len(periodic) - self.keep, 0)]:
            old.unlink(missing_ok=True)

    def last(self) -> Path | None:
        """The checkpoint the pointer names, or None when there is none yet."""
        pointer = self.dir / POINTER
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        path = self.dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{pointer} names {name}, which does not exist; remove the pointer to start "
                "fresh or point it at an existing checkpoint"
            )
        return path
