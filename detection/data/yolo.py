"""YOLO text labels (Ultralytics, Roboflow, Darknet exports) -> one COCO-format json per split.

A YOLO dataset is a folder of images and, beside it, a folder of label files: the labels of
`.../images/<sub>/a.jpg` are in `.../labels/<sub>/a.txt` (the last `images` folder of the path
becomes `labels`), one line per box, `class cx cy w h`, the centre and size normalised to the
image's width and height, classes counted from 0. An image without a label file, or with an
empty one, has no objects. The class names come from `data.yaml` (`names:` a list or an
{id: name} map; `path:` and `train:` / `val:` / `test:` each a folder, a list of folders, or a
.txt list of images) or from `classes.txt` / `obj.names` (one name per line). Without a
data.yaml split the split is `<root>/images/<split>` (or `<root>/<split>/images`), else all of
`<root>/images`.

COCO boxes are continuous pixels: x = (cx - w/2) * width, w = w * width. Class k becomes
category id k + 1 (COCO ids start at 1; 0 is the detector's background).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .images import IMAGE_EXTENSIONS
from .import_report import ImportReport, clean_box, coco_dict, image_size

SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "train": ("train",), "test": ("test",)}


def read_class_names(root: Path) -> tuple[list[str], dict]:
    """(class names in id order, the parsed data.yaml or {}) from `root`'s class list."""
    data_yaml = next(
        (root / n for n in ("data.yaml", "dataset.yaml") if (root / n).is_file()), None
    )
    if data_yaml is not None:
        try:
            data = yaml.safe_load(data_yaml.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{data_yaml}: not valid YAML ({e})") from None
        names = data.get("names")
        if isinstance(names, dict):
            ids = sorted(int(k) for k in names)
            if ids != list(range(len(ids))):
                raise ValueError(f"{data_yaml}: names must map ids 0..{len(ids) - 1}, got {ids}")
            names = [str(names[k]) for k in ids]
        if not isinstance(names, list) or not names:
            raise ValueError(f"{data_yaml}: no 'names:' list of class names")
        return [str(n) for n in names], data
    for name in ("classes.txt", "obj.names"):
        if (root / name).is_file():
            names = [line.strip() for line in (root / name).read_text().splitlines()]
            names = [n for n in names if n]
            if names:
                return names, {}
            raise ValueError(f"{root / name} lists no class names")
    raise FileNotFoundError(
        f"no class list in {root}: expected data.yaml (with names:), classes.txt or obj.names"
    )


def _images_in(entry: Path) -> list[Path]:
    """The images of a folder (recursive) or of a .txt list (one path per line)."""
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if entry.is_file() and entry.suffix == ".txt":
        base = entry.parent
        lines = [line.strip() for line in entry.read_text().splitlines() if line.strip()]
        return [p if p.is_absolute() else (base / p) for p in map(Path, lines)]
    raise FileNotFoundError(f"image folder or list {entry} not found")


def split_images(root: Path, data: dict, split: str | None) -> list[Path]:
    """The image paths of `split` (None: every image under root/images)."""
    if split is not None and data:
        key = next((k for k in SPLIT_ALIASES.get(split, (split,)) if data.get(k)), None)
        if key is None:
            raise ValueError(f"data.yaml in {root} has no {split!r} split (keys: {sorted(data)})")
        base = Path(data.get("path") or ".")
        base = base if base.is_absolute() else root / base
        entries = data[key] if isinstance(data[key], list) else [data[key]]
        return [img for e in entries for img in _images_in(Path(os.path.normpath(base / e)))]
    if split is not None:
        for name in SPLIT_ALIASES.get(split, (split,)):
            for candidate in (root / "images" / name, root / name / "images"):
                if candidate.is_dir():
                    return _images_in(candidate)
        raise FileNotFoundError(f"no {split!r} split in {root} (looked for images/{split}/)")
    return _images_in(root / "images")


def label_path(image: Path) -> Path:
    """The label file of an image: the last 'images' folder of its path becomes 'labels'."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _parse_line(line: str, where: str, num_classes: int) -> tuple[int, list[float]]:
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(
            f"{where}: expected 'class cx cy w h', got {len(fields)} fields: {line.strip()!r} "
            "(segmentation polygons are not read; export boxes)"
        )
    try:
        cls = int(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise ValueError(f"{where}: not numbers: {line.strip()!r}") from None
    if not 0 <= cls < num_classes:
        raise ValueError(f"{where}: class id {cls} is not in 0..{num_classes - 1} (the class list)")
    return cls, values


def _read_labels(
    label_file: Path, image_id: int, size: tuple[int, int], num_classes: int, report
) -> list[dict]:
    width, height = size
    annotations = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{label_file}:{number}"
        cls, (cx, cy, w, h) = _parse_line(line, where, num_classes)
        x1, y1 = (cx - w / 2) * width, (cy - h / 2) * height
        box = clean_box(x1, y1, x1 + w * width, y1 + h * height, width, height, where, report)
        if box is not None:
            annotations.append({"image_id": image_id, "category_id": cls + 1, "bbox": box})
    return annotations


def _orphan_labels(images: list[Path], report: ImportReport) -> None:
    """Count the label files, in the label folders of these images, that no image has."""
    wanted = {label_path(p) for p in images}
    for folder in sorted({p.parent for p in wanted}):
        if folder.is_dir():
            for txt in sorted(folder.glob("*.txt")):
                if txt not in wanted and txt.name != "classes.txt":
                    report.add("label_without_image", str(txt))


def convert_yolo(
    root: str | os.PathLike, split: str | None = None, images_root: str | os.PathLike | None = None
) -> tuple[dict, ImportReport]:
    """(COCO dict, report) of one split of the YOLO dataset at `root`. Image file names are
    relative to `images_root` (default: the common folder of the split's images)."""
    root = Path(root)
    names, data = read_class_names(root)
    paths = split_images(root, data, split)
    if not paths:
        raise ValueError(f"no images in the {split or 'whole'} split of {root}")
    base = Path(images_root) if images_root else Path(os.path.commonpath([p.parent for p in paths]))
    report = ImportReport(f"YOLO {root}" + (f" ({split})" if split else ""))
    images, annotations = [], []
    for image_path in paths:
        size = image_size(image_path) if image_path.is_file() else None
        if size is None:
            report.add(
                "missing_image" if not image_path.is_file() else "unreadable_image", str(image_path)
            )
            continue
        image_id = len(images) + 1
        rel = os.path.relpath(image_path, base)
        images.append({"id": image_id, "file_name": rel, "width": size[0], "height": size[1]})
        labels = label_path(image_path)
        found = _read_labels(labels, image_id, size, len(names), report) if labels.is_file() else []
        if not found:
            report.add("empty_image", str(labels if labels.is_file() else image_path))
        annotations.extend(found)
    _orphan_labels(paths, report)
    description = f"converted from YOLO labels at {root}" + (f", split {split}" if split else "")
    coco = coco_dict(description, images, annotations, names)
    coco["info"]["images_root"] = str(base)  # what data.*.images must name to train on it
    return coco, report
