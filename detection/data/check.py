"""Dataset validation before a long run: the annotation file, every image file, every decode."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..config import Config
from .build import build_dataset
from .coco_index import describe_drop
from .images import ImageReadError

# drops that are part of normal training and not defects of the data
EXPECTED = ("crowd", "empty_image")


@dataclass
class DatasetReport:
    """What check_dataset found in one split."""

    split: str
    annotations: Path
    images_dir: Path
    num_images: int
    num_boxes: int
    class_names: list[str]
    drop_counts: dict[str, int]
    drop_examples: dict[str, list[int]]
    unreadable: list[str] = field(default_factory=list)  # one message per image
    decoded: bool = True

    @property
    def num_problems(self) -> int:
        """Defects found: drops other than the expected ones, plus unreadable images."""
        defects = sum(v for k, v in self.drop_counts.items() if k not in EXPECTED)
        return defects + len(self.unreadable)

    def format(self, max_listed: int = 20) -> str:
        """The report as text, listing at most `max_listed` unreadable images."""
        lines = [
            f"{self.split}: {self.annotations} (images in {self.images_dir})",
            f"  {self.num_images} usable images, {self.num_boxes} boxes, "
            f"{len(self.class_names)} classes: {', '.join(self.class_names)}",
        ]
        for reason, n in self.drop_counts.items():
            if n:
                tag = "note" if reason in EXPECTED else "PROBLEM"
                examples = self.drop_examples.get(reason, [])
                lines.append(f"  {tag}: {describe_drop(reason, n, examples)}")
        for message in self.unreadable[:max_listed]:
            lines.append(f"  PROBLEM: {message}")
        if len(self.unreadable) > max_listed:
            lines.append(f"  ... and {len(self.unreadable) - max_listed} more unreadable images")
        if not self.decoded:
            lines.append("  images were not decoded (--no-decode): truncated files not looked for")
        lines.append(
            f"  {self.num_problems} problem(s)" if self.num_problems else "  no problems found"
        )
        return "\n".join(lines)


def check_dataset(
    cfg: Config, split: str, *, decode: bool = True, workers: int = 2, progress: bool = True
) -> DatasetReport:
    """Run every check training would, on the whole split, collecting instead of stopping.

    The annotation file is indexed with data.skip_bad_images=true so that every bad entry is
    counted, not only the first; with `decode`, every image is decoded (and its size compared
    with the json) on `workers` threads. Errors that no setting skips (a file that is not
    COCO, image paths leaving the image folder) are raised as they are in training.
    """
    cfg = copy.deepcopy(cfg)
    cfg.data.skip_bad_images = True
    dataset = build_dataset(cfg, split)
    unreadable: list[str] = []

    def load(index: int) -> str | None:
        """Decode one image: None, or why it cannot be read."""
        try:
            dataset._load(index)
        except ImageReadError as e:
            return str(e)
        return None

    if decode:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = pool.map(load, range(len(dataset)), chunksize=16)
            bar = tqdm(
                results,
                total=len(dataset),
                desc=f"decode {split}",
                unit="img",
                disable=not progress,
            )
            unreadable = [m for m in bar if m is not None]
    return DatasetReport(
        split=split,
        annotations=dataset.annotations_path,
        images_dir=dataset.images_dir,
        num_images=len(dataset) - len(unreadable),
        num_boxes=len(dataset.records["boxes"]),
        class_names=list(dataset.class_names),
        drop_counts=dict(dataset.drop_counts),
        drop_examples=dict(dataset.drop_examples),
        unreadable=unreadable,
        decoded=decode,
    )
