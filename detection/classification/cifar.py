"""CIFAR-10's python batches, read without executing anything the files could carry.

The batches (`cifar-10-batches-py/data_batch_1..5`, `test_batch`, `batches.meta`) are pickles,
and unpickling runs whatever callable a file names. The unpickler here resolves only the handful
of names a numpy array needs (its reconstructor, ndarray, dtype, and the latin-1 codec that
protocol-2 pickles use for bytes); any other name (os.system, builtins.eval, ...) stops the
read before it is called. What comes out is then checked to be a dict of arrays, lists,
bytes, strings and numbers, with the shapes CIFAR-10 has.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
# CIFAR-10's classes in label order (batches.meta's label_names), for folders without the meta
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class UnsafePickleError(ValueError):
    """A pickle names something other than the plain data CIFAR's batches hold."""


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    import importlib

    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """codecs.encode for the one use protocol-2 pickles make of it: bytes written as latin-1."""
    if encoding.replace("-", "").lower() != "latin1" or not isinstance(text, str):
        raise UnsafePickleError(f"codecs.encode with {encoding!r} is not how bytes are pickled")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object, for every global a pickled numpy array may name.

    numpy 1 wrote `numpy.core.*`, numpy 2 writes `numpy._core.*`; both resolve to the object
    of the installed numpy, taken from this table, never imported by the file's say-so.
    """
    reconstruct = _numpy_attr(("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct")
    frombuffer = _numpy_attr(("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer")
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        if reconstruct is not None:
            table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        if frombuffer is not None:
            table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


class _DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of numpy arrays (see _allowed_globals)."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self.allowed.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self.source}: refused to unpickle {module}.{name}: a CIFAR-10 batch holds only "
                "numpy arrays, lists, bytes and numbers; this file names code to run. Nothing "
                "was executed. Re-download cifar-10-python.tar.gz from the official page"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not CIFAR data; refused")


def _check_plain(obj: Any, source: str, depth: int = 0) -> None:
    """Raise unless `obj` is plain data: dicts, lists, tuples, bytes, str, numbers, arrays."""
    if depth > 8:
        raise UnsafePickleError(f"{source}: nested deeper than a CIFAR batch is; refused")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafePickleError(f"{source}: an array of Python objects is not CIFAR data")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, source, depth + 1)
            _check_plain(v, source, depth + 1)
        return
    if isinstance(obj, list | tuple):
        for v in obj:
            _check_plain(v, source, depth + 1)
        return
    if obj is None or isinstance(obj, bytes | str | int | float | bool | np.generic):
        return
    raise UnsafePickleError(f"{source}: unexpected {type(obj).__name__} in a CIFAR batch")


def load_pickled_data(path: str | os.PathLike) -> dict[str, Any]:
    """A pickled dict of plain data (string keys), read with the data-only unpickler."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            obj = _DataOnlyUnpickler(f, str(path)).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"CIFAR-10 batch not found: {path}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise ValueError(
            f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e}); re-extract "
            "cifar-10-python.tar.gz"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict, got {type(obj).__name__}")
    _check_plain(obj, str(path))
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 32, 32, 3] uint8 RGB, labels [N] int64) of one CIFAR-10 batch file."""
    batch = load_pickled_data(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: 'data' must be a uint8 array of N rows of 3072 values")
    if data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' rows have {data.shape[1]} values, CIFAR's have 3072")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data):
        raise ValueError(f"{path}: 'labels' must list one label per image ({len(data)} images)")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"{path}: 'labels' must be integers in 0..9")
    # each row is the red, green and blue 32x32 planes in turn
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def class_names(root: str | os.PathLike) -> list[str]:
    """The label names of batches.meta, or CIFAR-10's own where the folder has no meta file."""
    meta = Path(root) / META
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    names = load_pickled_data(meta).get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise ValueError(f"{meta}: 'label_names' must be a list of names")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def read_cifar10(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images [N, 32, 32, 3] uint8, labels [N], class names) of split "train" (the five data
    batches) or "test" (test_batch) of the cifar-10-batches-py folder `root`."""
    root = Path(root)
    files = TRAIN_BATCHES if split == "train" else (TEST_BATCH,)
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"data.root={root}: no CIFAR-10 batch {', '.join(missing)} there; data.root must be "
            "the cifar-10-batches-py folder extracted from cifar-10-python.tar.gz (data_batch_1 "
            "to data_batch_5, test_batch, batches.meta)"
        )
    parts = [read_batch(root / f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, class_names(root)
