"""The real-photo learning benchmark: data preparation (every 5th image, or VOC image sets), the
anchor's seeds and the re-evaluation of its model, the training-time reading, the summary, and
tools/benchmark_real.py end to end on tiny data with a stand-in anchor (the real anchor trains
for ~40 minutes; docs/real-photos.md has its figures)."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from detection.benchmark import anchor as ab
from detection.benchmark import real_photos as rb
from detection.benchmark import real_report
from detection.benchmark.real_runs import METRIC_KEYS, RunResult, Split
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


def make_voc(root: Path, n: int, classes=("raccoon",)) -> Path:
    """n one-box images in the raccoon layout (annotations/ + images/); image i's box is of
    classes[i % len(classes)]."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for i in range(n):
        Image.new("RGB", (80, 60), (10 * i, 60, 30)).save(root / "images" / f"im-{i:02d}.jpg")
        (root / "annotations" / f"im-{i:02d}.xml").write_text(
            f"<annotation><filename>im-{i:02d}.jpg</filename><size><width>80</width>"
            f"<height>60</height><depth>3</depth></size><object><name>{classes[i % len(classes)]}"
            "</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>40</xmax>"
            "<ymax>50</ymax></bndbox></object></annotation>"
        )
    return root


def test_voc_image_sets_split_by_their_lists(tmp_path):
    voc = make_voc(tmp_path / "voc", 6, classes=("a", "b", "c"))
    lists = voc / "ImageSets" / "Main"
    lists.mkdir(parents=True)
    sets = {"trainval": [0, 1, 2, 4], "test": [3, 5], "train": [0, 1], "val": [1]}
    for name, ids in sets.items():
        (lists / f"{name}.txt").write_text("".join(f"im-{i:02d}\n" for i in ids))
    split = rb.voc_split(voc, tmp_path / "out")  # trainval / test by default
    train, val = (json.loads(p.read_text()) for p in (split.train, split.val))
    assert [im["file_name"] for im in val["images"]] == ["im-03.jpg", "im-05.jpg"]
    assert len(train["images"]) == 4
    # the test list holds only a and c: its categories are still the training set's three
    assert [c["name"] for c in val["categories"]] == ["a", "b", "c"]
    assert {a["category_id"] for a in val["annotations"]} == {1, 3}
    assert "ImageSets/Main trainval / test (train 4 images, 4 boxes; val 2 images" in (
        split.description
    )
    split = rb.voc_split(voc, tmp_path / "tune", sets=("train", "val"))
    assert len(json.loads(split.val.read_text())["images"]) == 1
    with pytest.raises(FileNotFoundError, match="no image set"):
        rb.voc_split(voc, tmp_path / "x", sets=("train", "minival"))


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
    assert ab.anchor_command(script, split, 7, tmp_path / "r.json", 0)[1] == str(script)
    r0, r3 = (ab.run_anchor(script, split, 7, tmp_path / f"s{k}", k) for k in (0, 3))
    assert (r0.ap, r3.ap) == (0.0, 3.0) and r0.ap50 != r3.ap50
    assert r0.status == "ok" and r0.train_seconds == 14.0  # 4 training images
    again = ab.run_anchor(script, split, 7, tmp_path / "s3", 3, reuse=True, log=lambda m: None)
    assert again == r3
    script.write_text("import sys; sys.exit(3)\n")
    failed = ab.run_anchor(script, split, 7, tmp_path / "s5", 5)
    assert failed.status.startswith("failed: exit 3") and failed.ap is None


