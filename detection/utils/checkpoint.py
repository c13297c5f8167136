"""The checkpoint format, written and read here only: a dict of the weights ("model"), the
resolved config that made them ("config"), the class names, and whatever a trainer adds to
resume exactly (optimizer, scheduler, scaler, iteration, RNG states, ...). Files are written
atomically and durably and read with `torch.load(..., weights_only=True)`; an output folder's
`last_checkpoint` pointer names its latest complete checkpoint.

Below every other package of `detection` (modeling reads checkpoints, the engine writes them):
it imports none of them, so the config comes in as a dataclass or a dict.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .io import atomic_write, write_text

POINTER = "last_checkpoint"


def model_checkpoint(
    model_state: dict[str, torch.Tensor],
    cfg: Any,
    class_names: list[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint dict: weights plus the resolved config (a config dataclass, or its dict)
    and class names that made them, plus `extra`."""
    config = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    return {"model": model_state, "config": config, "class_names": class_names, **extra}


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically and durably (fsync of the file and its folder).

    A crash at any moment leaves either the old file or the complete new one, never a torn one.
    """
    return atomic_write(path, lambda f: torch.save(obj, f), binary=True, durable=True)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's dict, read safely (tensors and plain data only). FileNotFoundError when
    there is no file; ValueError, saying why, when it is not a readable resdet checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e}). Checkpoints are "
            "loaded with weights_only=True: only tensors and plain data are accepted."
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(
            f"{path}: not a resdet checkpoint (needs 'model' and 'config'); for torchvision "
            "weights run resdet convert-weights first, or name published ones (resdet weights)"
        )
    return ckpt


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
            raise self._write_error(name, e) from e
        if periodic:
            self._prune()
        return path

    def _write_error(self, name: str, e: BaseException) -> CheckpointWriteError:
        """What a failed write says: why, the space left, and which checkpoint is still there.

        A full disk surfaces as OSError from open/write/fsync, or as a RuntimeError from
        torch.save's zip writer ("unexpected pos")."""
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
        return error

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
