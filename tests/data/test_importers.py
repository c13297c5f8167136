"""YOLO and LabelMe imports: the same boxes as the COCO ground truth they were written from, and
every quirk counted or refused with the file and line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from detection.data import COCODataset
from detection.data.labelme import convert_labelme
from detection.data.voc import convert_voc
from detection.data.yolo import convert_yolo, label_path

NAMES = ["cat", "dog", "zebra"]


def ground_truth(seed: int = 0, n: int = 4) -> list[tuple[str, int, int, list]]:
    """[(stem, width, height, [(class 0..2, x, y, w, h), ...])] with boxes inside the image."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = int(rng.integers(40, 90)), int(rng.integers(30, 70))
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            boxes.append((int(rng.integers(0, 3)), float(x), float(y), float(bw), float(bh)))
        out.append((f"img{i}", w, h, boxes))
    return out


def save_image(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 127, np.uint8)).save(path)


def write_yolo(root: Path, gt, sub: str = "train") -> None:
    for stem, w, h, boxes in gt:
        save_image(root / "images" / sub / f"{stem}.jpg", w, h)
        lines = [
            f"{c} {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}"
            for c, x, y, bw, bh in boxes
        ]
        (root / "labels" / sub).mkdir(parents=True, exist_ok=True)
        (root / "labels" / sub / f"{stem}.txt").write_text("\n".join(lines) + "\n")


def write_labelme(folder: Path, gt) -> None:
    for stem, w, h, boxes in gt:
        save_image(folder / f"{stem}.png", w, h)
        shapes = [
            {"label": NAMES[c], "points": [[x + bw, y + bh], [x, y]], "shape_type": "rectangle"}
            for c, x, y, bw, bh in boxes
        ]
        doc = {"imagePath": f"{stem}.png", "imageWidth": w, "imageHeight": h, "shapes": shapes}
        (folder / f"{stem}.json").write_text(json.dumps(doc))


def boxes_by_image(coco: dict) -> dict[str, list]:
    stem = {im["id"]: Path(im["file_name"]).stem for im in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    out: dict[str, list] = {s: [] for s in stem.values()}
    for a in coco["annotations"]:
        out[stem[a["image_id"]]].append((names[a["category_id"]], *a["bbox"]))
    return out


def expected(gt) -> dict[str, list]:
    return {
        stem: [(NAMES[c], x, y, bw, bh) for c, x, y, bw, bh in boxes] for stem, _, _, boxes in gt
    }


def assert_same_boxes(coco: dict, gt) -> None:
    got, want = boxes_by_image(coco), expected(gt)
    assert sorted(got) == sorted(want)
    for stem in want:
        assert len(got[stem]) == len(want[stem])
        for g, w in zip(got[stem], want[stem], strict=True):
            assert g[0] == w[0]
            np.testing.assert_allclose(g[1:], w[1:], atol=1e-4)


def test_yolo_ultralytics_layout_gives_the_ground_truth(tmp_path):
    gt_train, gt_val = ground_truth(0), ground_truth(1, 2)
    write_yolo(tmp_path, gt_train, "train")
    write_yolo(tmp_path, gt_val, "val")
    spec = {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        "names": {0: "cat", 1: "dog", 2: "zebra"},
    }
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(spec))
    coco, report = convert_yolo(tmp_path, "train")
    assert_same_boxes(coco, gt_train)
    assert [c["name"] for c in coco["categories"]] == NAMES and report.num_skipped == 0
    val, _ = convert_yolo(tmp_path, "val")
    assert_same_boxes(val, gt_val)
    # pycocotools reads it, and the dataset finds the images under the split's folder
    out = tmp_path / "train.json"
    out.write_text(json.dumps(coco))
    ds = COCODataset(out, tmp_path / "images" / "train", train=False)
    assert len(ds) == len(gt_train) and ds.class_names == NAMES


