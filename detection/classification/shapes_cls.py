"""`shapes_cls`: the embedded classification set, 32x32 crops of one shape each, generated on
first use.

The five classes of the detection set (detection.data.shapes: circle, square, triangle, star,
ellipse), drawn with its code on its textured backgrounds (gradient, blotches, grain, distractor
lines): one shape per image, 35% to 85% of the image's side, off-centre by up to 15%, rotated,
in its class's hue only 60% of the time (so the colour is a hint, not the answer), sometimes
outlined, and in half of the images behind a smaller distractor shape of any class near a
border. Written in ImageFolder layout, `shapes_cls/{train,val}/<class>/<index>.png`, 5000
training and 1000 validation images; every image is a function of (seed, index).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np

from detection.config.datasets import dataset_root
from detection.data.shapes import CLASSES, _background, _draw, shape_at
from detection.utils.io import write_json

# split -> (number of images, seed)
SPLITS: dict[str, tuple[int, int]] = {"train": (5000, 11), "val": (1000, 12)}
IMAGE_SIZE = 32
FOLDER = "shapes_cls"
GENERATOR_VERSION = 1
_CLASS_HUES = (0, 30, 60, 100, 140)  # as the detection set's (OpenCV hue units)


def _color(rng: np.random.Generator, label: int, class_hue: float) -> list[int]:
    """An RGB colour near the class's hue with probability `class_hue`, of any hue otherwise."""
    hue = (
        _CLASS_HUES[label] + rng.normal(0, 12) if rng.random() < class_hue else rng.uniform(0, 180)
    )
    hsv = np.uint8([[[int(hue) % 180, rng.integers(90, 256), rng.integers(90, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].tolist()


def _paint(rng: np.random.Generator, img: np.ndarray, label: int, center, size: float) -> None:
    shape = shape_at(rng, label, center, size)
    color = _color(rng, label, 0.6)
    _draw(img, shape, color, cv2.LINE_AA)
    if shape["kind"] == "poly" and rng.random() < 0.4:
        outline = [int(v * 0.5) for v in color]
        cv2.polylines(img, [shape["geom"]], True, outline, 1, cv2.LINE_AA, shift=4)


def render_crop(seed: int, index: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, int]:
    """(size x size x 3 uint8 RGB image, label) of image `index`; the label is index % 5."""
    rng = np.random.default_rng([seed, index])
    label = index % len(CLASSES)
    img = _background(rng, size, size)
    if rng.random() < 0.5:  # a distractor behind, near a border
        corner = rng.uniform(0, 1, 2) * size
        corner[rng.integers(2)] = rng.choice([0.05, 0.95]) * size
        _paint(rng, img, int(rng.integers(len(CLASSES))), corner, size * rng.uniform(0.2, 0.4))
    center = size / 2 + rng.uniform(-0.15, 0.15, 2) * size
    _paint(rng, img, label, center, float(np.exp(rng.uniform(np.log(0.35), np.log(0.85)))) * size)
    return img, label


def _write_split(folder: Path, split: str) -> None:
    num_images, seed = SPLITS[split]
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    for i in range(num_images):
        img, label = render_crop(seed, i)
        ok, data = cv2.imencode(".png", img[..., ::-1])
        if not ok:
            raise OSError(f"OpenCV could not encode shapes_cls image {i} as PNG")
        (folder / CLASSES[label] / f"{i:06d}.png").write_bytes(data.tobytes())


def _info() -> dict:
    return {
        "description": "resdet synthetic shapes classification set",
        "classes": list(CLASSES),
        "splits": {k: {"num_images": n, "seed": s} for k, (n, s) in SPLITS.items()},
        "image_size": IMAGE_SIZE,
        "generator_version": GENERATOR_VERSION,
    }


def generate_shapes_cls(root: str | os.PathLike) -> Path:
    """Write `<root>/shapes_cls/{train,val}/<class>/*.png` and, last, `info.json` as the
    completion mark; returns `<root>/shapes_cls`.

    Each split is written into a temporary folder and renamed into place, so processes that
    generate at the same time do not corrupt each other (the output is deterministic).
    """
    base = Path(root) / FOLDER
    base.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        target = base / split
        if target.is_dir():
            continue
        tmp = base / f".tmp-{split}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _write_split(tmp, split)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    write_json(base / "info.json", _info())
    return base


def _is_current(base: Path) -> bool:
    try:
        info = json.loads((base / "info.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return info == _info()


def ensure_shapes_cls(root: str | os.PathLike | None = None) -> Path:
    """The `shapes_cls` folder (with train/ and val/), generated under the dataset root
    ($RESDET_DATASETS, default ./datasets) if it is not there or was made by another version."""
    base = (Path(root) if root is not None else dataset_root()) / FOLDER
    if not _is_current(base):
        if base.exists():
            # made by another generator version (or left half done): its images differ
            for split in SPLITS:
                shutil.rmtree(base / split, ignore_errors=True)
            (base / "info.json").unlink(missing_ok=True)
        generate_shapes_cls(base.parent)
    return base