# the anchor script's model and evaluation, as it writes them (random weights, no training), plus
# COCOeval's twelve stats for the test to compare with
STAND_IN_WITH_MODEL = """\
import json, sys, torch
import torchvision.transforms.functional as TF
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
train_json, val_json, img_dir, iters, out = sys.argv[1:6]
torch.manual_seed(0)
tr, va = COCO(train_json), COCO(val_json)
bb = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=torch.nn.BatchNorm2d,
                         trainable_layers=5)
model = FasterRCNN(bb, num_classes=len(tr.getCatIds()) + 1, min_size=320, max_size=512)
torch.save(model.state_dict(), out + ".model.pth")
model.eval(); res = []
with torch.inference_mode():
    for iid in va.getImgIds():
        info = va.loadImgs(iid)[0]
        o = model([TF.to_tensor(Image.open(f"{img_dir}/{info['file_name']}").convert("RGB"))])[0]
        for b, s, l in zip(o["boxes"].tolist(), o["scores"].tolist(), o["labels"].tolist()):
            res.append({"image_id": iid, "category_id": l, "score": s,
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
E = COCOeval(va, va.loadRes(res), "bbox"); E.evaluate(); E.accumulate(); E.summarize()
json.dump({"AP": 100 * E.stats[0], "AP50": 100 * E.stats[1], "train_seconds": 1.0,
           "iters": int(iters), "stats": E.stats.tolist()}, open(out, "w"))
"""


def test_the_anchors_model_is_evaluated_again_for_every_metric(tmp_path, subset, shapes_val):
    script = tmp_path / "anchor.py"
    script.write_text(STAND_IN_WITH_MODEL)
    split = Split(Path(subset(4, "train")), Path(subset(3, "val")), shapes_val[1])
    lines = []
    result = ab.run_anchor(script, split, 0, tmp_path / "a", 0, log=lines.append)
    assert result.status == "ok", (tmp_path / "a" / "anchor.log").read_text()
    stats = json.loads((tmp_path / "a" / "result.json").read_text())["stats"]
    expected = [None if v < 0 else 100 * v for v in stats[:6]]
    got = [getattr(result, attr) for attr, _ in METRIC_KEYS]
    assert got == pytest.approx(expected, abs=1e-9)
    assert set(result.per_class) == {"circle", "square", "triangle", "ellipse", "star"}
    assert any("for every metric" in line for line in lines)
    assert not any("differs" in line for line in lines), lines
    # the re-evaluation is cached beside the result
    again = ab.run_anchor(script, split, 0, tmp_path / "a", 0, reuse=True, log=lines.append)
    assert again == result


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


def _run(name, seed, budget, ap, ap50, seconds, **kw):
    return RunResult(name, seed, budget, ap=ap, ap50=ap50, train_seconds=seconds, **kw)


