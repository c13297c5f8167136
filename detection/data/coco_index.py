"""A COCO json -> compact records, in stages: read the file, index the categories and the
images, match and clean the annotations, pack what is kept into one RecordStore. Every box or
image left out is counted under a reason (DROP_REASONS)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
from pycocotools.coco import COCO

from .images import ImageReadError
from .records import RecordStore

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


@dataclass
class _Drops:
    """The count of every drop reason and the first few ids each one dropped."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    examples: dict[str, list[int]] = field(default_factory=dict)

    def note(self, reason: str, dropped: np.ndarray, ids: np.ndarray) -> None:
        """Count what `reason` drops and keep the first few image / annotation ids as examples."""
        self.counts[reason] = int(dropped.sum())
        if self.counts[reason]:
            self.examples[reason] = ids[dropped][:5].tolist()


@dataclass
class _Images:
    """The json's image entries as columns, in file order."""

    ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    file_names: list[str]
    bad: np.ndarray  # entries left out: no usable size or file name, missing or empty file


@dataclass
class _Annotations:
    """The json's annotations as columns, in file order; `bbox` is xywh."""

    ids: np.ndarray
    image_ids: np.ndarray
    category_ids: np.ndarray
    bbox: np.ndarray
    crowd: np.ndarray


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
    has zero bytes: one stat each, so that bad files surface before training starts."""
    missing = np.zeros(len(file_names), bool)
    empty = np.zeros(len(file_names), bool)
    for i in np.flatnonzero(check):
        try:
            empty[i] = os.stat(root / file_names[i]).st_size == 0
        except OSError:
            missing[i] = True
    return missing, empty


def _read_categories(data: dict, path: Path) -> tuple[np.ndarray, list[str]]:
    """(category ids in increasing order, their names): label k is the k-th id."""
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_ids = _column(cats, "id", np.int64, path, "category")
    if len(np.unique(cat_ids)) != len(cat_ids):
        raise ValueError(f"{path}: duplicate category ids {sorted(cat_ids.tolist())}")
    return cat_ids, [str(c.get("name", c["id"])) for c in cats]


def _read_images(data: dict, path: Path) -> _Images:
    """The image entries as columns; duplicate ids and file names that leave the image folder
    are errors (never skipped: they are a hostile or broken file, not noise)."""
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
        i = int(np.flatnonzero(escaping)[0])
        raise ValueError(
            f"{path}: image id {int(img_ids[i])} has file_name {file_names[i]!r}, which leaves "
            f"the image folder ({int(escaping.sum())} such images); file names must be relative "
            "paths inside it"
        )
    return _Images(img_ids, heights, widths, file_names, np.zeros(len(img_ids), bool))


def _check_image_entries(images: _Images, path: Path, skip: bool, drops: _Drops) -> None:
    """Mark entries without a file name or a positive size as bad; an error unless `skip`."""
    heights, widths, file_names = images.heights, images.widths, images.file_names
    bad = ~((heights > 0) & (widths > 0)) | np.array([not f for f in file_names], bool)
    if bad.any():
        if not skip:
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}: image id {int(images.ids[i])} ({file_names[i] or 'no file_name'}) needs "
                f"a file_name and positive width/height, has {widths[i]:g}x{heights[i]:g} "
                f"({int(bad.sum())} such images); fix the file or set data.skip_bad_images=true"
            )
        drops.note("bad_image_entry", bad, images.ids)
    images.bad |= bad


def _check_image_files(images: _Images, root: Path, skip: bool, drops: _Drops) -> None:
    """Mark the images whose file is missing or empty as bad; an error unless `skip`."""
    file_names = images.file_names
    missing, empty = _file_problems(root, file_names, ~images.bad)
    if (missing.any() or empty.any()) and not skip:
        i = int(np.flatnonzero(missing if missing.any() else empty)[0])
        what = "not found" if missing.any() else "empty (0 bytes)"
        raise ImageReadError(
            f"image file {what}: {root / file_names[i]} (image id {int(images.ids[i])}); "
            f"{int(missing.sum())} missing and {int(empty.sum())} "
            f"empty image files in {root}. Fix them (resdet check lists every "
            "problem) or set data.skip_bad_images=true to leave them out"
        )
    drops.note("missing_file", missing, images.ids)
    drops.note("empty_file", empty, images.ids)
    images.bad |= missing | empty


def _read_annotations(anns: list[dict], path: Path) -> _Annotations:
    """The annotations as columns (a missing id reads -1, a missing iscrowd 0)."""
    return _Annotations(
        ids=_column(anns, "id", np.int64, path, "annotation", default=-1),
        image_ids=_column(anns, "image_id", np.int64, path, "annotation"),
        category_ids=_column(anns, "category_id", np.int64, path, "annotation"),
        bbox=_column(anns, "bbox", np.float64, path, "annotation", shape=(4,)),
        crowd=_column(anns, "iscrowd", np.int64, path, "annotation", default=0) != 0,
    )


def _match_annotations(
    anns: _Annotations,
    images: _Images,
    cat_ids: np.ndarray,
    path: Path,
    skip: bool,
    drops: _Drops,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image row, category row, valid) of every annotation. An unknown image or category id
    is an error unless `skip`; annotations of bad image entries are not valid either."""
    if len(images.ids) == 0 and len(anns.ids) > 0:
        raise ValueError(
            f"{path}: {len(anns.ids)} annotations but no entries in 'images'; the file holds "
            "no usable image"
        )
    img_order = np.argsort(images.ids, kind="stable")
    img_index, img_found = _lookup(images.ids[img_order], img_order, anns.image_ids)
    cat_index, cat_found = _lookup(cat_ids, np.arange(len(cat_ids)), anns.category_ids)
    valid = img_found & cat_found
    if not valid.all():
        i = int(np.flatnonzero(~valid)[0])
        problem = (
            f"image id {int(anns.image_ids[i])} is not in 'images'"
            if not img_found[i]
            else f"category id {int(anns.category_ids[i])} is not in 'categories' "
            f"({cat_ids.tolist()})"
        )
        if not skip:
            raise ValueError(
                f"{path}: annotation id {int(anns.ids[i])}: {problem} "
                f"({int((~valid).sum())} such annotations); fix the file or set "
                "data.skip_bad_images=true to drop them"
            )
        drops.note("invalid_annotation", ~valid, anns.ids)
    valid &= ~images.bad[img_index]  # annotations of skipped image entries go with them
    return img_index, cat_index, valid


