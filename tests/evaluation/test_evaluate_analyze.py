"""tools/evaluate.py --analyze and the diagnostics after training (test.analyze)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from PIL import Image

from detection import load_model
from detection.cli import evaluate
from detection.evaluation import analyze_detections, evaluate_checkpoint, training_evaluator


def data_overrides(ann, images):
    return ["data.test.name=null", f"data.test.annotations={ann}", f"data.test.images={images}"]


def run_tool(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = evaluate.main([str(a) for a in argv])
    return rc, out.getvalue()


def test_evaluate_analyze_writes_the_folder(tiny_checkpoint, tiny_coco, tmp_path):
    ann, images = tiny_coco
    out = tmp_path / "eval"
    # 0.05 = test.score_thresh: every detection of the random model counts
    argv = ["--checkpoint", tiny_checkpoint, "--output-dir", out, "--no-progress", "--analyze",
            "--score-thresh", "0.05", *data_overrides(ann, images)]  # fmt: skip
    rc, stdout = run_tool(argv)
    assert rc == 0
    folder = out / "analysis"
    assert {p.name for p in folder.iterdir()} == {
        "analysis.json", "summary.md", "confusion_matrix.png", "pr_red.png", "pr_green.png",
        "pr_blue.png",
    }  # fmt: skip
    for png in folder.glob("*.png"):
        with Image.open(png) as image:
            image.verify()
    summary = (folder / "summary.md").read_text()
    assert summary in stdout and "## Per class" in summary and "## Confusions" in summary
    assert f"wrote the diagnostics to {folder}/" in stdout
    assert stdout.index("| AP | AP50 |") < stdout.index("# Detection diagnostics")

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["analysis"] == {"dir": str(folder), "score_thresh": 0.05}
    # the same numbers as the library on the written detections, over the 3 evaluated images
    detections = json.loads((out / "detections.json").read_text())
    expected = analyze_detections(ann, detections, score_thresh=0.05)
    record = json.loads((folder / "analysis.json").read_text())
    assert record["pr_files"] == {n: f"pr_{n}.png" for n in ("red", "green", "blue")}
    del record["pr_files"]
    assert record == json.loads(json.dumps(expected))
    assert record["num_images"] == 3 and record["total"]["gt"] == 5
    assert record["total"]["detections"] == len(detections)  # no crowd regions to ignore


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--analyze", "--score-thresh", "1.5"], "--score-thresh must be in [0, 1], got 1.5"),
        (["--analyze", "--score-thresh", "nan"], "--score-thresh must be in [0, 1], got nan"),
        (["--score-thresh", "0.3"], "--score-thresh is the threshold of --analyze"),
        (["--analyze", "test.analyze_score_thresh=-0.5"], "must be in [0, 1], got -0.5"),
        (["test.analyze=true", "test.analyze_score_thresh=2"], "must be in [0, 1], got 2"),
    ],
)
def test_evaluate_analyze_errors(tiny_checkpoint, tiny_coco, tmp_path, capsys, extra, message):
    ann, images = tiny_coco
    out = tmp_path / "eval"
    argv = ["--checkpoint", tiny_checkpoint, "--output-dir", out, *extra]
    with pytest.raises(SystemExit) as exc:
        evaluate.main([str(a) for a in [*argv, *data_overrides(ann, images)]])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_training_writes_diagnostics_after_the_final_evaluation(
    tiny_checkpoint, tiny_coco, tmp_path
):
    ann, images = tiny_coco
    model = load_model(tiny_checkpoint, data_overrides(ann, images)[1:]).train()
    cfg = model.cfg
    cfg.output_dir = str(tmp_path / "run")
    cfg.test.analyze, cfg.test.analyze_score_thresh = True, 0.05
    evaluate_hook = training_evaluator(cfg, rank=0, world_size=1)
    evaluate_hook(model, 1)  # a periodic evaluation: nothing written
    assert not (tmp_path / "run").exists()
    metrics = evaluate_hook(model, cfg.solver.max_iter)
    folder = tmp_path / "run" / "eval" / "analysis"
    assert metrics["analysis"] == {"dir": str(folder), "score_thresh": 0.05}
    record = json.loads((folder / "analysis.json").read_text())
    assert record["num_images"] == 3 and record["score_thresh"] == 0.05
    assert (folder / "confusion_matrix.png").is_file() and (folder / "pr_red.png").is_file()

    # a run stopped early (solver.patience) ends before max_iter: final=True says so
    cfg.output_dir = str(tmp_path / "stopped")
    metrics = evaluate_hook(model, 3, final=True)
    folder = tmp_path / "stopped" / "eval" / "analysis"
    assert metrics["analysis"] == {"dir": str(folder), "score_thresh": 0.05}
    assert (folder / "analysis.json").is_file() and (folder.parent / "metrics.json").is_file()

    cfg.test.analyze_score_thresh = 1.5  # refused when the hook is made, before any training
    with pytest.raises(ValueError, match=r"test.analyze_score_thresh"):
        training_evaluator(cfg, rank=0, world_size=1)


def test_evaluate_checkpoint_follows_test_analyze(tiny_checkpoint, tiny_coco, tmp_path):
    """train.py --eval-only's path: test.analyze=true in the overrides writes the diagnostics."""
    ann, images = tiny_coco
    overrides = [*data_overrides(ann, images), "test.analyze=true", "test.analyze_score_thresh=0.3"]
    record = evaluate_checkpoint(
        tiny_checkpoint, overrides=overrides, output_dir=tmp_path / "e", progress=False
    )
    assert record["analysis"] == {"dir": str(tmp_path / "e" / "analysis"), "score_thresh": 0.3}
    assert json.loads((tmp_path / "e/analysis/analysis.json").read_text())["score_thresh"] == 0.3
    # analyze=False overrides the config
    record = evaluate_checkpoint(
        tiny_checkpoint, overrides=overrides, output_dir=tmp_path / "f", progress=False,
        analyze=False,
    )  # fmt: skip
    assert "analysis" not in record and not (tmp_path / "f" / "analysis").exists()
