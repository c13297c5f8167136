"""What an annotation import (YOLO, LabelMe) kept and skipped, and the box arithmetic they share.

Every box or image an importer leaves out is counted under a reason with the first few places
(`file:line` or `file: shape N`) where it happened, so a user can open the file and look: never
a silent drop. Reasons mirror the checks the COCO loader applies (detection/data/coco_index.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .images import IMAGE_EXTENSIONS

# what an importer can skip, in words for the report
SKIP_REASONS = {
    "missing_image": "annotation file without an image",
    "unreadable_image": "image that cannot be opened",
    "label_without_image": "label file without an image",
    "non_finite": "box with NaN or infinite coordinates",
    "non_positive_size": "box with zero or negative width or height",
    "outside_image": "box entirely outside its image",
    "unsupported_shape": "shape other than a rectangle or polygon",
}
# changes that keep the box or image (counted, not problems)
NOTES = {
    "clipped": "box partly outside its image, clipped to it",
    "empty_image": "image without objects (kept: it teaches the background)",
}
MAX_EXAMPLES = 5
# a box is clipped silently by up to this many pixels: normalised coordinates written with a
# few decimals land a hair outside the image edge
CLIP_NOTED = 0.5


@dataclass
class ImportReport:
    """Counts and first examples of every skip and note of one import."""

    source: str
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        """Count one `reason` (a key of SKIP_REASONS or NOTES) at `where`."""
        if reason not in SKIP_REASONS and reason not in NOTES:
            raise KeyError(f"unknown import reason {reason!r}")
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(where)

    @property
    def num_skipped(self) -> int:
        """Boxes and images left out."""
        return sum(n for r, n in self.counts.items() if r in SKIP_REASONS)

    def format(self) -> str:
        """One line per reason: 'skipped: N box with ... (e.g. a.txt:3, ...)'."""
        lines = []
        for reason, n in self.counts.items():
            tag = "skipped" if reason in SKIP_REASONS else "note"
            what = SKIP_REASONS.get(reason) or NOTES[reason]
            more = ", ..." if n > len(self.examples[reason]) else ""
            lines.append(f"  {tag}: {n} x {what} (e.g. {', '.join(self.examples[reason])}{more})")
        return "\n".join(lines)


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image's header, or None when it cannot be opened."""
    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return None


def find_image(folder: Path, stem: str) -> Path | None:
    """The image `stem`.<ext> in `folder` for any image extension, or None."""
    for ext in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def clean_box(
    x1: float, y1: float, x2: float, y2: float, width: int, height: int, where: str, report
) -> list[float] | None:
    """COCO [x, y, w, h] of the corner box clipped to the image, or None (counted) when the
    box is not finite, has no area, or lies wholly outside the image."""
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        report.add("non_finite", where)
        return None
    if x2 <= x1 or y2 <= y1:
        report.add("non_positive_size", where)
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:
        report.add("outside_image", where)
        return None
    if max(abs(cx1 - x1), abs(cy1 - y1), abs(cx2 - x2), abs(cy2 - y2)) > CLIP_NOTED:
        report.add("clipped", where)
    return [cx1, cy1, cx2 - cx1, cy2 - cy1]


def coco_dict(
    description: str, images: list[dict], annotations: list[dict], names: list[str]
) -> dict:
    """A COCO json dict; annotation ids 1..N, category ids 1..K in the order of `names`."""
    for i, ann in enumerate(annotations, start=1):
        ann["id"] = i
        ann.setdefault("iscrowd", 0)
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    return {
        "info": {"description": description},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i, "name": n, "supercategory": "none"} for i, n in enumerate(names, start=1)
        ],
    }
