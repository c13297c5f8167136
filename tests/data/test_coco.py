"""COCODataset against a pycocotools reading of the same json, image decoding, errors."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from detection.data import COCODataset, ImageReadError, RecordStore, read_image


def reference_targets(
    ann_path, train: bool
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """image id -> (xyxy boxes, labels, iscrowd) following the documented rules, one box at a
    time through pycocotools (the slow, obvious way)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_path))
    cat_ids = sorted(coco.getCatIds())
    out = {}
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        boxes, labels, crowd = [], [], []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            x, y, w, h = ann["bbox"]
            if train and ann["iscrowd"]:
                continue
            if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                continue
            x1, y1 = min(max(x, 0), info["width"]), min(max(y, 0), info["height"])
            x2, y2 = min(max(x + w, 0), info["width"]), min(max(y + h, 0), info["height"])
            if x2 <= x1 or y2 <= y1:
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(cat_ids.index(ann["category_id"]) + 1)
            crowd.append(ann["iscrowd"])
        if train and not boxes:
            continue
        out[image_id] = (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels), crowd)
    return out


@pytest.mark.parametrize("train", [True, False])
def test_targets_match_pycocotools(messy_coco, train):
    ann, images = messy_coco
    ds = COCODataset(ann, images, train=train)
    expected = reference_targets(ann, train)
    assert list(ds.image_ids) == list(expected)
    assert ds.class_names == ["cat", "dog", "zebra"]  # category id order 3, 7, 42
    assert ds.label_to_category_id == {1: 3, 2: 7, 3: 42}
    assert ds.category_id_to_label == {3: 1, 7: 2, 42: 3}
    for i in range(len(ds)):
        image, target = ds[i]
        boxes, labels, crowd = expected[target["image_id"]]
        torch.testing.assert_close(target["boxes"], torch.from_numpy(boxes))
        assert target["labels"].dtype == torch.int64
        assert target["labels"].tolist() == labels.tolist()
        if not train:
            assert target["iscrowd"].tolist() == crowd
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert tuple(image.shape[1:]) == tuple(target["orig_size"])
        info = json.loads(ann.read_text())["images"]
        size = next((im["height"], im["width"]) for im in info if im["id"] == target["image_id"])
        assert tuple(target["orig_size"]) == size


def test_drop_counts_and_report(messy_coco, caplog):
    ann, images = messy_coco
    with caplog.at_level(logging.INFO, logger="detection.data"):
        train = COCODataset(ann, images, train=True)
    assert train.drop_counts == {
        "invalid_annotation": 0,
        "bad_image_entry": 0,
        "missing_file": 0,
        "empty_file": 0,
        "crowd": 2,
        "non_finite": 1,
        "non_positive_size": 2,
        "outside_image": 1,
        "empty_image": 2,
    }
    reports = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(reports) == 1 and reports[0].levelno == logging.WARNING
    assert "'non_positive_size': 2" in reports[0].getMessage()

    evaluation = COCODataset(ann, images, train=False)
    assert evaluation.drop_counts["crowd"] == 0 and evaluation.drop_counts["empty_image"] == 0
    assert len(evaluation) == 5
    kept = COCODataset(ann, images, train=True, filter_empty=False)
    assert len(kept) == 5 and kept[3][1]["boxes"].shape == (0, 4)


def test_grayscale_rgba_palette_decoded_as_rgb(messy_coco):
    ann, images = messy_coco
    ds = COCODataset(ann, images, train=False)
    by_id = {int(i): k for k, i in enumerate(ds.image_ids)}
    gray, _ = ds[by_id[11]]
    assert gray.shape == (3, 40, 50)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    expected = np.asarray(Image.open(images / "gray.png"), dtype=np.float32) / 255
    torch.testing.assert_close(gray[0], torch.from_numpy(expected))
    rgba, _ = ds[by_id[12]]
    rgb = np.asarray(Image.open(images / "rgba.png"))[..., :3].astype(np.float32) / 255
    torch.testing.assert_close(rgba, torch.from_numpy(rgb).permute(2, 0, 1))
    palette, _ = ds[by_id[14]]
    assert palette.shape == (3, 20, 30)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # a white band on the left of the stored pixels
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: display = 90 degrees clockwise
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    decoded = read_image(tmp_path / "rot.jpg")
    assert decoded.shape == (40, 20, 3)
    assert decoded[:10].mean() > 200 and decoded[12:].mean() < 30  # the band is now on top


