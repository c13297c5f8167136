"""`shapes`: the embedded synthetic COCO-format dataset, generated on first use.

Coloured circles, squares, triangles, stars and ellipses, rotated and scaled (about 20 to 110
pixels), drawn over each other (occluded objects keep the box of their visible pixels, mostly
hidden ones are left out) on textured backgrounds (gradient, blotches, pixel noise, distractor
lines), in 320x240..400x320 landscape and portrait JPEGs. Each class leans towards a hue but
15% of the objects take any colour, so a detector has to learn shapes, not just colours.
Every image is a function of (seed, image index): two runs write identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detection.config.datasets import DATASETS, dataset_root
from detection.utils.io import write_json

CLASSES = ("circle", "square", "triangle", "star", "ellipse")
# registered name -> (split, number of images, seed)
SHAPES_DATASETS: dict[str, tuple[str, int, int]] = {
    "shapes_train": ("train", 800, 1),
    "shapes_val": ("val", 200, 2),
}
_CLASS_HUES = (0, 30, 60, 100, 140)  # OpenCV hue units (0..180)
GENERATOR_VERSION = 2


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    c0, c1 = rng.integers(0, 256, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    # a linear gradient between two colours along a random direction
    gx = np.linspace(0, np.cos(angle), width, dtype=np.float32)
    gy = np.linspace(0, np.sin(angle), height, dtype=np.float32)
    t = gy[:, None] + gx[None, :]
    t -= t.min()
    t /= max(float(t.max()), 1e-6)
    blotches = rng.normal(0, 28, (rng.integers(3, 7), rng.integers(3, 7), 3)).astype(np.float32)
    img = cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    # grain at half resolution: as textured, a quarter of the random draws
    grain = rng.standard_normal(((height + 1) // 2, (width + 1) // 2, 3), dtype=np.float32)
    grain = cv2.resize(grain * rng.uniform(3, 12), (width, height), interpolation=cv2.INTER_NEAREST)
    img += grain
    img += c0
    img += t[..., None] * (c1 - c0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 5)):  # distractor lines: edges that are not objects
        p0, p1 = rng.integers(0, (width, height), (2, 2))
        color = rng.integers(0, 256, 3).tolist()
        cv2.line(img, tuple(p0.tolist()), tuple(p1.tolist()), color, int(rng.integers(1, 4)))
    return img


def _polygon(rng: np.random.Generator, label: int, center, size: float) -> np.ndarray | None:
    """Vertices of a shape (None for circle and ellipse, which OpenCV draws natively)."""
    angle = rng.uniform(0, 2 * np.pi)
    if CLASSES[label] == "square":
        radii, angles = np.full(4, size / np.sqrt(2)), angle + np.arange(4) * np.pi / 2
    elif CLASSES[label] == "triangle":
        radii = np.full(3, size / np.sqrt(3))
        angles = angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
    elif CLASSES[label] == "star":
        radii = np.tile([size / 2, size / 2 * rng.uniform(0.38, 0.5)], 5)
        angles = angle + np.arange(10) * np.pi / 5
    else:
        return None
    pts = np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], 1)
    return np.round(pts * 16).astype(np.int32)  # 4 fractional bits, see shift=4 below


def _draw(canvas: np.ndarray, shape: dict, color, line_type: int) -> None:
    kind, geom = shape["kind"], shape["geom"]
    if kind == "poly":
        cv2.fillPoly(canvas, [geom], color, lineType=line_type, shift=4)
    else:
        center, axes, angle = geom
        cv2.ellipse(canvas, center, axes, angle, 0, 360, color, -1, line_type, shift=4)


def _random_shape(rng: np.random.Generator, label: int, width: int, height: int) -> dict:
    """A shape of class `label` at a random place, size and angle: {"kind", "geom"} for _draw."""
    size = float(np.exp(rng.uniform(np.log(20), np.log(110))))
    center = rng.uniform(0, 1, 2) * (width, height)
    return shape_at(rng, label, center, size)


def shape_at(rng: np.random.Generator, label: int, center: np.ndarray, size: float) -> dict:
    """A shape of class `label` centred at `center` with side / diameter `size` (pixels), at a
    random angle (and, for ellipses, aspect): {"kind", "geom"} for _draw."""
    poly = _polygon(rng, label, center, size)
    if poly is not None:
        return {"kind": "poly", "geom": poly}
    ratio = 1.0 if CLASSES[label] == "circle" else rng.uniform(0.35, 0.65)
    axes = (int(size / 2 * 16), int(size / 2 * ratio * 16))
    c = (int(center[0] * 16), int(center[1] * 16))
    return {"kind": "ellipse", "geom": (c, axes, float(rng.uniform(0, 180)))}


def _random_color(rng: np.random.Generator, label: int) -> list[int]:
    """An RGB colour near the class's hue (85% of the time) or of any hue."""
    hue = _CLASS_HUES[label] + rng.normal(0, 12) if rng.random() < 0.85 else rng.uniform(0, 180)
    hsv = np.uint8([[[int(hue) % 180, rng.integers(90, 256), rng.integers(90, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].tolist()


def _draw_objects(
    rng: np.random.Generator, img: np.ndarray, instances: np.ndarray
) -> list[tuple[int, int]]:
    """Draw a random number of shapes over `img`, each also into the instance map (as its
    instance number k = 1, 2, ...); returns (label, unoccluded area) of each instance."""
    height, width = instances.shape
    scratch = np.zeros((height, width), np.uint8)
    shapes = []
    num = int(rng.choice(8, p=[0.04, 0.14, 0.18, 0.18, 0.16, 0.12, 0.1, 0.08]))
    for k in range(1, num + 1):
        label = int(rng.integers(len(CLASSES)))
        shape = _random_shape(rng, label, width, height)
        color = _random_color(rng, label)
        _draw(img, shape, color, cv2.LINE_AA)
        if rng.random() < 0.4:  # some objects get a darker outline
            outline = [int(v * 0.5) for v in color]
            if shape["kind"] == "poly":
                cv2.polylines(img, [shape["geom"]], True, outline, 2, cv2.LINE_AA, shift=4)
        _draw(instances, shape, k, cv2.LINE_8)
        scratch[:] = 0
        _draw(scratch, shape, 1, cv2.LINE_8)
        shapes.append((label, cv2.countNonZero(scratch)))
    return shapes


def _visible_objects(instances: np.ndarray, shapes: list[tuple[int, int]]) -> list[dict]:
    """The annotation of every instance that is visible enough: box xywh of its visible pixels,
    visible area (vectorized over the instance map)."""
    height, width = instances.shape
    ys, xs = np.nonzero(instances)
    ids = instances[ys, xs]
    n = len(shapes) + 1
    area = np.bincount(ids, minlength=n)
    x0 = np.full(n, width)
    y0 = np.full(n, height)
    x1 = np.full(n, -1)
    y1 = np.full(n, -1)
    np.minimum.at(x0, ids, xs)
    np.minimum.at(y0, ids, ys)
    np.maximum.at(x1, ids, xs)
    np.maximum.at(y1, ids, ys)
    objects = []
    for k, (label, full_area) in enumerate(shapes, start=1):
        # mostly hidden or cut-off objects are not annotated (nor should they be detected)
        if area[k] < 30 or area[k] < 0.4 * max(full_area, 1):
            continue
        box = [int(x0[k]), int(y0[k]), int(x1[k] - x0[k] + 1), int(y1[k] - y0[k] + 1)]
        objects.append(
            {
                "label": label,
                "bbox": box,
                "area": int(area[k]),
                "full_area": full_area,
                "instance": k,
            }
        )
    return objects


def render_shapes_image(
    seed: int, index: int, *, with_instances: bool = False
) -> tuple[np.ndarray, list[dict]] | tuple[np.ndarray, list[dict], np.ndarray]:
    """One image (HxWx3 uint8 RGB) and its objects: label (0-based), box xywh of the visible
    pixels, visible area, full (unoccluded) area, instance number; with_instances also returns
    the HxW map of which instance each pixel shows (0 = background)."""
    rng = np.random.default_rng([seed, index])
    width, height = int(rng.integers(320, 401)), int(rng.integers(240, 321))
    if rng.random() < 0.25:
        width, height = height, width
    img = _background(rng, height, width)
    instances = np.zeros((height, width), np.int32)
    shapes = _draw_objects(rng, img, instances)
    objects = _visible_objects(instances, shapes)
    return (img, objects, instances) if with_instances else (img, objects)


def _encode_jpeg(img: np.ndarray, file_name: str) -> bytes:
    ok, data = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise OSError(f"OpenCV could not encode {file_name} as JPEG")
    return data.tobytes()


def _render_split(
    folder: Path, split: str, num_images: int, seed: int, progress: bool
) -> tuple[list[dict], list[dict]]:
    """Write the split's JPEGs into `folder`; returns their COCO image and annotation entries."""
    images, annotations = [], []
    for i in tqdm(
        range(num_images), desc=f"generating shapes_{split}", unit="img", disable=not progress
    ):
        img, objects = render_shapes_image(seed, i)
        file_name = f"{i:06d}.jpg"
        (folder / file_name).write_bytes(_encode_jpeg(img, file_name))
        image_id = i + 1
        images.append(
            {"id": image_id, "file_name": file_name, "height": img.shape[0], "width": img.shape[1]}
        )
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["label"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
    return images, annotations


def _shapes_coco(
    split: str, num_images: int, seed: int, images: list[dict], annotations: list[dict]
) -> dict:
    """The split's COCO json, with what made it (seed, generator version) under "info"."""
    return {
        "info": {
            "description": f"resdet synthetic shapes, split {split}",
            "num_images": num_images,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)
        ],
    }


def generate_shapes(
    root: str | os.PathLike, split: str, num_images: int, seed: int, *, progress: bool = True
) -> tuple[Path, Path]:
    """Write `<root>/shapes/annotations/instances_<split>.json` and `<root>/shapes/<split>/*.jpg`.

    The images are written into a temporary folder and renamed into place, then the json is
    written atomically, as the completion mark, so processes generating at the same time do not
    corrupt each other: the output is deterministic, and whichever rename lands first wins.
    """
    base = Path(root) / "shapes"
    ann_path = base / "annotations" / f"instances_{split}.json"
    image_dir = base / split
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{split}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    (tmp / split).mkdir(parents=True)
    try:
        images, annotations = _render_split(tmp / split, split, num_images, seed, progress)
        try:
            os.rename(tmp / split, image_dir)
        except OSError:
            if not image_dir.is_dir():
                raise
            # another process renamed its identical copy first
        write_json(ann_path, _shapes_coco(split, num_images, seed, images, annotations))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ann_path, image_dir


def _version(ann: Path) -> int | None:
    try:
        return json.loads(ann.read_text()).get("info", {}).get("generator_version")
    except (OSError, json.JSONDecodeError):
        return None


def ensure_shapes(name: str, root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(annotation json, image folder) of a registered shapes set, generated if not there yet."""
    if name not in SHAPES_DATASETS:
        raise ValueError(f"{name!r} is not a shapes dataset: {', '.join(SHAPES_DATASETS)}")
    root = Path(root) if root is not None else dataset_root()
    ann_rel, img_rel = DATASETS[name]
    ann, img = root / ann_rel, root / img_rel
    if ann.is_file() and _version(ann) != GENERATOR_VERSION:
        # made by an older generator: its images and boxes differ from this version's
        print(f"{name}: regenerating (generator version {GENERATOR_VERSION})", flush=True)
        ann.unlink(missing_ok=True)
        shutil.rmtree(img, ignore_errors=True)
    if not ann.is_file():
        split, num_images, seed = SHAPES_DATASETS[name]
        ann, img = generate_shapes(root, split, num_images, seed)
    return ann, img
