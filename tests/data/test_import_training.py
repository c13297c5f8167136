"""The same images and boxes given as COCO json, as a YOLO folder and as LabelMe files train to
the same AP with the same config and seed, num_classes taken from the data each time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from detection.config import load_config
from detection.data.labelme import convert_labelme
from detection.data.yolo import convert_yolo
from detection.engine.trainer import Trainer
from detection.evaluation import training_evaluator

pytestmark = pytest.mark.slow


def subset(ann: Path, n: int, out: Path) -> Path:
    coco = json.loads(ann.read_text())
    coco["images"] = coco["images"][:n]
    keep = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    out.write_text(json.dumps(coco))
    return out


def as_yolo(coco: dict, images: Path, root: Path) -> None:
    """A YOLO folder of `coco` (written here, independently of the importer)."""
    order = [c["id"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for im in coco["images"]:
        os.symlink(images / im["file_name"], root / "images" / "train" / Path(im["file_name"]).name)
        w, h = im["width"], im["height"]
        lines = [
            f"{order.index(a['category_id'])} {(x + bw / 2) / w!r} {(y + bh / 2) / h!r} "
            f"{bw / w!r} {bh / h!r}"
            for a in coco["annotations"]
            if a["image_id"] == im["id"]
            for x, y, bw, bh in [a["bbox"]]
        ]
        label = root / "labels" / "train" / f"{Path(im['file_name']).stem}.txt"
        label.write_text("".join(line + "\n" for line in lines))
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    (root / "classes.txt").write_text("\n".join(names) + "\n")


def as_labelme(coco: dict, images: Path, folder: Path) -> None:
    """One LabelMe file per image of `coco`, beside a link to the image."""
    folder.mkdir(parents=True)
    name = {c["id"]: c["name"] for c in coco["categories"]}
    for im in coco["images"]:
        image = Path(im["file_name"]).name
        os.symlink(images / im["file_name"], folder / image)
        shapes = [
            {"label": name[a["category_id"]], "shape_type": "rectangle",
             "points": [[x, y], [x + bw, y + bh]]}
            for a in coco["annotations"]
            if a["image_id"] == im["id"]
            for x, y, bw, bh in [a["bbox"]]
        ]  # fmt: skip
        doc = {"imagePath": image, "imageWidth": im["width"], "imageHeight": im["height"],
               "shapes": shapes}  # fmt: skip
        (folder / f"{Path(image).stem}.json").write_text(json.dumps(doc))


def train_and_evaluate(config: Path, train_json: Path, images: Path, test: list[str], out: Path):
    overrides = [
        "model.roi_heads.num_classes=null",
        "data.train.name=null",
        f"data.train.annotations={train_json}",
        f"data.train.images={images}",
        *test,
        "solver.max_iter=4",
        "test.eval_period=0",  # the final evaluation
        f"output_dir={out}",
    ]
    cfg = load_config(config, overrides)
    lines = []
    trainer = Trainer(cfg, log=lines.append, evaluate=training_evaluator(cfg, 0, 1))
    result = trainer.train()
    assert any(
        line.startswith("model.roi_heads.num_classes=5 from the training data") for line in lines
    )
    return json.loads((out / "eval" / "metrics.json").read_text())["bbox"], result


def test_yolo_and_labelme_train_like_coco(tiny_config, datasets_root, tmp_path):
    config, _ = tiny_config
    train_ann = datasets_root / "shapes" / "annotations" / "instances_train.json"
    train_images = datasets_root / "shapes" / "train"
    val = subset(datasets_root / "shapes/annotations/instances_val.json", 6, tmp_path / "val.json")
    test = ["data.test.name=null", f"data.test.annotations={val}",
            f"data.test.images={datasets_root / 'shapes' / 'val'}"]  # fmt: skip
    coco_json = subset(train_ann, 12, tmp_path / "train.json")
    coco = json.loads(coco_json.read_text())

    as_yolo(coco, train_images, tmp_path / "yolo")
    yolo, yolo_report = convert_yolo(tmp_path / "yolo", "train")
    (tmp_path / "yolo.json").write_text(json.dumps(yolo))
    as_labelme(coco, train_images, tmp_path / "labelme")
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    labelme, labelme_report = convert_labelme(tmp_path / "labelme", categories=names)
    (tmp_path / "labelme.json").write_text(json.dumps(labelme))
    assert yolo_report.num_skipped == labelme_report.num_skipped == 0

    ref, _ = train_and_evaluate(config, coco_json, train_images, test, tmp_path / "coco_run")
    from_yolo, _ = train_and_evaluate(
        config, tmp_path / "yolo.json", tmp_path / "yolo" / "images" / "train", test,
        tmp_path / "yolo_run",
    )  # fmt: skip
    from_labelme, _ = train_and_evaluate(
        config, tmp_path / "labelme.json", tmp_path / "labelme", test, tmp_path / "labelme_run"
    )
    for key in ("AP", "AP50", "AP75"):
        assert from_yolo[key] == pytest.approx(ref[key], abs=1e-6), key
        assert from_labelme[key] == pytest.approx(ref[key], abs=1e-6), key
