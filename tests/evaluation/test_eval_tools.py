"""tools/evaluate.py, tools/compare.py and tools/infer.py end to end."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys

import pytest
import torch
from evaluation_helpers import REPO, write_json
from helpers import free_port
from PIL import Image

from detection.cli import compare, evaluate, infer
from detection.evaluation import coco_evaluate
from detection.evaluation import compare as compare_module
from detection.utils.checkpoint import read_checkpoint
from detection.utils.precision import resolve_precision


def run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def data_overrides(ann, images):
    return ["data.test.name=null", f"data.test.annotations={ann}", f"data.test.images={images}"]


def test_evaluate_end_to_end(tiny_checkpoint, tiny_coco, tmp_path):
    ann, images = tiny_coco
    out = tmp_path / "eval"
    argv = ["--checkpoint", tiny_checkpoint, "--output-dir", out, "--no-progress"]
    rc, stdout, _ = run(evaluate.main, [*argv, *data_overrides(ann, images)])
    assert rc == 0
    assert "resolved config:" in stdout and "name: resnet18" in stdout
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in stdout  # pycocotools' summary
    assert "| AP | AP50 | AP75 | APs | APm | APl |" in stdout  # the compact table

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"bbox", "checkpoint", "config", "dataset", "num_images"}
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_category"}
    assert list(metrics["bbox"]["per_category"]) == ["red", "green", "blue"]
    assert metrics["checkpoint"] == str(tiny_checkpoint)
    assert metrics["config"]["model"]["backbone"]["name"] == "resnet18"
    assert metrics["dataset"]["annotations"] == str(ann)
    assert metrics["num_images"] == 3

    detections = json.loads((out / "detections.json").read_text())
    assert detections, "a random-weights model still scores its boxes above 0.05"
    assert {d["category_id"] for d in detections} <= {2, 5, 11}  # the json's ids
    assert {d["image_id"] for d in detections} <= {7, 8, 9}
    sizes = {7: (96, 72), 8: (80, 100), 9: (120, 90)}
    for d in detections:  # xywh inside the original image
        x, y, w, h = d["bbox"]
        width, height = sizes[d["image_id"]]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0
        assert x + w <= width + 1e-3 and y + h <= height + 1e-3
    assert metrics["bbox"] == coco_evaluate(ann, detections)

    # --config replaces the embedded config: same weights, same metrics
    out2 = tmp_path / "eval2"
    config = REPO / "configs/coco/faster_rcnn_R18_C4_1x.yaml"
    from evaluation_helpers import TINY_OVERRIDES

    rc, _, _ = run(
        evaluate.main,
        [
            "--checkpoint",
            tiny_checkpoint,
            "--config",
            config,
            "--output-dir",
            out2,
            "--no-progress",
            *TINY_OVERRIDES,
            *data_overrides(ann, images),
        ],
    )
    assert rc == 0
    assert json.loads((out2 / "metrics.json").read_text())["bbox"] == metrics["bbox"]


def test_evaluate_under_torchrun_equals_one_process(tiny_checkpoint, tiny_coco, tmp_path):
    ann, images = tiny_coco
    common = [
        "--checkpoint",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--no-progress",
        *data_overrides(ann, images),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun processes: the same float summation order
    try:
        assert run(evaluate.main, [*common, "--output-dir", tmp_path / "one"])[0] == 0
    finally:
        torch.set_num_threads(threads)
    port = free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(port)]  # fmt: skip
    proc = subprocess.run(
        [*torchrun, "tools/evaluate.py", *map(str, common), "--output-dir", str(tmp_path / "two")],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| AP | AP50 |") == 1  # rank 0 alone prints and writes
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["inference"]["processes"] == 2 and two["num_images"] == one["num_images"] == 3
    # how the numbers were made: the precision test.precision resolved to, the memory format
    embedded = read_checkpoint(tiny_checkpoint)["config"]["test"]["precision"]
    expected = resolve_precision(embedded).name
    assert one["inference"]["precision"] == two["inference"]["precision"] == expected
    assert isinstance(one["inference"]["channels_last"], bool)
    assert proc.stdout.count("inference precision: ") == 1
    assert two["bbox"] == one["bbox"]
    dets = [json.loads((tmp_path / d / "detections.json").read_text()) for d in ("one", "two")]
    assert len(dets[0]) == len(dets[1]) > 0
    for a, b in zip(*dets, strict=True):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-4)
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["model.backbone.nmae=resnet50"], "config error: unknown config key"),
        (["model.roi_heads.num_classes=5"], "config error: 3 class names but"),
        (["data.test.annotations=/nonexistent.json"], "annotation file not found"),
    ],
)
def test_evaluate_errors(tiny_checkpoint, tiny_coco, tmp_path, capsys, extra, message):
    ann, images = tiny_coco
    overrides = [*data_overrides(ann, images), *extra]
    with pytest.raises(SystemExit) as exc:
        evaluate.main(
            ["--checkpoint", str(tiny_checkpoint), "--output-dir", str(tmp_path), *overrides]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "metrics.json").exists()


def test_evaluate_other_classes(tiny_checkpoint, tiny_coco, tmp_path, capsys):
    ann, images = tiny_coco
    data = json.loads(ann.read_text())
    data["categories"] = data["categories"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 11]
    other = write_json(tmp_path / "two_classes.json", data)
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--checkpoint", str(tiny_checkpoint), *data_overrides(other, images)])
    assert exc.value.code == 2
    assert "error: test set: the model predicts 3 classes" in capsys.readouterr().err


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--checkpoint", str(tmp_path / "nope.pth")])
    assert exc.value.code == 2
    assert "checkpoint not found" in capsys.readouterr().err


def metrics_file(path, backbone, ap50, ap, neck="none"):
    record = {
        "bbox": {"AP": ap, "AP50": ap50, "AP75": None, "APs": None, "APm": None, "APl": None},
        "config": {"model": {"backbone": {"name": backbone}, "neck": {"name": neck}}},
        "dataset": {"annotations": "coco/annotations/instances_val2017.json"},
        "num_images": 5000,
    }
    return write_json(path, record)


def test_compare_tables_and_plot(tmp_path):
    base = metrics_file(tmp_path / "vgg/metrics.json", "vgg16", 40.0, 20.0)
    metrics_file(tmp_path / "r101/eval/metrics.json", "resnet101", 46.0, 25.0)  # RUN/eval/
    metrics_file(tmp_path / "r50fpn.json", "resnet50", 50.0, 30.5, neck="fpn")
    runs = [tmp_path / "r101", tmp_path / "r50fpn.json"]

    rc, out, _ = run(compare.main, ["--baseline", tmp_path / "vgg", *runs])
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("| model | mAP@.5 | mAP@[.5,.95] | Δ mAP@.5 | Δ mAP@[.5,.95]")
    assert lines[2].startswith("| VGG-16 | 40.0 | 20.0 | baseline |")
    assert lines[3].startswith("| ResNet-101 | 46.0 | 25.0 | +6.0 | +5.0 | +15.0% | +25.0% |")
    assert lines[4].startswith("| ResNet-50 FPN | 50.0 | 30.5 | +10.0 | +10.5 | +25.0% | +52.5% |")
    assert "literature" not in out

    rc, out, _ = run(compare.main, ["--baseline", base, *runs, "--format", "csv", "--paper"])
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["model"] for r in rows] == [
        "VGG-16",
        "ResNet-101",
        "ResNet-50 FPN",
        "VGG-16",
        "ResNet-101",
    ]
    r101 = rows[1]
    assert float(r101["map50"]) == 46.0 and float(r101["map"]) == 25.0
    assert float(r101["delta_map"]) == pytest.approx(5.0)
    assert float(r101["rel_map_pct"]) == pytest.approx(25.0)
    assert float(r101["rel_map50_pct"]) == pytest.approx(15.0)
    assert rows[0]["delta_map"] == "0.0" and rows[0]["baseline"] == "True"
    paper = rows[3:]
    assert all(r["source"] == "paper (COCO val), literature" for r in paper)
    assert float(paper[1]["map50"]) == 48.4 and float(paper[1]["map"]) == 27.2
    assert float(paper[1]["delta_map"]) == pytest.approx(6.0)
    assert float(paper[1]["rel_map_pct"]) == pytest.approx(100 * 6.0 / 21.2, abs=1e-3)  # 28%

    png = tmp_path / "plots/compare.png"
    rc, out, _ = run(compare.main, ["--baseline", base, *runs, "--paper", "--plot", png])
    assert rc == 0 and "+28.3%" in out and "literature" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.width > 300 and image.height > 200


@pytest.mark.parametrize(
    ("backbone", "label"),
    [
        ({"name": "vgg16"}, "VGG-16"),
        ({"name": "vgg16_bn", "norm": "BN"}, "VGG-16-BN"),
        ({"name": "vgg16_bn", "norm": "GN"}, "VGG-16-GN"),
        ({"name": "resnet18", "shortcut": "none"}, "plain-18"),
        ({"name": "resnet101"}, "ResNet-101"),
        ({"name": "resnext50_32x4d"}, "ResNeXt-50 32x4d"),
        ({"name": "wide_resnet50_2"}, "Wide ResNet-50-2"),
        ({"name": "not_registered_net"}, "not_registered_net"),
    ],
)
def test_compare_names_the_norm_of_vgg16_bn(backbone, label):
    assert compare_module.display_name({"model": {"backbone": backbone}}, "x") == label
    fpn = {"model": {"backbone": backbone, "neck": {"name": "fpn"}}}
    assert compare_module.display_name(fpn, "x") == f"{label} FPN"


def test_compare_relative_change_against_a_baseline_near_zero(tmp_path):
    """The demo's case: VGG-16 at 0.02 AP50 and 0.0 AP; +13.7 points is not +70000%."""
    base = metrics_file(tmp_path / "vgg.json", "vgg16", 0.02, 0.0)
    run_ = metrics_file(tmp_path / "r18.json", "resnet18", 13.77, 4.41, neck="fpn")
    rc, out, _ = run(compare.main, ["--baseline", base, run_])
    assert rc == 0
    lines = out.splitlines()
    assert lines[3].startswith("| ResNet-18 FPN | 13.8 | 4.4 | +13.8 | +4.4 | n/a | n/a |")
    assert lines[-1] == compare_module.SMALL_BASE_NOTE
    # a baseline of 1 AP or more gives relative changes again, and no note
    base = metrics_file(tmp_path / "vgg1.json", "vgg16", 2.0, 1.0)
    rc, out, _ = run(compare.main, ["--baseline", base, run_])
    assert "+588.5% | +341.0% |" in out and compare_module.SMALL_BASE_NOTE not in out
    rc, out, _ = run(compare.main, ["--baseline", base, run_, "--format", "csv"])
    assert float(list(csv.DictReader(io.StringIO(out)))[1]["rel_map_pct"]) == pytest.approx(341.0)


