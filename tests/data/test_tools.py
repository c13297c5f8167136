"""tools/convert_voc.py and tools/browse_dataset.py."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from detection.cli import browse as browse_dataset
from detection.cli import convert_voc
from detection.data import COCODataset

VOC_OBJECTS = {  # image stem -> (width, height, [(name, difficult, xmin, ymin, xmax, ymax)])
    "000001": (60, 40, [("dog", 0, 1, 1, 20, 30), ("person", 1, 30, 5, 59, 39)]),
    "000002": (50, 50, [("cat", 0, 10, 10, 40, 45)]),
    "000003": (40, 30, []),
    "000004": (
        45,
        35,
        [("dog", 0, 5, 5, 15, 15), ("dog", 0, 20, 5, 44, 34), ("person", 0, 2, 20, 10, 35)],
    ),
}

SHAPES_CONFIG = Path(__file__).resolve().parents[2] / "configs/shapes/Base-shapes.yaml"


def make_voc(root):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for stem, (w, h, objects) in VOC_OBJECTS.items():
        Image.new("RGB", (w, h), (120, 60, 30)).save(root / "JPEGImages" / f"{stem}.jpg")
        objs = "".join(
            f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated>"
            f"<difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for n, d, x1, y1, x2, y2 in objects
        )
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{stem}.jpg</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{objs}</annotation>"
        )
    return root


def image_size(path):
    with Image.open(path) as image:
        return image.size


def run(main, argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


def test_convert_voc_accounts_for_every_object(tmp_path):
    voc = make_voc(tmp_path / "VOC2007")
    output = tmp_path / "out" / "instances.json"
    rc, text = run(convert_voc.main, ["--voc-root", str(voc), "--output", str(output)])
    assert rc == 0 and "4 images, 6 boxes (1 difficult as iscrowd)" in text
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(output))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert sorted(names.values()) == ["cat", "dog", "person"]
    images = {im["file_name"]: im for im in coco.loadImgs(coco.getImgIds())}
    assert len(images) == len(VOC_OBJECTS)
    for stem, (w, h, objects) in VOC_OBJECTS.items():
        image = images[f"{stem}.jpg"]
        assert (image["width"], image["height"]) == (w, h)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=None))
        got = sorted((names[a["category_id"]], a["iscrowd"], *a["bbox"]) for a in anns)
        want = sorted(
            (n, d, x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1) for n, d, x1, y1, x2, y2 in objects
        )
        assert got == want
    ds = COCODataset(output, voc / "JPEGImages", train=False)
    assert len(ds) == 4 and ds[0][1]["boxes"].tolist()[0] == [0.0, 0.0, 20.0, 30.0]

    dropped = tmp_path / "dropped.json"
    argv = ["--voc-root", str(voc), "--output", str(dropped), "--difficult", "drop"]
    argv += ["--categories", "person,dog,cat"]
    assert run(convert_voc.main, argv)[0] == 0
    data = json.loads(dropped.read_text())
    assert len(data["annotations"]) == 5 and not any(a["iscrowd"] for a in data["annotations"])
    assert [c["name"] for c in data["categories"]] == ["person", "dog", "cat"]


def test_convert_voc_unknown_class_is_an_error(tmp_path, capsys):
    voc = make_voc(tmp_path / "VOC")
    with pytest.raises(SystemExit) as e:
        convert_voc.main(
            ["--voc-root", str(voc), "--output", str(tmp_path / "x.json"), "--categories", "dog"]
        )
    assert e.value.code == 1
    assert "object class 'person' is not among the categories" in capsys.readouterr().err


def test_browse_dataset_writes_images(tiny_shapes, tmp_path):
    out = tmp_path / "browse"
    argv = ["--config", str(SHAPES_CONFIG), "--output", str(out), "--num", "3"]
    rc, text = run(browse_dataset.main, [*argv, "input.min_size_train=[100]"])
    assert rc == 0 and "resolved config:" in text and "wrote 3 images" in text
    written = sorted(out.glob("train_*.jpg"))
    assert len(written) == 3 and all(min(image_size(p)) == 100 for p in written)
    rc, _ = run(browse_dataset.main, [*argv, "--split", "test", "input.min_size_test=160"])
    tests = list(out.glob("test_*.jpg"))
    assert rc == 0 and len(tests) == 3 and all(min(image_size(p)) == 160 for p in tests)
