"""The embedded synthetic dataset: deterministic, valid COCO, race-safe generation."""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from detection.config import load_config
from detection.data import SHAPES_CLASSES, build_dataset, generate_shapes
from detection.data.shapes import render_shapes_image

SHAPES_CONFIG = Path(__file__).resolve().parents[2] / "configs/shapes/Base-shapes.yaml"


def load(ann):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann))


def test_generation_is_deterministic_and_valid_coco(tmp_path):
    ann_a, img_a = generate_shapes(tmp_path / "a", "train", 20, seed=3, progress=False)
    ann_b, img_b = generate_shapes(tmp_path / "b", "train", 20, seed=3, progress=False)
    assert ann_a.read_bytes() == ann_b.read_bytes()
    files = sorted(p.name for p in img_a.iterdir())
    assert files == sorted(p.name for p in img_b.iterdir()) and len(files) == 20
    assert all((img_a / f).read_bytes() == (img_b / f).read_bytes() for f in files)
    assert not [p for p in ann_a.parent.parent.iterdir() if p.name.startswith(".tmp")]

    coco = load(ann_a)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES_CLASSES)
    boxes = np.array([a["bbox"] for a in coco.dataset["annotations"]], np.float64)
    sizes = {i["id"]: (i["width"], i["height"]) for i in coco.dataset["images"]}
    wh = np.array([sizes[a["image_id"]] for a in coco.dataset["annotations"]])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
    assert (boxes[:, :2] + boxes[:, 2:] <= wh).all()
    assert all(320 >= min(s) >= 240 and 400 >= max(s) >= 320 for s in sizes.values())
    assert len(boxes) >= 40 and len(np.unique(boxes[:, 2] / boxes[:, 3])) > 10
    other = generate_shapes(tmp_path / "c", "train", 20, seed=4, progress=False)[0]
    assert other.read_bytes() != ann_a.read_bytes()


def test_boxes_are_the_visible_extent_of_the_objects():
    occluded = 0
    for index in range(30):
        img, objects, instances = render_shapes_image(seed=9, index=index, with_instances=True)
        assert instances.shape == img.shape[:2]
        for obj in objects:
            ys, xs = np.nonzero(instances == obj["instance"])
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            assert obj["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert obj["area"] == len(xs) >= 0.4 * obj["full_area"]
            occluded += obj["area"] < obj["full_area"]
    assert occluded > 5


def _generate(root):
    generate_shapes(root, "val", 25, seed=2, progress=False)


def test_concurrent_generation_does_not_corrupt(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_generate, args=(tmp_path / "root",)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ann, images = generate_shapes(tmp_path / "ref", "val", 25, seed=2, progress=False)
    raced = tmp_path / "root" / "shapes"
    assert (raced / "annotations" / "instances_val.json").read_bytes() == ann.read_bytes()
    for f in images.iterdir():
        assert (raced / "val" / f.name).read_bytes() == f.read_bytes()
    assert sorted(p.name for p in raced.iterdir()) == ["annotations", "val"]


def test_build_dataset_generates_on_first_use(tiny_shapes):
    cfg = load_config(SHAPES_CONFIG)
    assert cfg.model.roi_heads.num_classes == len(SHAPES_CLASSES)
    train = build_dataset(cfg, "train")
    assert (tiny_shapes / "shapes" / "annotations" / "instances_train.json").is_file()
    assert train.class_names == list(SHAPES_CLASSES) and 0 < len(train) <= 24
    mtime = train.annotations_path.stat().st_mtime_ns
    again = build_dataset(cfg, "train")  # already there: not regenerated
    assert again.annotations_path.stat().st_mtime_ns == mtime
    test = build_dataset(cfg, "test")
    assert len(test) == 10 and not test.train
    with pytest.raises(ValueError, match="split must be"):
        build_dataset(cfg, "val")