def test_compare_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        compare.main(["--baseline", str(tmp_path / "empty")])
    assert exc.value.code == 2
    assert "no metrics.json" in capsys.readouterr().err
    write_json(tmp_path / "bad.json", {"AP": 1})
    with pytest.raises(SystemExit):
        compare.main(["--baseline", str(tmp_path / "bad.json")])
    assert "not a metrics.json written by resdet evaluate" in capsys.readouterr().err


def test_infer_writes_json_and_drawings(tiny_checkpoint, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (90, 70), (200, 30, 30)).save(images / "a.jpg")
    Image.new("RGBA", (64, 96), (30, 200, 30, 128)).save(images / "b.png")
    Image.new("L", (80, 80), 100).save(images / "a.png")  # same stem as a.jpg
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["--checkpoint", tiny_checkpoint, "--input", images, "--output", out, "--no-progress"]
    rc, stdout, _ = run(infer.main, [*argv, "--score-thresh", "0.0"])
    assert rc == 0 and "wrote 3 image(s)" in stdout
    records = json.loads((out / "predictions.json").read_text())
    assert [r["image"] for r in records] == [str(images / n) for n in ("a.jpg", "a.png", "b.png")]
    for name, stem, size in (("a.jpg", "a_jpg", (90, 70)), ("a.png", "a_png", (80, 80)),
                             ("b.png", "b", (64, 96))):  # fmt: skip
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["image"] == str(images / name)
        assert (record["width"], record["height"]) == size
        assert record["detections"], "random weights still give boxes at threshold 0"
        for det in record["detections"]:
            assert set(det) == {"box", "score", "label", "class"}
            assert det["class"] == ["red", "green", "blue"][det["label"] - 1]
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= size[0] and 0 <= y1 <= y2 <= size[1]
        with Image.open(out / f"{stem}.jpg") as drawn:
            assert drawn.size == size and drawn.mode == "RGB"

    # a single file, and a threshold no random score reaches
    rc, stdout, _ = run(
        infer.main, [*argv[:2], "--input", images / "b.png", "--output", tmp_path / "one",
                     "--score-thresh", "1.01", "--no-progress"],
    )  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "one/b.json").read_text())["detections"] == []


