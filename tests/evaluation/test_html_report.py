"""The HTML evaluation report: its numbers are the diagnostics', it is self-contained, and a real
headless Chromium renders it without a console message (skipped, saying so, without Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from evaluation_helpers import HANDMADE
from PIL import Image

from detection.evaluation import analyze_detections, coco_evaluate, evaluate_checkpoint
from detection.evaluation.html_report import WORST_SHOWN, render_report, write_report

SECTIONS = ("summary", "per-class", "pr-curves", "confusion", "worst-images")


def chromium() -> str | None:
    """A Chromium binary: $RESDET_CHROMIUM, else chromium / chromium-browser / google-chrome."""
    named = os.environ.get("RESDET_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def render_in_chromium(page: Path, tmp_path: Path) -> tuple[str, str, Path]:
    """(DOM after the scripts ran, Chromium's log, a screenshot) of `page`."""
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium (install Debian's chromium or set RESDET_CHROMIUM)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
    ]  # fmt: skip
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [binary, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    shot = tmp_path / "report.png"
    subprocess.run(
        [binary, *flags, f"--screenshot={shot}", "--window-size=1280,2400", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return dom.stdout, dom.stderr, shot


def write_images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, (w, h, _) in HANDMADE.items():
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{image_id}.jpg")


@pytest.fixture
def report_inputs(handmade, tmp_path):
    gt_path, dets = handmade
    write_images(tmp_path / "images")
    analysis = analyze_detections(gt_path, dets, score_thresh=0.3)
    metrics = coco_evaluate(gt_path, dets)
    annotations = json.loads(gt_path.read_text())["annotations"]
    return analysis, metrics, annotations, dets, tmp_path / "images"


def test_the_report_shows_the_diagnostics_numbers(report_inputs):
    analysis, metrics, annotations, dets, images = report_inputs
    page = render_report(analysis, metrics, annotations, dets, images, "handmade")
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    for key in ("AP", "AP50", "APl"):
        assert f"{key}<b>{metrics[key]:.1f}</b>" in page
    for name, c in analysis["per_class"].items():
        row = re.search(rf'<tr><td data-v="{re.escape(name)}">.*?</tr>', page).group(0)
        values = re.findall(r'data-v="([^"]*)"', row)
        assert values[1] == ("" if c["AP"] is None else str(c["AP"])), name
        assert values[9] == str(c["gt"]) and values[12] == str(c["FP"]), name
    shown = min(len(analysis["worst_images"]), WORST_SHOWN)
    assert shown > 0 and page.count('alt="ground truth"') == shown
    assert page.count("<svg") == sum(c is not None for c in analysis["pr_curves"].values())
    # self-contained: nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_missing_images_are_said_not_fatal(report_inputs, tmp_path):
    analysis, metrics, annotations, dets, _ = report_inputs
    page = render_report(analysis, metrics, annotations, dets, tmp_path / "nowhere", "t")
    assert "image not shown" in page and 'alt="ground truth"' not in page


def test_chromium_renders_the_report_without_console_messages(report_inputs, tmp_path):
    analysis, metrics, annotations, dets, images = report_inputs
    page = write_report(tmp_path / "report.html", analysis, metrics, annotations, dets, images, "t")
    dom, log, shot = render_in_chromium(page, tmp_path)
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert not console, console  # the page logs nothing: any message is an error
    assert 'data-report="ready"' in dom  # the script ran to its end
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape[1] == 1280 and pixels.std() > 10  # drawn, not blank
    keep = os.environ.get("RESDET_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_evaluation_writes_the_report_when_asked(tiny_checkpoint, tiny_coco, tmp_path):
    ann, images = tiny_coco
    overrides = [
        "data.test.name=null",
        f"data.test.annotations={ann}",
        f"data.test.images={images}",
        "test.report=true",
    ]
    out = tmp_path / "eval"
    record = evaluate_checkpoint(
        tiny_checkpoint, overrides=overrides, output_dir=out, progress=False
    )
    assert record["report"] == str(out / "report.html")
    page = (out / "report.html").read_text()
    assert all(f'<section id="{s}">' in page for s in SECTIONS)
    assert (out / "analysis" / "analysis.json").is_file()  # the report implies the diagnostics


def test_evaluate_report_flag(tiny_checkpoint, tiny_coco, tmp_path, capsys):
    from detection.cli import evaluate

    ann, images = tiny_coco
    out = tmp_path / "eval"
    argv = ["--checkpoint", str(tiny_checkpoint), "--output-dir", str(out), "--no-progress",
            "--report", "data.test.name=null", f"data.test.annotations={ann}",
            f"data.test.images={images}"]  # fmt: skip
    assert evaluate.main(argv) == 0
    stdout = capsys.readouterr().out
    assert f"wrote the report {out / 'report.html'}" in stdout
    page = (out / "report.html").read_text()
    assert all(f'<section id="{s}">' in page for s in SECTIONS)
