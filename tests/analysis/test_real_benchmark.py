"""The real-photo learning benchmark: data preparation, the anchor's seeds, the training-time
reading, the summary, and tools/benchmark_real.py end to end on tiny data with a stand-in anchor
(the real anchor trains for ~40 minutes; README "Real photos" has its figures)."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from detection.benchmark import real_photos as rb
from detection.cli.benchmark_real import main

RACCOON = os.environ.get("RESDET_RACCOON", "")

# a stand-in for ../shared/anchors/torchvision_frcnn_baseline.py with its interface: fixed
# seeds, argv TRAIN_JSON VAL_JSON IMG_DIR ITERS OUT_JSON, a result json; its "AP" is the seed
# torch was given and its "AP50" the first draw of `random`, so the test sees the seeding
STAND_IN = """\
import json, random, sys, torch
torch.manual_seed(0); random.seed(0)
train, val, images, iters, out = sys.argv[1:6]
n = len(json.load(open(train))["images"])
json.dump({"AP": float(torch.initial_seed()), "AP50": 100 * random.random(),
           "train_seconds": 10.0 + n, "iters": int(iters), "ims_per_batch": 4}, open(out, "w"))
"""


def make_voc(root: Path, n: int) -> Path:
    """n one-box images in the raccoon layout (annotations/ + images/)."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for i in range(n):
        Image.new("RGB", (80, 60), (10 * i, 60, 30)).save(root / "images" / f"im-{i:02d}.jpg")
        (root / "annotations" / f"im-{i:02d}.xml").write_text(
            f"<annotation><filename>im-{i:02d}.jpg</filename><size><width>80</width>"
            "<height>60</height><depth>3</depth></size><object><name>raccoon</name>"
            "<difficult>0</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>40</xmax>"
            "<ymax>50</ymax></bndbox></object></annotation>"
        )
    return root


def test_voc_split_every_fifth_image_to_val(tmp_path):
    voc = make_voc(tmp_path / "voc", 12)
    split = rb.voc_split(voc, tmp_path / "out")
    train, val = (json.loads(p.read_text()) for p in (split.train, split.val))
    assert [im["file_name"] for im in val["images"]] == ["im-04.jpg", "im-09.jpg"]
    assert len(train["images"]) == 10 and len(train["annotations"]) == 10
    assert split.images == (voc / "images").resolve()
    assert not list((tmp_path / "out").glob("*.jpg"))  # images are not copied
    assert split.overrides()[0] == f"data.train.annotations={split.train}"
    with pytest.raises(FileNotFoundError, match="no VOC layout"):
        rb.voc_split(tmp_path / "out", tmp_path / "x")


@pytest.mark.skipif(not RACCOON, reason="set RESDET_RACCOON to the raccoon dataset folder")
def test_raccoon_benchmark_split(tmp_path):
    split = rb.voc_split(RACCOON, tmp_path)
    counts = [len(json.loads(p.read_text())["images"]) for p in (split.train, split.val)]
    assert counts == [160, 40]


def test_anchor_seeds(tmp_path):
    """Seed 0 runs the script as it is; seed k shifts both of its fixed seeds by k."""
    script = tmp_path / "anchor.py"
    script.write_text(STAND_IN)
    voc = make_voc(tmp_path / "voc", 5)
    split = rb.voc_split(voc, tmp_path / "data")
    assert rb.anchor_command(script, split, 7, tmp_path / "r.json", 0)[1] == str(script)
    r0, r3 = (rb.run_anchor(script, split, 7, tmp_path / f"s{k}", k) for k in (0, 3))
    assert (r0.ap, r3.ap) == (0.0, 3.0) and r0.ap50 != r3.ap50
    assert r0.status == "ok" and r0.train_seconds == 14.0  # 4 training images
    again = rb.run_anchor(script, split, 7, tmp_path / "s3", 3, reuse=True, log=lambda m: None)
    assert again == r3
    script.write_text("import sys; sys.exit(3)\n")
    failed = rb.run_anchor(script, split, 7, tmp_path / "s5", 5)
    assert failed.status.startswith("failed: exit 3") and failed.ap is None


def test_training_seconds_from_metrics(tmp_path):
    records = [
        {"iteration": 10, "time_per_iter": 2.0, "total_loss": 1.0},
        {"iteration": 20, "time_per_iter": 3.0, "total_loss": 1.0},
        {"iteration": 20, "bbox/AP": 5.0},
        {"iteration": 25, "time_per_iter": 4.0, "total_loss": 1.0},
    ]
    text = "\n".join(json.dumps(r) for r in records) + '\n{"iteration": 3'  # torn last line
    (tmp_path / "metrics.jsonl").write_text(text)
    assert rb.training_seconds(tmp_path) == pytest.approx(10 * 2 + 10 * 3 + 5 * 4)
    assert rb.training_seconds(tmp_path / "missing") is None


