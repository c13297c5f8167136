"""Pascal VOC XML annotations -> one COCO-format json.

VOC boxes are 1-based inclusive pixel indices (xmin..xmax); COCO boxes are continuous
[x, y, width, height] with the image's top-left corner at 0, so x = xmin - 1 and
width = xmax - xmin + 1. Objects marked `difficult` are kept as `iscrowd: 1` by default:
COCO evaluation then neither rewards nor penalizes detections on them (VOC's own protocol
ignores them the same way) and training drops them; `difficult="drop"` leaves them out.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from PIL import Image


def _text(node: ET.Element, tag: str, xml: Path, required: bool = True) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise ValueError(f"{xml}: <{node.tag}> has no <{tag}>")
        return None
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml: Path) -> float:
    text = _text(node, tag, xml)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{xml}: <{tag}> is {text!r}, not a number") from None


def _annotation_files(ann_dir: Path, image_set: str | os.PathLike | None) -> list[Path]:
    """The XML files to convert: those of the ids listed in `image_set`, else all, sorted."""
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"no annotation folder {ann_dir}; check --voc-root")
    if image_set is not None:
        ids = [line.split()[0] for line in Path(image_set).read_text().splitlines() if line.strip()]
        xmls = [ann_dir / f"{i}.xml" for i in ids]
        missing = [str(x) for x in xmls if not x.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} annotation files of {image_set} are missing, e.g. {missing[0]}"
            )
    else:
        xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise ValueError(f"no .xml files in {ann_dir}")
    return xmls


def _parse(xmls: list[Path]) -> list[tuple[Path, ET.Element]]:
    parsed = []
    for xml in xmls:
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise ValueError(f"{xml}: not valid XML ({e})") from None
        parsed.append((xml, tree))
    return parsed


def _category_ids(
    parsed: list[tuple[Path, ET.Element]], categories: Sequence[str] | None
) -> dict[str, int]:
    """name -> id 1..K: the given names in order, else every object name in the XMLs sorted."""
    names = [_text(o, "name", x) for x, t in parsed for o in t.findall("object")]
    if categories is None:
        categories = sorted(set(names))
    cat_id = {name: i + 1 for i, name in enumerate(categories)}
    if len(cat_id) != len(categories):
        raise ValueError(f"duplicate category names in {list(categories)}")
    return cat_id


def _image_entry(xml: Path, tree: ET.Element, img_dir: Path, image_id: int) -> dict:
    """The COCO image entry of one XML; a missing or 0x0 <size> is read from the image."""
    file_name = _text(tree, "filename", xml, required=False) or f"{xml.stem}.jpg"
    if not (img_dir / file_name).is_file() and (img_dir / f"{xml.stem}.jpg").is_file():
        file_name = f"{xml.stem}.jpg"  # some VOC exports carry a stale <filename>
    size = tree.find("size")
    width = height = 0
    if size is not None:
        width, height = int(_number(size, "width", xml)), int(_number(size, "height", xml))
    if width <= 0 or height <= 0:
        # a few VOC files record 0x0; the image itself knows
        try:
            with Image.open(img_dir / file_name) as im:
                width, height = im.size
        except OSError as e:
            raise ValueError(
                f"{xml}: no usable <size>, and the image {img_dir / file_name} cannot be read ({e})"
            ) from None
    return {"id": image_id, "file_name": file_name, "width": width, "height": height}


def _add_objects(
    xml: Path,
    tree: ET.Element,
    image_id: int,
    cat_id: dict[str, int],
    difficult: str,
    annotations: list[dict],
) -> None:
    """Append the COCO annotations of one XML's objects to `annotations` (ids continue it)."""
    for obj in tree.findall("object"):
        name = _text(obj, "name", xml)
        if name not in cat_id:
            raise ValueError(
                f"{xml}: object class {name!r} is not among the categories "
                f"{list(cat_id)}; add it to --categories"
            )
        is_difficult = (_text(obj, "difficult", xml, required=False) or "0") not in ("0",)
        if is_difficult and difficult == "drop":
            continue
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{xml}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_number(box, t, xml) for t in ("xmin", "ymin", "xmax", "ymax"))
        w, h = x2 - x1 + 1, y2 - y1 + 1
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat_id[name],
                "bbox": [x1 - 1, y1 - 1, w, h],
                "area": w * h,
                "iscrowd": int(is_difficult),
            }
        )


def convert_voc(
    voc_root: str | os.PathLike,
    *,
    images_subdir: str = "JPEGImages",
    annotations_subdir: str = "Annotations",
    image_set: str | os.PathLike | None = None,
    categories: Sequence[str] | None = None,
    difficult: str = "crowd",
) -> dict:
    """A COCO dict from every XML in `<voc_root>/<annotations_subdir>` (or the ids listed in the
    `image_set` file). Categories: the given names in order, else the XML names sorted; ids 1..K.
    `difficult`: "crowd" (kept as iscrowd=1, ignored by evaluation) or "drop". Image file names
    are relative to `<voc_root>/<images_subdir>`."""
    if difficult not in ("crowd", "drop"):
        raise ValueError(f"difficult must be 'crowd' or 'drop', got {difficult!r}")
    root = Path(voc_root)
    ann_dir, img_dir = root / annotations_subdir, root / images_subdir
    parsed = _parse(_annotation_files(ann_dir, image_set))
    cat_id = _category_ids(parsed, categories)
    images, annotations = [], []
    for image_id, (xml, tree) in enumerate(parsed, start=1):
        images.append(_image_entry(xml, tree, img_dir, image_id))
        _add_objects(xml, tree, image_id, cat_id, difficult, annotations)
    return {
        "info": {"description": f"converted from Pascal VOC at {root}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "none"} for n, i in cat_id.items()],
    }