def _clean_boxes(
    anns: _Annotations,
    images: _Images,
    img_index: np.ndarray,
    keep: np.ndarray,
    train: bool,
    drops: _Drops,
) -> tuple[np.ndarray, np.ndarray]:
    """(keep, xyxy boxes clipped to their image): crowd boxes (training only), non-finite,
    non-positive and outside-the-image boxes are dropped and counted, in that order."""
    bbox, ids = anns.bbox, anns.ids
    keep = keep.copy()
    if train:
        dropped = keep & anns.crowd
        drops.note("crowd", dropped, ids)
        keep &= ~dropped
    finite = np.isfinite(bbox).all(axis=1)
    drops.note("non_finite", keep & ~finite, ids)
    keep &= finite
    with np.errstate(invalid="ignore"):
        positive = (bbox[:, 2] > 0) & (bbox[:, 3] > 0)
    drops.note("non_positive_size", keep & ~positive, ids)
    keep &= positive
    xyxy = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)
    img_w = images.widths[img_index][:, None]
    img_h = images.heights[img_index][:, None]
    with np.errstate(invalid="ignore"):
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, img_w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, img_h)
        inside = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    drops.note("outside_image", keep & ~inside, ids)
    keep &= inside
    return keep, xyxy


def _pack_records(
    images: _Images,
    anns: _Annotations,
    img_index: np.ndarray,
    cat_index: np.ndarray,
    keep: np.ndarray,
    xyxy: np.ndarray,
    drop_empty: bool,
    drops: _Drops,
) -> RecordStore:
    """The kept images (in file order, without boxes too unless `drop_empty`) and their kept
    annotations grouped by image, as one RecordStore."""
    boxes_per_image = np.bincount(img_index[keep], minlength=len(images.ids))
    keep_img = ~images.bad
    if drop_empty:
        empty = keep_img & (boxes_per_image == 0)
        drops.note("empty_image", empty, images.ids)
        keep_img &= ~empty
    ann_sel = np.flatnonzero(keep)
    ann_sel = ann_sel[np.argsort(img_index[ann_sel], kind="stable")]
    box_start = np.concatenate([[0], np.cumsum(boxes_per_image[keep_img])]).astype(np.int64)

    names = [images.file_names[i].encode("utf-8") for i in np.flatnonzero(keep_img)]
    name_start = np.concatenate([[0], np.cumsum([len(n) for n in names])]).astype(np.int64)
    return RecordStore(
        {
            "image_id": images.ids[keep_img],
            "height": images.heights[keep_img].astype(np.int32),
            "width": images.widths[keep_img].astype(np.int32),
            "box_start": box_start,
            "name_start": name_start,
            "names": np.frombuffer(b"".join(names), dtype=np.uint8),
            "boxes": xyxy[ann_sel].astype(np.float32),
            "labels": (cat_index[ann_sel] + 1).astype(np.int64),
            "iscrowd": anns.crowd[ann_sel].astype(np.uint8),
            "ann_id": anns.ids[ann_sel],
        }
    )


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
    drops = _Drops()
    cat_ids, class_names = _read_categories(data, path)
    images = _read_images(data, path)
    _check_image_entries(images, path, skip_bad_images, drops)
    if image_root is not None:
        _check_image_files(images, Path(image_root), skip_bad_images, drops)
    anns = _read_annotations(data.get("annotations") or [], path)
    del data  # the json's dicts are not needed past this point

    img_index, cat_index, valid = _match_annotations(
        anns, images, cat_ids, path, skip_bad_images, drops
    )
    keep, xyxy = _clean_boxes(anns, images, img_index, valid, train, drops)
    records = _pack_records(
        images, anns, img_index, cat_index, keep, xyxy, train and filter_empty, drops
    )
    return CocoIndex(records, class_names, cat_ids.tolist(), drops.counts, drops.examples)