def test_summary_means_spreads_and_time_ratio():
    runs = [
        rb.RunResult("torchvision", 0, 10.0, 30.0, 100.0),
        rb.RunResult("torchvision", 1, 12.0, 34.0, 120.0),
        rb.RunResult("scratch", 0, 14.0, 40.0, 55.0),
        rb.RunResult("scratch", 1, status="failed: non-finite loss"),
    ]
    tv, scratch = rb.summary_rows(list(reversed(runs)))  # the anchor's row first regardless
    assert tv["name"] == "torchvision" and tv["ap50"] == 32.0 and tv["ap50_spread"] == 2.0
    assert tv["time_vs_anchor"] == 1.0
    assert scratch["seeds"] == [0] and scratch["failed_seeds"] == [1]
    assert scratch["ap_spread"] is None and scratch["delta_ap50"] == pytest.approx(8.0)
    assert scratch["time_vs_anchor"] == pytest.approx(0.5)
    text = rb.format_markdown([tv, scratch], runs, "heading")
    assert "| torchvision | 0,1 | 11.0 ± 1.0 | 32.0 ± 2.0 | anchor | 110 | 1.00x |" in text
    assert "| scratch | 0 | 14.0 | 40.0 | +8.0 | 55 | 0.50x |" in text
    assert "| scratch | 1 | n/a | n/a | n/a | failed: non-finite loss |" in text


def test_benchmark_tool_end_to_end(tmp_path, subset, shapes_val, tiny_config, capsys):
    train, val = subset(6, "train"), subset(2, "val")
    assert tiny_config[0] == tmp_path / "tiny.yaml"
    (tmp_path / "set.yaml").write_text(
        "description: tiny benchmark\noverrides: [test.eval_period=0]\nmembers:\n  - tiny.yaml\n"
        "  - {config: tiny.yaml, name: tiny_bn, overrides: [model.backbone.norm=BN]}\n"
    )
    (tmp_path / "anchor.py").write_text(STAND_IN)
    args = ["--train", str(train), "--val", str(val), "--images", str(shapes_val[1])]
    args += ["--anchor", str(tmp_path / "anchor.py"), "--set", str(tmp_path / "set.yaml")]
    args += ["--seeds", "0", "1", "--iters", "3", "--output-dir", str(tmp_path / "runs")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("**tiny benchmark; CPU: ")
    report = json.loads((tmp_path / "runs" / "benchmark.json").read_text())
    assert [r["name"] for r in report["summary"]] == ["torchvision", "tiny", "tiny_bn"]
    assert all(r["seeds"] == [0, 1] for r in report["summary"])
    for seed in (0, 1):
        run = tmp_path / "runs" / f"seed{seed}" / "tiny_bn"
        saved = json.loads((run / "eval" / "metrics.json").read_text())["config"]
        assert saved["seed"] == seed and saved["solver"]["max_iter"] == 3
        assert saved["solver"]["steps"] == [2] and saved["model"]["backbone"]["norm"] == "BN"
        assert saved["data"]["train"]["annotations"] == str(Path(train).resolve())
    resdet = [r for r in report["runs"] if r["name"] != "torchvision"]
    assert all(r["status"] == "ok" and r["train_seconds"] > 0 for r in resdet)
    # --reuse: nothing is trained again
    stamp = (tmp_path / "runs" / "seed1" / "tiny" / "model_final.pth").stat().st_mtime_ns
    assert main([*args, "--reuse"]) == 0
    assert (tmp_path / "runs" / "seed1" / "tiny" / "model_final.pth").stat().st_mtime_ns == stamp


def test_benchmark_tool_input_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--no-anchor"])
    assert e.value.code == 2 and "give --data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path), "--anchor", str(tmp_path / "none.py")])
    assert e.value.code == 2 and "anchor script not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path), "--no-anchor"])
    assert e.value.code == 2 and "no VOC layout" in capsys.readouterr().err
    voc = make_voc(tmp_path / "voc", 5)
    out = ["--output-dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as e:
        main(["--data", str(voc), "--no-anchor", *out, "seed=3"])
    assert e.value.code == 2 and "sets seed and output_dir itself" in capsys.readouterr().err
