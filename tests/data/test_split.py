"""tools/split_dataset.py and detection.data.split: splits by image, class subsets, no copies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from detection.cli import split as split_dataset
from detection.data.split import class_counts, keep_classes, split_coco, val_indices
from detection.data.voc import convert_voc

RACCOON = os.environ.get("RESDET_RACCOON", "")


def _coco(n_images: int = 12) -> dict:
    """Image i holds i % 3 + 1 boxes, cycling through 3 categories with non-contiguous ids."""
    cats = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "bird"}]
    images = [{"id": 100 + i, "file_name": f"im{i}.jpg", "width": 50, "height": 40}
              for i in range(n_images)]  # fmt: skip
    anns, k = [], 0
    for i in range(n_images):
        for j in range(i % 3 + 1):
            cat = cats[(i + j) % 3]["id"]
            anns.append({"id": k, "image_id": 100 + i, "category_id": cat,
                         "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0})  # fmt: skip
            k += 1
    return {"images": images, "annotations": anns, "categories": cats, "info": {"x": 1}}


def test_every_kth_image_goes_to_val_with_all_its_boxes():
    data = _coco(12)
    assert val_indices(12, every=5) == [4, 9]
    train, val = split_coco(data, val_indices(12, every=5))
    assert [im["id"] for im in val["images"]] == [104, 109]
    assert len(train["images"]) == 10
    # every box follows its image; none lost, none duplicated
    assert {a["image_id"] for a in val["annotations"]} == {104, 109}
    ids = sorted(a["id"] for a in train["annotations"] + val["annotations"])
    assert ids == sorted(a["id"] for a in data["annotations"])
    assert train["categories"] == val["categories"] == data["categories"]
    assert train["info"] == {"x": 1}


def test_random_fraction_is_seeded_and_disjoint():
    a = val_indices(100, val_fraction=0.2, seed=3)
    assert len(a) == 20 and len(set(a)) == 20
    assert a == val_indices(100, val_fraction=0.2, seed=3)
    assert a != val_indices(100, val_fraction=0.2, seed=4)
    assert val_indices(10, val_fraction=0.0) == []


@pytest.mark.parametrize(
    "kwargs", [{}, {"every": 1}, {"val_fraction": 1.0}, {"every": 5, "val_fraction": 0.1}]
)
def test_bad_split_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        val_indices(10, **kwargs)


def test_keep_classes_drops_other_boxes_and_keeps_ids():
    data = _coco(12)
    sub = keep_classes(data, ["bird", "cat"])
    assert [c["name"] for c in sub["categories"]] == ["cat", "bird"]  # the file's order and ids
    assert {a["category_id"] for a in sub["annotations"]} == {3, 9}
    assert len(sub["images"]) == 12  # images left without boxes stay, as background
    expected = {name: (imgs, boxes) for name, imgs, boxes in class_counts(data)}
    assert {n: (i, b) for n, i, b in class_counts(sub)} == {
        "cat": expected["cat"],
        "bird": expected["bird"],
    }
    with pytest.raises(ValueError, match="did you mean 'dog'"):
        keep_classes(data, ["dgo"])


def test_tool_writes_both_splits_and_prints_counts(tmp_path, capsys):
    src = tmp_path / "ann.json"
    src.write_text(json.dumps(_coco(10)))
    out = tmp_path / "split"
    assert split_dataset.main([str(src), "--out-dir", str(out), "--every", "5"]) == 0
    train = json.loads((out / "train.json").read_text())
    val = json.loads((out / "val.json").read_text())
    assert len(train["images"]) == 8 and len(val["images"]) == 2
    text = capsys.readouterr().out
    assert f"wrote {out / 'val.json'}: 2 images" in text
    for name, images, boxes in class_counts(val):
        assert f"  {name:<20} {images:>6} images {boxes:>7} boxes" in text
    assert set(tmp_path.iterdir()) == {src, out}  # no image copied, nothing else written


def test_tool_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "ann.json"
    src.write_text(json.dumps(_coco(4)))
    out = tmp_path / "out"
    for argv in (
        [str(src), "--out-dir", str(out), "--classes", "unicorn"],
        [str(tmp_path / "missing.json"), "--out-dir", str(out)],
        [str(src), "--out-dir", str(out), "--every", "1"],
        [str(src), "--out-dir", str(tmp_path)],  # would overwrite the input
    ):
        with pytest.raises(SystemExit) as e:
            split_dataset.main(argv)
        assert e.value.code == 2
        assert "error:" in capsys.readouterr().err
    assert not out.exists()
    assert json.loads(src.read_text()) == _coco(4)


@pytest.mark.skipif(not RACCOON, reason="set RESDET_RACCOON to the raccoon dataset folder")
def test_raccoon_agreed_split_is_160_40():
    """The raccoon README's split: sorted by annotation file, every 5th image to val."""
    coco = convert_voc(
        RACCOON, images_subdir="images", annotations_subdir="annotations", image_set=None
    )
    train, val = split_coco(coco, val_indices(len(coco["images"]), every=5))
    assert (len(train["images"]), len(val["images"])) == (160, 40)
    xmls = sorted(p.stem for p in (Path(RACCOON) / "annotations").glob("*.xml"))
    assert [Path(im["file_name"]).stem for im in val["images"]] == xmls[4::5]
