"""Atomic file writes: a crash at any moment leaves the old file or the complete new one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO], None],
    *,
    binary: bool = False,
    durable: bool = False,
) -> Path:
    """Call `write(file)` on a temporary file in `path`'s folder, then rename it over `path`.

    durable: also fsync the file and the folder, so that the new file survives a power loss
    (checkpoints); without it a crash of the process still never leaves half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as strict JSON (no NaN) atomically."""
    return atomic_write(path, lambda f: json.dump(obj, f, allow_nan=False))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` atomically."""
    return atomic_write(path, lambda f: f.write(text))
