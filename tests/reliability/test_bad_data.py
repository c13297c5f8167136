"""Bad data: every fault gives a clear error before training, or a counted skip; never a
traceback. Each case runs tools/train.py's and tools/check_dataset.py's main() on a real
broken file."""

import json
import shutil
from pathlib import Path

import pytest

from detection.cli.check import main as check_main
from detection.cli.train import main as train_main


@pytest.fixture
def small_coco(tmp_path, datasets_root, tiny_config):
    """Three shapes images in their own folder and json, and a config training on them."""
    src = json.loads((datasets_root / "shapes/annotations/instances_val.json").read_text())
    images = src["images"][:3]
    ids = {im["id"] for im in images}
    data = {
        "images": images,
        "annotations": [a for a in src["annotations"] if a["image_id"] in ids],
        "categories": src["categories"],
    }
    folder = tmp_path / "small"
    (folder / "images").mkdir(parents=True)
    for im in images:
        shutil.copy(datasets_root / "shapes/val" / im["file_name"], folder / "images")
    ann = folder / "train.json"
    ann.write_text(json.dumps(data))
    path, out = tiny_config
    args = [
        "--config",
        str(path),
        f"data.train.annotations={ann}",
        f"data.train.images={folder / 'images'}",
        f"data.test.annotations={ann}",
        f"data.test.images={folder / 'images'}",
        "solver.max_iter=2",
    ]
    return data, folder, ann, args, out


def run(main, args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def first_image(data, folder) -> tuple[Path, int]:
    im = data["images"][0]
    return folder / "images" / im["file_name"], im["id"]


@pytest.mark.parametrize("fault", ["missing", "zero-byte"])
def test_missing_or_empty_image_stops_before_training(small_coco, capsys, caplog, fault):
    data, folder, ann, args, out = small_coco
    image, image_id = first_image(data, folder)
    if fault == "missing":
        image.unlink()
    else:
        image.write_bytes(b"")
    code, text = run(train_main, args, capsys)
    assert code == 2
    assert f"{image} (image id {image_id})" in text
    assert "not found" in text if fault == "missing" else "empty (0 bytes)" in text
    assert not (out / "metrics.jsonl").exists(), "training started"

    code, text = run(check_main, args + ["--split", "train"], capsys)
    reason = "missing_file" if fault == "missing" else "empty_file"
    assert code == 1 and f"PROBLEM: {reason}: 1 dropped (image ids [{image_id}])" in text

    code, text = run(train_main, args + ["data.skip_bad_images=true"], capsys)
    assert code == 0 and (out / "model_final.pth").is_file()
    assert f"'{reason}': 1" in caplog.text  # the counted warning


@pytest.mark.parametrize("fault", ["truncated", "not-an-image"])
def test_undecodable_image_is_a_clear_error_mid_run_or_a_counted_skip(
    small_coco, capsys, caplog, fault
):
    data, folder, ann, args, out = small_coco
    image, image_id = first_image(data, folder)
    if fault == "truncated":
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 3])
    else:
        image.write_text("this is a text file, not a JPEG\n")
    # the file exists and is not empty: only decoding finds it, in a loader worker process
    workers = ["data.num_workers=1"]
    code, text = run(train_main, args + workers, capsys)
    assert code == 2
    assert f"cannot decode image {image} (image id {image_id})" in text
    assert "Traceback" not in text and "DataLoader worker" not in text

    code, text = run(check_main, args + ["--split", "train"], capsys)
    assert code == 1 and f"PROBLEM: cannot decode image {image} (image id {image_id})" in text

    code, text = run(train_main, args + workers + ["data.skip_bad_images=true"], capsys)
    assert code == 0 and (out / "model_final.pth").is_file()


@pytest.mark.parametrize(
    ("bbox", "reason"),
    [
        ([float("nan"), 5.0, 10.0, 10.0], "non_finite"),
        ([5.0, 5.0, -10.0, 10.0], "non_positive_size"),
        ([5000.0, 5000.0, 10.0, 10.0], "outside_image"),
    ],
)
def test_bad_boxes_are_dropped_with_a_counted_warning_naming_them(
    small_coco, capsys, caplog, bbox, reason
):
    data, folder, ann, args, out = small_coco
    data["annotations"][0]["bbox"] = bbox
    ann_id = data["annotations"][0]["id"]
    ann.write_text(json.dumps(data))  # json writes NaN, which Python and pycocotools read
    code, text = run(check_main, args + ["--split", "train"], capsys)
    assert code == 1 and f"PROBLEM: {reason}: 1 dropped (annotation ids [{ann_id}])" in text
    # COCO itself has degenerate boxes (torchvision's reference filters them too): training
    # drops them and says which, rather than refusing the dataset
    code, text = run(train_main, args, capsys)
    assert code == 0
    assert f"'{reason}': 1" in caplog.text and f"annotation ids [{ann_id}]" in caplog.text


def test_unknown_category_stops_before_training_or_is_skipped(small_coco, capsys, caplog):
    data, folder, ann, args, out = small_coco
    data["annotations"][1]["category_id"] = 999
    ann_id = data["annotations"][1]["id"]
    ann.write_text(json.dumps(data))
    code, text = run(train_main, args, capsys)
    assert code == 2 and f"annotation id {ann_id}: category id 999 is not in" in text
    assert not (out / "metrics.jsonl").exists()
    code, text = run(check_main, args + ["--split", "train"], capsys)
    assert code == 1 and f"invalid_annotation: 1 dropped (annotation ids [{ann_id}])" in text
    code, text = run(train_main, args + ["data.skip_bad_images=true"], capsys)
    assert code == 0 and "'invalid_annotation': 1" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is not valid JSON"),
        ('{"images": [], "annotations": [', "is not valid JSON"),
        ("[1, 2, 3]", "is not a COCO annotation file"),
        ('{"info": {}}', "is not a COCO annotation file"),
        ('{"images": [], "annotations": [], "categories": []}', "has no categories"),
    ],
)
def test_broken_annotation_files_are_clear_errors(small_coco, capsys, content, message):
    data, folder, ann, args, out = small_coco
    ann.write_text(content)
    for main in (train_main, check_main):
        code, text = run(main, args, capsys)
        assert code == 2 and str(ann) in text and message in text, text
    assert not (out / "metrics.jsonl").exists()
