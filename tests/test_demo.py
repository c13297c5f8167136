"""`make demo`, shortened: both demo detectors train, evaluate and compare end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args, env):
    r = subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, f"{args}\n{r.stdout}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
def test_shortened_demo(tmp_path, datasets_root):
    # the session's shapes data (the demo generates it on first use: tested in tests/data)
    env = {**os.environ, "RESDET_DATASETS": str(datasets_root), "OMP_NUM_THREADS": "2"}
    from detection.data import ensure_shapes

    ann, images = ensure_shapes("shapes_val", datasets_root)
    coco = json.loads(ann.read_text())
    keep = {img["id"] for img in coco["images"][:6]}
    coco["images"] = [i for i in coco["images"] if i["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    subset = tmp_path / "val_subset.json"
    subset.write_text(json.dumps(coco))
    short = [
        "solver.max_iter=3",
        "solver.warmup_iters=1",
        "solver.steps=[2]",
        "solver.log_period=1",
        "input.min_size_train=[128]",
        "input.min_size_test=128",
        f"data.test.annotations={subset}",
        f"data.test.images={images}",
    ]
    runs = {}
    for name in ("demo_R18_FPN", "demo_VGG16"):
        out = tmp_path / name
        r = run(
            [
                ROOT / "tools/train.py",
                "--config",
                f"configs/shapes/{name}.yaml",
                "--device",
                "cpu",
                "--output-dir",
                out,
                *short,
            ],
            env,
        )
        assert "AP50" in r.stdout
        metrics = json.loads((out / "eval/metrics.json").read_text())
        assert metrics["num_images"] == 6
        runs[name] = out
    r = run(
        [
            ROOT / "tools/compare.py",
            "--baseline",
            runs["demo_VGG16"],
            runs["demo_R18_FPN"],
            "--plot",
            tmp_path / "cmp.png",
        ],
        env,
    )
    assert "VGG-16" in r.stdout and "ResNet-18" in r.stdout
    assert (tmp_path / "cmp.png").stat().st_size > 1000
