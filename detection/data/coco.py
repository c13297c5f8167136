"""COCO-format detection datasets: pycocotools index -> compact records -> (image, target)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
import torch
from pycocotools.coco import COCO

from .images import ImageReadError, read_image
from .records import RecordStore
from .transforms import DetectionTransform

logger = logging.getLogger(__name__)

# why a box or image was left out; the order is the order the checks are applied in
DROP_REASONS = (
    "invalid_annotation",  # unknown image id or category id (only with skip_bad_images)
    "bad_image_entry",  # image entry without a usable width/height (only with skip_bad_images)
    "missing_file",  # image file not found under the image root (only with skip_bad_images)
    "empty_file",  # zero-byte image file (only with skip_bad_images)
    "crowd",  # iscrowd boxes, removed from training targets only
    "non_finite",  # NaN or infinite coordinates
    "non_positive_size",  # width or height <= 0
    "outside_image",  # nothing left after clipping to the image
    "empty_image",  # images without boxes, dropped for training when filter_empty
)

# the reasons that drop whole images (their examples are image ids, the others annotation ids)
IMAGE_REASONS = ("bad_image_entry", "missing_file", "empty_file", "empty_image")


def describe_drop(reason: str, count: int, examples: list[int]) -> str:
    """'reason: N dropped (image|annotation ids [...])' for reports and warnings."""
    kind = "image" if reason in IMAGE_REASONS else "annotation"
    more = " ..." if count > len(examples) else ""
    return f"{reason}: {count} dropped ({kind} ids {examples}{more})"


@dataclass
class CocoIndex:
    """What a COCO json turns into: the compact records, the label mapping and the drop counts."""

    records: RecordStore
    class_names: list[str]
    category_ids: list[int]
    drop_counts: dict[str, int] = field(default_factory=dict)
    # the first few ids of what each reason dropped: image ids for image reasons
    # (bad_image_entry, missing_file, empty_file, empty_image), annotation ids otherwise
    drop_examples: dict[str, list[int]] = field(default_factory=dict)


def _read_coco(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"COCO annotation file not found: {path}; set data.train.annotations / "
            "data.test.annotations, or put the dataset under $RESDET_DATASETS"
        )
    try:
        # pycocotools prints progress to stdout; keep the tools' output clean
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    except (AssertionError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a COCO annotation file ({type(e).__name__}: {e})") from e
    data = coco.dataset
    del coco  # the index pycocotools built is not needed past this point
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path} is not a COCO annotation file: it has no {key!r} list")
    if not data["categories"]:
        raise ValueError(f"{path}: COCO json has no categories; a detector needs at least one")
    return data


def _column(
    items: list[dict], key: str, dtype, path: Path, what: str, default=None, shape=()
) -> np.ndarray:
    """One field of every item as an array; a missing or malformed value names its item."""
    try:
        values = [it[key] if default is None else it.get(key, default) for it in items]
        array = np.asarray(values, dtype=dtype)
        if array.shape[1:] != shape and len(items):
            raise ValueError("shape")
        return array.reshape((len(items), *shape))
    except (KeyError, TypeError, ValueError, AttributeError):
        for i, it in enumerate(items):
            try:
                value = it[key] if default is None else it.get(key, default)
                if np.asarray(value, dtype=dtype).shape != shape:
                    raise ValueError("shape")
            except (KeyError, TypeError, ValueError, AttributeError):
                ident = it.get("id", f"#{i}") if isinstance(it, dict) else f"#{i}"
                raise ValueError(
                    f"{path}: {what} {ident} has a missing or invalid {key!r} "
                    f"({it.get(key) if isinstance(it, dict) else it!r}); fix the annotation file"
                ) from None
        raise


def _lookup(sorted_keys: np.ndarray, order: np.ndarray, queries: np.ndarray):
    """Positions of queries among unsorted keys (via their argsort) and whether each was found."""
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), np.int64), np.zeros(len(queries), bool)
    pos = np.searchsorted(sorted_keys, queries).clip(0, len(sorted_keys) - 1)
    return order[pos], sorted_keys[pos] == queries


def _escapes_root(file_name: str) -> bool:
    """True for absolute paths and paths with '..' parts (they point out of the image folder)."""
    p = PurePath(file_name.replace("\\", "/"))
    return p.is_absolute() or file_name.startswith(("/", "\\")) or ".." in p.parts


def _file_problems(root: Path, file_names: list[str], check: np.ndarray) -> tuple[np.ndarray, ...]:
    """Masks of the images (among those `check` selects) whose file is missing, and whose file
    has zero bytes: one stat each, about a second for COCO's 118k images, so bad files surface
    before training starts."""
    missing = np.zeros(len(file_names), bool)
    empty = np.zeros(len(file_names), bool)
    for i in np.flatnonzero(check):
        try:
            empty[i] = os.stat(root / file_names[i]).st_size == 0
        except OSError:
            missing[i] = True
    return missing, empty


def load_coco_index(
    annotations: str | Path,
    *,
    train: bool,
    filter_empty: bool,
    skip_bad_images: bool = False,
    image_root: str | Path | None = None,
) -> CocoIndex:
    """Read a COCO json into compact records: boxes xyxy clipped to the image, labels 1..K in
    category-id order, crowd boxes removed for training, degenerate boxes dropped and counted.
    With `image_root`, images whose file is missing or empty are an error naming them, or with
    `skip_bad_images` are dropped and counted."""
    path = Path(annotations)
    data = _read_coco(path)
    counts = dict.fromkeys(DROP_REASONS, 0)
    examples: dict[str, list[int]] = {}

    def note(reason: str, dropped: np.ndarray, ids: np.ndarray) -> None:
        """Count what `reason` drops and keep the first few image / annotation ids as examples."""
        counts[reason] = int(dropped.sum())
        if counts[reason]:
            examples[reason] = ids[dropped][:5].tolist()

    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_ids = _column(cats, "id", np.int64, path, "category")
    if len(np.unique(cat_ids)) != len(cat_ids):
        raise ValueError(f"{path}: duplicate category ids {sorted(cat_ids.tolist())}")
    class_names = [str(c.get("name", c["id"])) for c in cats]

    images = data["images"]
    img_ids = _column(images, "id", np.int64, path, "image")
    heights = _column(images, "height", np.float64, path, "image", default=0)
    widths = _column(images, "width", np.float64, path, "image", default=0)
    file_names = [str(im.get("file_name", "")) for im in images]
    uniq, first = np.unique(img_ids, return_index=True)
    if len(uniq) != len(img_ids):
        dup = np.setdiff1d(np.arange(len(img_ids)), first)
        raise ValueError(f"{path}: duplicate image ids, e.g. {img_ids[dup[:5]].tolist()}")
    escaping = np.array([_escapes_root(f) for f in file_names], bool)
    if escaping.any():
        # never a skip: a path out of the image folder is a hostile or broken file, not noise
        i = int(np.flatnonzero(escaping)[0])
        raise ValueError(
            f"{path}: image id {int(img_ids[i])} has file_name {file_names[i]!r}, which leaves "
            f"the image folder ({int(escaping.sum())} such images); file names must be relative "
            "paths inside it"
        )
    bad_img = ~((heights > 0) & (widths > 0)) | np.array([not f for f in file_names], bool)
    if bad_img.any():
        if not skip_bad_images:
            i = int(np.flatnonzero(bad_img)[0])
            raise ValueError(
                f"{path}: image id {int(img_ids[i])} ({file_names[i] or 'no file_name'}) needs a "
                f"file_name and positive width/height, has {widths[i]:g}x{heights[i]:g} "
                f"({int(bad_img.sum())} such images); fix the file or set data.skip_bad_images=true"
            )
        note("bad_image_entry", bad_img, img_ids)
    if image_root is not None:
        root = Path(image_root)
        missing, empty = _file_problems(root, file_names, ~bad_img)
        if (missing.any() or empty.any()) and not skip_bad_images:
            i = int(np.flatnonzero(missing if missing.any() else empty)[0])
            what = "not found" if missing.any() else "empty (0 bytes)"
            raise ImageReadError(
                f"image file {what}: {root / file_names[i]} (image id {int(img_ids[i])}); "
                f"{int(missing.sum())} missing and {int(empty.sum())} "
                f"empty image files in {root}. Fix them (tools/check_dataset.py lists every "
                "problem) or set data.skip_bad_images=true to leave them out"
            )
        note("missing_file", missing, img_ids)
        note("empty_file", empty, img_ids)
        bad_img |= missing | empty

    anns = data.get("annotations") or []
    ann_ids = _column(anns, "id", np.int64, path, "annotation", default=-1)
    ann_img = _column(anns, "image_id", np.int64, path, "annotation")
    ann_cat = _column(anns, "category_id", np.int64, path, "annotation")
    bbox = _column(anns, "bbox", np.float64, path, "annotation", shape=(4,))
    crowd = _column(anns, "iscrowd", np.int64, path, "annotation", default=0) != 0
    del data, anns

    img_order = np.argsort(img_ids, kind="stable")
    img_index, img_found = _lookup(img_ids[img_order], img_order, ann_img)
    cat_index, cat_found = _lookup(cat_ids, np.arange(len(cat_ids)), ann_cat)
    valid = img_found & cat_found
    if not valid.all():
        i = int(np.flatnonzero(~valid)[0])
        problem = (
            f"image id {int(ann_img[i])} is not in 'images'"
            if not img_found[i]
            else f"category id {int(ann_cat[i])} is not in 'categories' ({cat_ids.tolist()})"
        )
        if not skip_bad_images:
            raise ValueError(
                f"{path}: annotation id {int(ann_ids[i])}: {problem} "
                f"({int((~valid).sum())} such annotations); fix the file or set "
                "data.skip_bad_images=true to drop them"
            )
        note("invalid_annotation", ~valid, ann_ids)
    valid &= ~bad_img[img_index]  # annotations of skipped image entries go with them

    keep = valid.copy()
    if train:
        dropped = keep & crowd
        note("crowd", dropped, ann_ids)
        keep &= ~dropped
    finite = np.isfinite(bbox).all(axis=1)
    note("non_finite", keep & ~finite, ann_ids)
    keep &= finite
    with np.errstate(invalid="ignore"):
        positive = (bbox[:, 2] > 0) & (bbox[:, 3] > 0)
    note("non_positive_size", keep & ~positive, ann_ids)
    keep &= positive
    xyxy = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)
    img_w = widths[img_index][:, None]
    img_h = heights[img_index][:, None]
    with np.errstate(invalid="ignore"):
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, img_w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, img_h)
        inside = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    note("outside_image", keep & ~inside, ann_ids)
    keep &= inside

    # images kept, then annotations grouped by image in file order
    boxes_per_image = np.bincount(img_index[keep], minlength=len(img_ids))
    keep_img = ~bad_img
    if train and filter_empty:
        empty = keep_img & (boxes_per_image == 0)
        note("empty_image", empty, img_ids)
        keep_img &= ~empty
    ann_sel = np.flatnonzero(keep)
    ann_sel = ann_sel[np.argsort(img_index[ann_sel], kind="stable")]
    box_start = np.concatenate([[0], np.cumsum(boxes_per_image[keep_img])]).astype(np.int64)

    names = [file_names[i].encode("utf-8") for i in np.flatnonzero(keep_img)]
    name_start = np.concatenate([[0], np.cumsum([len(n) for n in names])]).astype(np.int64)
    records = RecordStore(
        {
            "image_id": img_ids[keep_img],
            "height": heights[keep_img].astype(np.int32),
            "width": widths[keep_img].astype(np.int32),
            "box_start": box_start,
            "name_start": name_start,
            "names": np.frombuffer(b"".join(names), dtype=np.uint8),
            "boxes": xyxy[ann_sel].astype(np.float32),
            "labels": (cat_index[ann_sel] + 1).astype(np.int64),
            "iscrowd": crowd[ann_sel].astype(np.uint8),
            "ann_id": ann_ids[ann_sel],
        }
    )
    return CocoIndex(records, class_names, cat_ids.tolist(), counts, examples)


class COCODataset(torch.utils.data.Dataset):
    """A COCO-format detection dataset yielding (CHW float RGB [0, 1] image, target dict).

    target: boxes float32 [N, 4] xyxy in the (transformed) image's pixels, labels int64 [N] in
    1..K, image_id, orig_size (h, w) of the decoded image; in eval mode also iscrowd int64 [N]
    (crowd boxes are kept for evaluation). Labels number the json's categories in id order.
    Indexing with (index, seed) seeds the augmentation of that one sample. `transform` is
    called as transform(image HxWx3 uint8, boxes [N, 4], seed=None) -> (CHW float tensor, boxes,
    indices of the kept input boxes), see DetectionTransform. `filter_empty` applies to training
    only: evaluation keeps every image. `check_files` looks for missing and zero-byte image
    files when the dataset is built (see load_coco_index).
    """

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path,
        *,
        train: bool,
        transform: Callable | None = None,
        filter_empty: bool = True,
        skip_bad_images: bool = False,
        check_files: bool = True,
    ):
        self.annotations_path = Path(annotations)
        self.images_dir = Path(images)
        self.train = train
        self.transform = transform if transform is not None else DetectionTransform()
        self.skip_bad_images = skip_bad_images
        index = load_coco_index(
            self.annotations_path,
            train=train,
            filter_empty=filter_empty,
            skip_bad_images=skip_bad_images,
            image_root=self.images_dir if check_files else None,
        )
        self.records = index.records
        self.class_names = index.class_names
        self.label_to_category_id = {i + 1: c for i, c in enumerate(index.category_ids)}
        self.category_id_to_label = {c: i for i, c in self.label_to_category_id.items()}
        self.drop_counts = index.drop_counts
        self.drop_examples = index.drop_examples
        self._bad_images = 0
        self._report()

    def _report(self) -> None:
        r = self.records
        counts = {k: v for k, v in self.drop_counts.items() if v}
        summary = (
            f"{self.annotations_path}: {len(self)} images, {len(r['boxes'])} boxes, "
            f"{len(self.class_names)} classes ({'train' if self.train else 'eval'})"
        )
        problems = {k: counts[k] for k in counts if k not in ("crowd", "empty_image")}
        if problems:
            examples = "; ".join(
                describe_drop(k, counts[k], self.drop_examples.get(k, [])) for k in problems
            )
            logger.warning("%s; dropped: %s (%s)", summary, counts, examples)
        else:
            logger.info("%s; dropped: %s", summary, counts or "nothing")

    def __len__(self) -> int:
        return len(self.records["image_id"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_ids(self) -> np.ndarray:
        return self.records["image_id"]

    @property
    def image_sizes(self) -> np.ndarray:
        """(N, 2) int array of every image's (height, width) from the json, without decoding."""
        return np.stack([self.records["height"], self.records["width"]], axis=1)

    @property
    def aspect_ratios(self) -> np.ndarray:
        """width / height of every image, from the json."""
        return self.records["width"] / self.records["height"].astype(np.float64)

    def file_name(self, index: int) -> str:
        start, end = self.records["name_start"][index : index + 2]
        return self.records["names"][start:end].tobytes().decode("utf-8")

    def record(self, index: int) -> dict:
        """The annotations of one image as stored (original pixels, before any transform)."""
        r = self.records
        lo, hi = r["box_start"][index : index + 2]
        return {
            "image_id": int(r["image_id"][index]),
            "file_name": self.file_name(index),
            "height": int(r["height"][index]),
            "width": int(r["width"][index]),
            "boxes": r["boxes"][lo:hi],
            "labels": r["labels"][lo:hi],
            "iscrowd": r["iscrowd"][lo:hi],
            "ann_ids": r["ann_id"][lo:hi],
        }

    def _load(self, index: int) -> tuple[np.ndarray, dict]:
        rec = self.record(index)
        image = read_image(self.images_dir / rec["file_name"], rec["image_id"])
        if image.shape[:2] != (rec["height"], rec["width"]):
            hint = (
                "; the EXIF orientation rotates it: strip the tag or swap width/height in the json"
                if image.shape[:2] == (rec["width"], rec["height"])
                else ""
            )
            raise ImageReadError(
                f"image {self.images_dir / rec['file_name']} (image id {rec['image_id']}) is "
                f"{image.shape[1]}x{image.shape[0]} but {self.annotations_path} says "
                f"{rec['width']}x{rec['height']}{hint}"
            )
        return image, rec

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, dict]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        index = int(index)
        for _ in range(len(self)):
            try:
                image, rec = self._load(index)
                break
            except ImageReadError as e:
                # in training a bad image is replaced by the next one; evaluation must see
                # every image, so there it always stops
                if not (self.skip_bad_images and self.train):
                    raise
                self._bad_images += 1
                logger.warning("skipping bad image (%d in this process): %s", self._bad_images, e)
                index = (index + 1) % len(self)
        else:
            raise ImageReadError(f"no readable image in {self.images_dir}")
        tensor, boxes, kept = self.transform(image, rec["boxes"], seed=seed)
        target = {
            "boxes": torch.from_numpy(np.array(boxes, dtype=np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(rec["labels"][kept].astype(np.int64)),
            "image_id": rec["image_id"],
            "orig_size": (int(image.shape[0]), int(image.shape[1])),
        }
        if not self.train:
            target["iscrowd"] = torch.from_numpy(rec["iscrowd"][kept].astype(np.int64))
        return tensor, target

    def __repr__(self) -> str:
        return (
            f"COCODataset({self.annotations_path}, {self.images_dir}, train={self.train}, "
            f"{len(self)} images, {self.num_classes} classes)"
        )