def test_records_are_one_buffer(messy_coco):
    ann, images = messy_coco
    ds = COCODataset(ann, images, train=True)
    assert isinstance(ds.records, RecordStore)
    assert isinstance(ds.records.buffer, np.ndarray) and ds.records.buffer.ndim == 1
    for key in ds.records.keys():
        view = ds.records[key]
        assert isinstance(view, np.ndarray) and np.shares_memory(view, ds.records.buffer)
    assert not any(isinstance(v, list | dict) and len(v) > 10 for v in vars(ds).values())
    clone = pickle.loads(pickle.dumps(ds))
    for i in range(len(ds)):
        torch.testing.assert_close(clone[i][1]["boxes"], ds[i][1]["boxes"])


def test_missing_and_corrupt_images_named(messy_coco):
    ann, images = messy_coco
    ds = COCODataset(ann, images, train=False)
    (images / "rgb.jpg").unlink()
    (images / "gray.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"not found: .*rgb\.jpg \(image id 10\)"):
        ds[0]
    with pytest.raises(ImageReadError, match=r"cannot decode image .*gray\.png \(image id 11\)"):
        ds[1]
    skipping = COCODataset(ann, images, train=True, skip_bad_images=True)
    _, target = skipping[0]  # rgb.jpg and gray.png are bad: the next good image stands in
    assert target["image_id"] == 12


def test_size_mismatch_is_an_error(messy_coco):
    ann, images = messy_coco
    Image.new("RGB", (10, 10)).save(images / "rgb.jpg")
    with pytest.raises(ImageReadError, match=r"rgb\.jpg \(image id 10\) is 10x10 but .* 64x48"):
        COCODataset(ann, images, train=False)[0]


def test_invalid_annotations(messy_coco):
    ann, images = messy_coco
    data = json.loads(ann.read_text())
    data["annotations"].append(
        {"id": 99, "image_id": 10, "category_id": 5, "bbox": [1, 1, 2, 2], "iscrowd": 0}
    )
    data["annotations"].append(
        {"id": 100, "image_id": 777, "category_id": 3, "bbox": [1, 1, 2, 2], "iscrowd": 0}
    )
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation id 99: category id 5 is not in"):
        COCODataset(ann, images, train=True)
    ds = COCODataset(ann, images, train=True, skip_bad_images=True)
    assert ds.drop_counts["invalid_annotation"] == 2
    data["annotations"][0]["bbox"] = [1, 2, 3]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotation 1 has a missing or invalid 'bbox'"):
        COCODataset(ann, images, train=True)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="COCO annotation file not found"):
        COCODataset(tmp_path / "nope.json", tmp_path, train=True)


@pytest.mark.parametrize("name", ["../secret.jpg", "/etc/passwd", "a/../../b.jpg", "..\\x.jpg"])
def test_file_names_escaping_the_image_folder_are_refused(tmp_path, name):
    coco = {
        "images": [{"id": 7, "file_name": name, "width": 10, "height": 10}],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}],
    }
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="image id 7 has file_name .* leaves the image folder"):
        COCODataset(path, tmp_path, train=False)
    with pytest.raises(ValueError, match="leaves the image folder"):
        COCODataset(path, tmp_path, train=True, skip_bad_images=True)


@pytest.mark.parametrize("skip", [False, True])
def test_annotations_without_any_image_entry_are_an_error(tmp_path, skip):
    """Skipping cannot help a file whose 'images' is empty: a clear error, not an IndexError."""
    from detection.data.coco_index import load_coco_index

    path = tmp_path / "no_images.json"
    ann = {"id": 1, "image_id": 5, "category_id": 1, "bbox": [0, 0, 5, 5]}
    path.write_text(
        json.dumps({"images": [], "annotations": [ann], "categories": [{"id": 1, "name": "a"}]})
    )
    with pytest.raises(ValueError, match="1 annotations but no entries in 'images'"):
        load_coco_index(path, train=True, filter_empty=True, skip_bad_images=skip)
