"""detection.utils.logging and the tools' -q / -v: library log lines reach stderr and log.txt."""

from __future__ import annotations

import json
import logging
import re

import pytest
from helpers import ROOT, run_tool
from PIL import Image

from detection.cli import browse as browse_dataset
from detection.config.cli import configure_logging, tool_parser
from detection.utils.logging import log_to_file, remove_log_file, reset_logging, setup_logging

log = logging.getLogger("detection.data.coco")
SHAPES_CONFIG = ROOT / "configs/shapes/Base-shapes.yaml"
# asctime, level, logger name, message: "2025-01-31 12:00:00,123 INFO detection.data.coco: hi"
FILE_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)")


@pytest.fixture(autouse=True)
def _clean_logging(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    reset_logging()
    yield
    reset_logging()


def emit_all():
    log.debug("a debug line")
    log.info("an info line")
    log.warning("a warning line")
    logging.getLogger("backbones.weights").info("a backbones line")


def test_info_on_stderr_once_after_two_calls(capsys):
    emit_all()
    assert "[resdet]" not in capsys.readouterr().err  # nothing configured: nothing shown
    setup_logging()
    setup_logging()
    emit_all()
    err = capsys.readouterr().err
    assert err.count("[resdet] an info line\n") == 1
    assert err.count("[resdet] a backbones line\n") == 1
    assert err.count("[resdet] WARNING: a warning line\n") == 1
    assert "debug" not in err


def test_quiet_and_verbose(capsys):
    setup_logging(-1)
    emit_all()
    err = capsys.readouterr().err
    assert "info line" not in err and "[resdet] WARNING: a warning line" in err
    setup_logging(1)  # the same handler, now at DEBUG
    emit_all()
    err = capsys.readouterr().err
    assert err.count("[resdet] DEBUG: a debug line\n") == 1
    assert err.count("[resdet] an info line\n") == 1


def test_other_ranks_show_warnings_only(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    setup_logging(1)
    emit_all()
    err = capsys.readouterr().err
    assert "debug line" not in err and "info line" not in err
    assert "[resdet] WARNING: a warning line" in err


def test_log_to_file_timestamps_and_removal(tmp_path, capsys):
    path = tmp_path / "run" / "log.txt"
    setup_logging(-1)  # a quiet console still leaves INFO in the file
    handler = log_to_file(path)
    assert log_to_file(path) is handler
    assert not path.parent.exists()  # delay: nothing logged, nothing written
    emit_all()
    lines = [FILE_LINE.fullmatch(line) for line in path.read_text().splitlines()]
    assert all(lines), path.read_text()
    assert [m.groups() for m in lines] == [
        ("INFO", "detection.data.coco", "an info line"),
        ("WARNING", "detection.data.coco", "a warning line"),
        ("INFO", "backbones.weights", "a backbones line"),
    ]
    assert "info line" not in capsys.readouterr().err
    remove_log_file(handler)
    log.warning("after removal")
    assert "after removal" not in path.read_text()


def test_log_to_file_follows_verbose_console(tmp_path):
    setup_logging(1)
    handler = log_to_file(tmp_path / "log.txt")
    log.debug("details")
    remove_log_file(handler)
    text = (tmp_path / "log.txt").read_text()
    assert text.rstrip().endswith("DEBUG detection.data.coco: details")


@pytest.mark.parametrize(("argv", "verbosity"), [([], 0), (["-q"], -1), (["-vv"], 2)])
def test_tool_parser_flags(argv, verbosity):
    args = tool_parser("A tool.\n").parse_args(argv)
    assert configure_logging(args) == verbosity
    level = logging.getLogger("detection").getEffectiveLevel()
    assert level == {-1: logging.WARNING, 0: logging.INFO, 2: logging.DEBUG}[verbosity]


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        tool_parser("A tool.\n").parse_args(["-q", "-v"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def tiny_coco(root):
    """Two images with 3 boxes of 2 classes under root/mydata/{annotations,images}."""
    (root / "mydata/images").mkdir(parents=True)
    (root / "mydata/annotations").mkdir()
    for i in (1, 2):
        Image.new("RGB", (64, 48), (90, 90, 90)).save(root / f"mydata/images/{i}.png")
    boxes = [(1, 1, [4, 4, 20, 20]), (1, 2, [30, 10, 20, 20]), (2, 1, [10, 10, 30, 30])]
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48} for i in (1, 2)],
        "annotations": [
            {"id": k, "image_id": im, "category_id": c, "bbox": b, "area": 400, "iscrowd": 0}
            for k, (im, c, b) in enumerate(boxes, 1)
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    ann = root / "mydata/annotations/instances_train.json"
    ann.write_text(json.dumps(coco))
    return [f"data.train.annotations={ann}", f"data.train.images={root / 'mydata/images'}"]


def test_tool_shows_dataset_summary_unless_quiet(tmp_path, capsys):
    overrides = tiny_coco(tmp_path)
    argv = ["--config", SHAPES_CONFIG, "--output", tmp_path / "browse", "--num", "1", *overrides]
    r = run_tool(["tools/browse_dataset.py", *argv])
    # labelled by its file, not by the config's shapes_train
    summary = (
        "[resdet] dataset mydata/instances_train (training): kept 2 images, 3 boxes, 2 classes"
    )
    assert summary in r.stderr and "shapes_train" not in r.stderr
    assert browse_dataset.main([*map(str, argv), "--quiet"]) == 0
    assert "kept" not in capsys.readouterr().err
