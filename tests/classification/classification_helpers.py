"""Helpers of the classification tests: a tiny ImageFolder set and CIFAR-10 batch files."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np


def write_image_folder(
    root: Path, classes=("cat", "dog", "fox"), per_class=6, seed=0, size=None
) -> Path:
    """root/{train,val}/<class>/*.png: small images of varied sizes (or `size` x `size`), one
    hue per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", 2)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = (size, size) if size else rng.integers(36, 56, 2).tolist()
                img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                img[..., c % 3] += np.uint8(150)  # a learnable colour cue
                cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return root


def write_cifar_batches(root: Path, per_batch=12, seed=0, protocol=2, keys=bytes) -> dict:
    """cifar-10-batches-py files as CIFAR's are: pickled dicts with b"data" (uint8 N x 3072,
    the R, G, B planes per row) and b"labels" (keys=str: "data", as Python 2's str keys of the
    real files read with encoding="latin1"); returns the arrays written, by file name."""

    def key(text):
        return text.encode() if keys is bytes else text

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            key("batch_label"): f"{name} of 6".encode(),
            key("labels"): labels,
            key("data"): data,
            key("filenames"): [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        (root / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (data, np.array(labels))
    meta = {key("label_names"): [key(f"class{i}") for i in range(10)], key("num_vis"): 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return written