def test_summary_means_ranges_and_time_ratio():
    runs = [
        _run("torchvision", 0, "anchor", 10.0, 30.0, 100.0, per_class={"a": 4.0}),
        _run("torchvision", 1, "anchor", 12.0, 34.0, 120.0, per_class={"a": 6.0}),
        _run("scratch", 0, "iterations", 14.0, 40.0, 55.0, iterations=300),
        RunResult("scratch", 1, "iterations", status="failed: non-finite loss"),
        _run("scratch", 0, "time", 15.0, 41.0, 110.0, iterations=900, per_class={"a": 9.0}),
        _run("scratch", 1, "time", 13.0, 39.0, 108.0, iterations=880, per_class={"a": 7.0}),
    ]
    tv, timed, iters = real_report.summary_rows(list(reversed(runs)))  # the anchor first
    assert (tv["name"], timed["budget"], iters["budget"]) == ("torchvision", "time", "iterations")
    assert tv["ap50"] == 32.0 and tv["ap50_range"] == (30.0, 34.0) and tv["time_vs_anchor"] == 1.0
    assert tv["per_class"] == {"a": 5.0}
    assert iters["seeds"] == [0] and iters["failed_seeds"] == [1] and iters["ap_range"] is None
    assert iters["delta_ap50"] == pytest.approx(8.0) and iters["time_vs_anchor"] == 0.5
    assert timed["delta_ap"] == pytest.approx(3.0) and timed["worst_delta_ap"] == 2.0
    assert timed["iterations"] == 890 and timed["per_class"] == {"a": 8.0}
    text = real_report.format_markdown([tv, timed, iters], runs, "heading")
    assert "| torchvision | 0,1 | 11.0 [10.0, 12.0] | 32.0 [30.0, 34.0] | n/a | anchor |" in text
    timed_line = "| scratch, equal time | 0,1 | 14.0 [13.0, 15.0] | 40.0 [39.0, 41.0] | n/a |"
    assert timed_line + " +3.0 | +2.0 | 890 | 109 | 0.99x |" in text
    iters_line = "| scratch, equal iterations | 0 | 14.0 | 40.0 | n/a | +3.0 | +3.0 | 300 | 55 |"
    assert iters_line + " 0.50x |" in text
    assert "| scratch, equal time | n/a | n/a | n/a | 8.0 |" in text  # sizes and classes
    assert "| scratch, equal iterations | 1 | n/a |" in text and "failed: non-finite loss |" in text
    # without the anchor (--no-anchor): no deltas, no time ratio
    (alone,) = real_report.summary_rows(runs[4:])
    assert alone["time_vs_anchor"] is None
    text = real_report.format_markdown([alone], runs[4:], "heading")
    assert timed_line + " n/a | n/a | 890 | 109 | n/a |" in text


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
    args += ["--iters", "3", "--output-dir", str(tmp_path / "runs")]
    assert main([*args, "--seeds", "0", "1", "--budgets", "iterations"]) == 0
    printed = capsys.readouterr().out
    heading = printed.splitlines()[0]
    assert heading.startswith("**tiny benchmark; ") and "; CPU: " in heading
    report = json.loads((tmp_path / "runs" / "benchmark.json").read_text())
    rows = [(r["name"], r["budget"]) for r in report["summary"]]
    assert rows == [("torchvision", "anchor"), ("tiny", "iterations"), ("tiny_bn", "iterations")]
    assert all(r["seeds"] == [0, 1] for r in report["summary"])
    for seed in (0, 1):
        run = tmp_path / "runs" / f"seed{seed}" / "tiny_bn"
        saved = json.loads((run / "eval" / "metrics.json").read_text())["config"]
        assert saved["seed"] == seed and saved["solver"]["max_iter"] == 3
        assert saved["solver"]["steps"] == [2] and saved["model"]["backbone"]["norm"] == "BN"
        assert saved["data"]["train"]["annotations"] == str(Path(train).resolve())
        assert saved["solver"]["max_seconds"] is None
    resdet = [r for r in report["runs"] if r["name"] != "torchvision"]
    assert all(r["status"] == "ok" and r["train_seconds"] > 0 for r in resdet)
    # equal time, --reuse: the anchor and the equal-iteration runs are not run again; the
    # equal-time runs get the stand-in anchor's 16 s (of seed 0) as their budget
    stamp = (tmp_path / "runs" / "seed0" / "tiny" / "model_final.pth").stat().st_mtime_ns
    assert main([*args, "--seeds", "0", "--reuse"]) == 0
    assert (tmp_path / "runs" / "seed0" / "tiny" / "model_final.pth").stat().st_mtime_ns == stamp
    assert "| tiny_bn, equal time | 0 |" in capsys.readouterr().out
    timed = tmp_path / "runs" / "seed0" / "time" / "tiny_bn" / "eval" / "metrics.json"
    assert json.loads(timed.read_text())["config"]["solver"]["max_seconds"] == 16.0


def test_benchmark_tool_input_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--no-anchor"])
    assert e.value.code == 2 and "give --data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path), "--anchor", str(tmp_path / "none.py")])
    assert e.value.code == 2 and "anchor script not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path), "--no-anchor", "--budgets", "iterations"])
    assert e.value.code == 2 and "no VOC layout" in capsys.readouterr().err
    voc = make_voc(tmp_path / "voc", 5)
    out = ["--output-dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as e:
        main(["--data", str(voc), "--no-anchor", "--budgets", "iterations", *out, "seed=3"])
    assert e.value.code == 2 and "sets seed and output_dir itself" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--data", str(voc), "--no-anchor", *out])
    assert e.value.code == 2 and "equal time needs the anchor's time" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--train", "t", "--val", "v", "--images", "i", "--no-anchor", "--splits", "a", "b"])
    assert e.value.code == 2 and "--splits goes with --data" in capsys.readouterr().err