def test_infer_errors(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "none").mkdir()
    with pytest.raises(SystemExit) as exc:
        infer.main(["--checkpoint", str(tiny_checkpoint), "--input", str(tmp_path / "none"),
                    "--output", str(tmp_path / "out")])  # fmt: skip
    assert exc.value.code == 2 and "no images in" in capsys.readouterr().err


def test_training_evaluator_uses_test_precision(tiny_checkpoint, tiny_coco):
    """Evaluation during training runs in test.precision, on the fast path, on a copy: the
    training model keeps its weights, dtype, mode and precision."""
    from detection import load_model
    from detection.evaluation import training_evaluator

    ann, images = tiny_coco
    model = load_model(
        tiny_checkpoint, [f"data.test.annotations={ann}", f"data.test.images={images}"]
    ).train()
    cfg = model.cfg
    cfg.test.precision = "bf16"
    seen = []
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append((o.dtype, m.weight.dtype)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p.requires_grad for p in model.parameters()]
    metrics = training_evaluator(cfg, rank=0, world_size=1)(model, 1)
    assert metrics["num_images"] == 3
    # the deep-copied hook saw the copy: bf16 outputs from weights cast once, up front
    assert seen and all(d == (torch.bfloat16, torch.bfloat16) for d in seen)
    assert model.precision == "fp32" and model.training
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v) and before[k].dtype == v.dtype, k
    assert [p.requires_grad for p in model.parameters()] == trainable
