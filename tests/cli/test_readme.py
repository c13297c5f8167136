"""README.md and docs/: every command block of the README after its install step runs as
written, against the installed wheel (tests/cli/conftest.py), from a folder outside the
checkout; the README stays a front door (at most 250 lines); every relative link resolves.

The README test provides what the README assumes a user has and what the network would give:
photo.jpg, a Pascal VOC folder mydata/ with dogs and cats, COCO under ./datasets/coco (a few
synthetic images with COCO's 80 categories), the shapes sets cut to 8 images each, and
torchvision's ImageNet ResNet-101 and COCO Faster R-CNN in the torch hub cache (seeded random
weights in the published files' names and layouts; the COCO detector as resdet caches it once
converted). RESDET_OVERRIDES shortens every schedule and input size: the commands stay as
written, and each run says so in a warning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
import torchvision
from cli_helpers import SMALL, check, run, user_env
from helpers import ROOT
from PIL import Image

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert any(line.startswith("pip install -e .") for line in lines)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_links_resolve_and_pages_speak_about_the_software(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
    # how the work was organised belongs in commit messages, not in what users read
    assert not re.search(r"\bissues?\b", text, re.I), f"{page.name} speaks of issues"


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every bash and python block of README.md after its install section."""
    text = (ROOT / "README.md").read_text()
    install = text.index("\n## Install\n")
    after = text.index("\n## ", install + 1)
    return [
        (m.group(1), m.group(2))
        for m in re.finditer(r"```(bash|python)\n(.*?)```", text, re.S)
        if m.start() > after
    ]


def _standin_weights(hub: Path) -> None:
    """Files with the published weights' names and layouts (seeded random values): torchvision's
    ImageNet ResNet-101 where torchvision looks for it, and the COCO Faster R-CNN as resdet caches
    it once converted (class 1, person, scores high so that a photo gets boxes)."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from detection.modeling import zoo

    hub.mkdir(parents=True)
    torch.manual_seed(0)
    url = torchvision.models.ResNet101_Weights.IMAGENET1K_V1.url
    torch.save(torchvision.models.resnet101().state_dict(), hub / url.rsplit("/", 1)[1])
    detector = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():
        detector.roi_heads.box_predictor.cls_score.bias[1] = 12.0
    converted = zoo.torchvision_fpn_checkpoint(detector.state_dict())
    path = hub / "resdet" / zoo.converted_path(zoo.DETECTORS["fasterrcnn_resnet50_fpn_coco"]).name
    path.parent.mkdir()
    torch.save(converted, path)


def _coco_standin(datasets: Path, shapes: Path) -> None:
    """datasets/coco in COCO's layout: a few shapes images, COCO's 80 categories (ids 1..90)."""
    from detection.modeling.convert import coco_class_names

    categories = [
        {"id": i, "name": name} for i, name in enumerate(coco_class_names(), 1) if name != "N/A"
    ]
    source = json.loads((shapes / "annotations/instances_val.json").read_text())
    for split, images in (("train2017", source["images"][:4]), ("val2017", source["images"][4:6])):
        (datasets / "coco" / split).mkdir(parents=True)
        ids = {im["id"] for im in images}
        for im in images:
            shutil.copy(shapes / "val" / im["file_name"], datasets / "coco" / split)
        anns = [
            {**a, "category_id": categories[a["category_id"]]["id"]}
            for a in source["annotations"]
            if a["image_id"] in ids
        ]
        (datasets / "coco/annotations").mkdir(exist_ok=True)
        data = {"images": images, "annotations": anns, "categories": categories}
        (datasets / f"coco/annotations/instances_{split}.json").write_text(json.dumps(data))


def _small_shapes(folder: Path, shapes: Path, n: int = 8) -> None:
    """The shapes sets with their first n images each (the generator's json, cut), so that the
    demo's evaluations take seconds; the image folders are the full sets'."""
    (folder / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        os.symlink(shapes / split, folder / split)
        data = json.loads((shapes / f"annotations/instances_{split}.json").read_text())
        data["images"] = data["images"][:n]
        ids = {im["id"] for im in data["images"]}
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
        (folder / f"annotations/instances_{split}.json").write_text(json.dumps(data))


VOC_OBJECT = """<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>
<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def _voc_standin(folder: Path, shapes: Path) -> None:
    """mydata/: Annotations/*.xml and JPEGImages/*.jpg, 10 shapes images whose circles are dogs
    and whose squares are cats."""
    source = json.loads((shapes / "annotations/instances_train.json").read_text())
    names = {1: "dog", 2: "cat"}  # category ids of circle and square
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    for im in source["images"][:10]:
        objects = [
            VOC_OBJECT.format(
                name=names[a["category_id"]],
                x1=round(a["bbox"][0]) + 1,
                y1=round(a["bbox"][1]) + 1,
                x2=round(a["bbox"][0] + a["bbox"][2]),
                y2=round(a["bbox"][1] + a["bbox"][3]),
            )
            for a in source["annotations"]
            if a["image_id"] == im["id"] and a["category_id"] in names
        ]
        stem = Path(im["file_name"]).stem
        Image.open(shapes / "train" / im["file_name"]).convert("RGB").save(
            folder / "JPEGImages" / f"{stem}.jpg"
        )
        (folder / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{im['width']}</width>"
            f"<height>{im['height']}</height><depth>3</depth></size>{''.join(objects)}</annotation>"
        )


@pytest.mark.slow
def test_readme_command_blocks_run_as_written(installed, tmp_path, datasets_root):
    blocks = readme_blocks()
    assert len(blocks) >= 5 and any(lang == "python" for lang, _ in blocks)
    work = tmp_path / "user"
    (work / "datasets").mkdir(parents=True)
    _small_shapes(work / "datasets/shapes", datasets_root / "shapes")
    _coco_standin(work / "datasets", datasets_root / "shapes")
    _voc_standin(work / "mydata", datasets_root / "shapes")
    Image.open(next((datasets_root / "shapes/val").iterdir())).convert("RGB").save(
        work / "photo.jpg"
    )
    _standin_weights(tmp_path / "torch/hub/checkpoints")
    env = user_env(
        installed,
        TORCH_HOME=str(tmp_path / "torch"),
        RESDET_OVERRIDES=" ".join(SMALL),
        MPLBACKEND="Agg",
    )
    env.pop("RESDET_DATASETS", None)  # the README's default: ./datasets
    for i, (lang, code) in enumerate(blocks):
        start = time.perf_counter()
        if lang == "bash":
            r = run(["bash", "-euo", "pipefail", "-c", code], work, env)
        else:
            r = run([installed["python"], "-c", code], work, env)
        check(r, f"README block {i} ({lang}):\n{code}")
        assert "RESDET_OVERRIDES is set" in r.stderr or "resdet train" not in code
        print(f"README block {i} ({lang}): {time.perf_counter() - start:.1f} s")
    assert (work / "output/infer/photo.jpg").is_file()
    assert (work / "output/shapes/demo_comparison.png").is_file()
    assert (work / "output/mydata/model_best.pth").is_file()
    assert (work / "mydata.onnx").is_file()
