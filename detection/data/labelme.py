"""LabelMe JSON (one file per image) -> one COCO-format json.

Each LabelMe file has `imagePath` (relative to the JSON file), `imageWidth`, `imageHeight` and
`shapes`, each with a `label`, `points` ([x, y] pixel pairs) and a `shape_type`. A rectangle
(two opposite corners, in any order) becomes its box; a polygon becomes its bounding box. Other
shapes (circle, line, point, ...) are counted and skipped. LabelMe's points are continuous pixel
coordinates, as COCO's are, so no offset is applied.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .import_report import ImportReport, clean_box, coco_dict, find_image, image_size

BOX_SHAPES = ("rectangle", "polygon")


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise ValueError(f"{path}: not a LabelMe file (no 'shapes' list)")
    return data


def _image_of(path: Path, data: dict) -> Path | None:
    """The image a LabelMe file describes: its imagePath, else an image of the same stem."""
    given = data.get("imagePath")
    if given:
        # normpath, not resolve: a linked image keeps its place in the folder
        candidate = Path(os.path.normpath(path.parent / given.replace("\\", "/")))
        if candidate.is_file():
            return candidate
    return find_image(path.parent, path.stem)


def _corners(shape: dict, where: str) -> tuple[float, float, float, float]:
    points = shape.get("points")
    try:
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"{where}: 'points' is not a list of [x, y] pairs") from None
    need = 2 if shape.get("shape_type", "polygon") == "rectangle" else 3
    if len(xs) < need:
        raise ValueError(f"{where}: a {shape.get('shape_type')} needs {need} points, has {len(xs)}")
    return min(xs), min(ys), max(xs), max(ys)


def _annotations(
    path: Path, data: dict, image_id: int, size: tuple[int, int], cat_id: dict, report
) -> list[dict]:
    found = []
    for number, shape in enumerate(data["shapes"], start=1):
        where = f"{path}: shape {number}"
        label = shape.get("label")
        kind = shape.get("shape_type") or "polygon"  # LabelMe writes null for polygons at times
        if kind not in BOX_SHAPES:
            report.add("unsupported_shape", f"{where} ({kind})")
            continue
        if label not in cat_id:
            raise ValueError(
                f"{where}: label {label!r} is not among the categories {list(cat_id)}; "
                "add it to --categories"
            )
        x1, y1, x2, y2 = _corners(shape, where)
        box = clean_box(x1, y1, x2, y2, *size, where, report)
        if box is not None:
            found.append({"image_id": image_id, "category_id": cat_id[label], "bbox": box})
    return found


def convert_labelme(
    folder: str | os.PathLike,
    categories: Sequence[str] | None = None,
    images_root: str | os.PathLike | None = None,
) -> tuple[dict, ImportReport]:
    """(COCO dict, report) of every LabelMe .json under `folder` (recursive, sorted).
    Categories: the given names in order, else every label of a box shape, sorted; ids 1..K.
    Image file names are relative to `images_root` (default: `folder`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    files = [(p, _load(p)) for p in sorted(Path(os.path.abspath(folder)).rglob("*.json"))]
    if not files:
        raise ValueError(f"no LabelMe .json files in {folder}")
    if categories is None:
        labels = {
            s.get("label")
            for _, d in files
            for s in d["shapes"]
            if (s.get("shape_type") or "polygon") in BOX_SHAPES
        }
        categories = sorted(str(label) for label in labels)
    cat_id = {name: i + 1 for i, name in enumerate(categories)}
    base = Path(os.path.abspath(images_root if images_root else folder))
    report = ImportReport(f"LabelMe {folder}")
    images, annotations = [], []
    for path, data in files:
        image_path = _image_of(path, data)
        size = image_size(image_path) if image_path is not None else None
        if size is None:
            report.add("missing_image" if image_path is None else "unreadable_image", str(path))
            continue
        if data.get("imageWidth") and (data["imageWidth"], data.get("imageHeight")) != size:
            raise ValueError(
                f"{path}: imageWidth x imageHeight {data['imageWidth']}x{data.get('imageHeight')}"
                f" differs from the image {image_path} ({size[0]}x{size[1]})"
            )
        image_id = len(images) + 1
        rel = os.path.relpath(image_path, base)
        images.append({"id": image_id, "file_name": rel, "width": size[0], "height": size[1]})
        found = _annotations(path, data, image_id, size, cat_id, report)
        if not found:
            report.add("empty_image", str(path))
        annotations.extend(found)
    return coco_dict(
        f"converted from LabelMe at {folder}", images, annotations, list(cat_id)
    ), report