def test_yolo_classes_txt_without_splits(tmp_path):
    gt = ground_truth(2)
    write_yolo(tmp_path, gt, "")
    (tmp_path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    coco, _ = convert_yolo(tmp_path)
    assert_same_boxes(coco, gt)


def test_yolo_quirks_are_counted_with_file_and_line(tmp_path):
    write_yolo(tmp_path, ground_truth(3, 2), "train")
    (tmp_path / "classes.txt").write_text("\n".join(NAMES))
    labels = tmp_path / "labels" / "train"
    save_image(tmp_path / "images" / "train" / "bad.jpg", 100, 50)
    (labels / "bad.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"  # fine
        "1 0.5 0.5 0 0.2\n"  # no width
        "2 1.5 0.5 0.2 0.2\n"  # wholly right of the image
        "0 0.95 0.5 0.2 0.2\n"  # half outside: clipped
        "1 nan 0.5 0.2 0.2\n"  # not finite
    )
    save_image(tmp_path / "images" / "train" / "empty.jpg", 20, 20)
    (labels / "empty.txt").write_text("")
    save_image(tmp_path / "images" / "train" / "nolabel.jpg", 20, 20)
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    coco, report = convert_yolo(tmp_path, "train")
    assert report.counts == {
        "non_positive_size": 1,
        "outside_image": 1,
        "clipped": 1,
        "non_finite": 1,
        "empty_image": 2,
        "label_without_image": 1,
    }
    assert report.examples["outside_image"] == [f"{labels / 'bad.txt'}:3"]
    assert report.examples["label_without_image"] == [str(labels / "orphan.txt")]
    clipped = [a["bbox"] for a in coco["annotations"] if a["bbox"][0] == pytest.approx(85.0)]
    assert clipped and clipped[0][2] == pytest.approx(15.0)  # x 85..100 of 85..105
    assert "outside its image" in report.format() and "bad.txt:3" in report.format()


@pytest.mark.parametrize(
    "line, message",
    [
        ("3 0.5 0.5 0.1 0.1", "class id 3 is not in 0..2"),
        ("0 0.5 0.5", "expected 'class cx cy w h'"),
        ("a b c d e", "not numbers"),
    ],
)
def test_yolo_bad_lines_are_errors_naming_file_and_line(tmp_path, line, message):
    write_yolo(tmp_path, ground_truth(4, 1), "train")
    (tmp_path / "classes.txt").write_text("\n".join(NAMES))
    label = label_path(tmp_path / "images" / "train" / "img0.jpg")
    label.write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(ValueError, match=message) as err:
        convert_yolo(tmp_path, "train")
    assert f"{label}:2" in str(err.value)


def test_yolo_without_a_class_list_says_what_it_looked_for(tmp_path):
    write_yolo(tmp_path, ground_truth(5, 1))
    with pytest.raises(FileNotFoundError, match="data.yaml .* classes.txt"):
        convert_yolo(tmp_path)


def test_labelme_rectangles_and_polygons(tmp_path):
    gt = ground_truth(6)
    write_labelme(tmp_path, gt)
    coco, report = convert_labelme(tmp_path, categories=NAMES)
    assert_same_boxes(coco, gt)
    assert report.num_skipped == 0
    # a polygon becomes its bounding box; a circle is counted and skipped
    doc = json.loads((tmp_path / "img0.json").read_text())
    doc["shapes"] = [
        {"label": "dog", "points": [[3, 4], [20, 6], [11, 25]], "shape_type": "polygon"},
        {"label": "dog", "points": [[5, 5], [9, 9]], "shape_type": "circle"},
    ]
    (tmp_path / "img0.json").write_text(json.dumps(doc))
    coco, report = convert_labelme(tmp_path, categories=NAMES)
    got = boxes_by_image(coco)["img0"]
    assert got == [("dog", 3.0, 4.0, 17.0, 21.0)]
    assert report.counts == {"unsupported_shape": 1}
    assert "img0.json: shape 2 (circle)" in report.examples["unsupported_shape"][0]


def test_labelme_categories_from_the_labels_and_quirks(tmp_path):
    gt = ground_truth(7, 3)
    write_labelme(tmp_path, gt)
    (tmp_path / "img1.png").unlink()  # a LabelMe file without its image
    doc = json.loads((tmp_path / "img2.json").read_text())
    doc["shapes"] = []
    (tmp_path / "img2.json").write_text(json.dumps(doc))
    coco, report = convert_labelme(tmp_path)
    used = sorted({NAMES[c] for c, *_ in gt[0][3]})
    assert [c["name"] for c in coco["categories"]] == used
    assert report.counts == {"missing_image": 1, "empty_image": 1}
    assert len(coco["images"]) == 2


def test_labelme_unknown_label_and_wrong_size_are_errors(tmp_path):
    write_labelme(tmp_path, ground_truth(8, 1))
    with pytest.raises(ValueError, match="shape 1: label .* not among the categories"):
        convert_labelme(tmp_path, categories=["giraffe"])
    doc = json.loads((tmp_path / "img0.json").read_text())
    doc["imageWidth"] += 1
    (tmp_path / "img0.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="differs from the image"):
        convert_labelme(tmp_path, categories=NAMES)


def test_bccd_yolo_copy_imports_as_the_voc_original(tmp_path):
    """Real photos: BCCD's test split through VOC and through a YOLO copy written by an
    independent script gives the same 945 boxes."""
    root = os.environ.get("RESDET_BCCD")
    if not root:
        pytest.skip("set RESDET_BCCD to the bccd VOC folder to run this")
    script = Path(__file__).resolve().parents[2] / "docs" / "examples" / "voc_to_yolo.py"
    subprocess.run([sys.executable, str(script), root, str(tmp_path), "test"], check=True)
    yolo, report = convert_yolo(tmp_path, "test")
    voc = convert_voc(root, image_set=Path(root) / "ImageSets" / "Main" / "test.txt")
    assert report.num_skipped == 0 and "clipped" not in report.counts
    assert [c["name"] for c in yolo["categories"]] == [c["name"] for c in voc["categories"]]

    def boxes(coco):
        stem = {im["id"]: Path(im["file_name"]).stem for im in coco["images"]}
        # sorted by rounded corners: rounding differences must not reorder equal boxes
        return sorted(
            ((stem[a["image_id"]], a["category_id"], *np.round(a["bbox"], 1)), a["bbox"])
            for a in coco["annotations"]
        )

    got, want = boxes(yolo), boxes(voc)
    assert len(got) == len(want) == 945
    for (g_key, g_box), (w_key, w_box) in zip(got, want, strict=True):
        assert g_key[:2] == w_key[:2]
        np.testing.assert_allclose(g_box, w_box, atol=1e-6)


def test_the_commands_write_the_json_and_say_what_was_skipped(tmp_path, capsys):
    from detection.cli import convert_labelme as labelme_cli
    from detection.cli import convert_yolo as yolo_cli

    write_yolo(tmp_path / "y", ground_truth(9, 2), "val")
    (tmp_path / "y" / "classes.txt").write_text("\n".join(NAMES))
    (tmp_path / "y" / "labels" / "val" / "img0.txt").write_text("1 0.5 0.5 0 0.1\n")
    argv = [
        "--yolo-root",
        str(tmp_path / "y"),
        "--split",
        "val",
        "--output",
        str(tmp_path / "y.json"),
    ]
    assert yolo_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "skipped: 1 x box with zero or negative width or height" in out and "img0.txt:1" in out
    # a val split is for evaluation: the hint names data.test
    assert f"data.test.images={tmp_path / 'y' / 'images' / 'val'}" in out
    assert len(json.loads((tmp_path / "y.json").read_text())["images"]) == 2

    write_labelme(tmp_path / "l", ground_truth(10, 2))
    argv = ["--labelme-dir", str(tmp_path / "l"), "--output", str(tmp_path / "l.json"),
            "--categories", "giraffe"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_status:
        labelme_cli.main(argv)
    assert exit_status.value.code == 1 and "not among the categories" in capsys.readouterr().err
