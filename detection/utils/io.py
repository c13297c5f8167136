"""Atomic file writes: a crash at any moment leaves the old file or the complete new one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in `path`'s folder, with `path`'s suffix (writers such as OpenCV's
    pick the format by it), for programs that write by path; renamed over `path` when the
    block ends without an exception, removed when it raises.

        with atomic_path("out/model.onnx") as tmp:
            torch.onnx.export(..., tmp)
            check(tmp)  # an exception here leaves no out/model.onnx
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() would create it (mkstemp's is 0600)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as strict JSON (no NaN) atomically."""
    return atomic_write(path, lambda f: json.dump(obj, f, allow_nan=False))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` atomically."""
    return atomic_write(path, lambda f: f.write(text))
