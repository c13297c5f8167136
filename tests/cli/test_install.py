"""resdet as a user gets it: a wheel built from this tree, installed (not editable) into a fresh
virtual environment (tests/cli/conftest.py), used from a folder outside the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import SMALL, check, run, user_env

pytestmark = pytest.mark.slow


def small_test_set(datasets_root: Path, folder: Path, n: int = 3) -> tuple[Path, Path]:
    """A COCO json of the first n shapes_val images (whose folder it names)."""
    data = json.loads((datasets_root / "shapes/annotations/instances_val.json").read_text())
    images = data["images"][:n]
    ids = {im["id"] for im in images}
    data = {**data, "images": images}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    path = folder / "small_val.json"
    path.write_text(json.dumps(data))
    return path, datasets_root / "shapes/val"


def test_installed_wheel_works_outside_the_checkout(installed, tmp_path, datasets_root):
    zipped = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", installed["wheel"]], capture_output=True, text=True
    ).stdout
    assert "detection/configs/coco/faster_rcnn_R101_C4_1x.yaml" in zipped
    assert "tools/" not in zipped
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = user_env(installed, RESDET_DATASETS=str(datasets_root))
    r = check(run(["resdet", "--help"], work, env), "resdet --help")
    assert "train" in r.stdout and "convert-voc" in r.stdout
    r = run([installed["python"], "-c", "import tools"], work, env)
    assert r.returncode == 1 and "No module named 'tools'" in r.stderr
    r = check(
        run([installed["python"], "-c", "import detection; print(detection.__file__)"], work, env),
        "import",
    )
    assert r.stdout.startswith(str(installed["python"].parent.parent)), r.stdout
    r = check(
        run(["resdet", "configs", "--path", "shapes/demo_R18_FPN.yaml"], work, env), "configs"
    )
    assert r.stdout.startswith(str(installed["python"].parent.parent))
    ann, images = small_test_set(datasets_root, work)
    train = ["resdet", "train", "--config", "shapes/demo_R18_FPN.yaml", "solver.max_iter=2"]
    extra = [*SMALL[1:], f"data.test.annotations={ann}", f"data.test.images={images}"]
    check(run([*train, *extra], work, env), "resdet train")
    checkpoint = work / "output/shapes/demo_R18_FPN/model_final.pth"
    assert checkpoint.is_file()
    photo = images / json.loads(ann.read_text())["images"][0]["file_name"]
    infer = ["resdet", "infer", "--weights", checkpoint, "--input", photo, "--output", "out"]
    r = check(run([*infer, "--score-thresh", "0"], work, env), "resdet infer")
    assert (work / "out" / f"{photo.stem}.json").is_file() and "device: cpu" in r.stderr
