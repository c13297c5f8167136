"""`make pretrain-demo` in short: plain-20 and ResNet-20 on the embedded shapes set, then the
error curves of both; and the curves' arithmetic on records written by hand."""

from __future__ import annotations

import json

import pytest
from helpers import ROOT

from detection.classification.curves import (
    group_seeds,
    mean_curve,
    plot_error_curves,
    read_run,
    summary_table,
)
from detection.cli import train_classifier as tool


def _write_run(folder, train_errs, val_errs, ipe=4):
    folder.mkdir()
    lines = [
        {"iteration": i + 1, "epoch": (i + 1) / ipe, "loss": 1.0, "train_err": e}
        for i, e in enumerate(train_errs)
    ]
    lines += [{"iteration": (i + 1) * ipe, "val/top1_err": e} for i, e in enumerate(val_errs)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "{torn")


def test_final_errors_and_the_plot(tmp_path):
    _write_run(tmp_path / "plain", [80, 70, 60, 50, 40, 30, 20, 10], [55, 25])
    run = read_run(tmp_path / "plain")  # the torn last line is skipped
    assert run.final_train_error() == pytest.approx((40 + 30 + 20 + 10) / 4)  # the last epoch
    assert run.final_val_error() == 25
    _write_run(tmp_path / "res", [80, 60], [])
    table = summary_table([run, read_run(tmp_path / "res")])
    assert "plain" in table and "25.00%" in table and "70.00%" in table
    out = plot_error_curves([run, read_run(tmp_path / "res")], tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        read_run(tmp_path / "empty")


def test_seeds_of_one_experiment_are_averaged(tmp_path):
    _write_run(tmp_path / "plain20_s0", [80, 70, 60, 50], [40])
    _write_run(tmp_path / "plain20_s1", [80, 60, 40, 30], [20])
    _write_run(tmp_path / "resnet20_s0", [70, 50, 30, 20, 10], [10])
    _write_run(tmp_path / "other", [50, 40, 30, 20], [])
    runs = [read_run(tmp_path / n) for n in ("plain20_s0", "resnet20_s0", "plain20_s1", "other")]
    groups = group_seeds(runs)
    assert {k: [r.name for r in v] for k, v in groups.items()} == {
        "plain20": ["plain20_s0", "plain20_s1"],
        "resnet20": ["resnet20_s0"],
        "other": ["other"],
    }
    # the mean over the iterations every seed logged
    assert mean_curve(groups["plain20"], "train_err") == ([1, 2, 3, 4], [80, 65, 50, 40])
    assert mean_curve(groups["plain20"], "val/top1_err") == ([4], [30])
    table = summary_table(runs)
    # final training error = the last epoch's mean: (80+70+60+50)/4 and (80+60+40+30)/4
    assert "plain20 (mean of 2)" in table and "58.75%" in table and "30.00%" in table
    assert "(train 52.50..65.00%)" in table and "resnet20 (mean" not in table
    out = plot_error_curves(runs, tmp_path / "seeds.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # about 1 minute: the set's 6000 images, two nets for two epochs
def test_short_pretrain_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path / "datasets"))
    # batch 128 (39 iterations an epoch): the demo's batch 32 runs best on one core per net
    # (make pretrain-demo sets that), and this test runs in the pytest process with all of them
    short = [
        "solver.ims_per_batch=128",
        "solver.max_epochs=2",
        "solver.steps=[2]",
        "test.eval_period=39",
    ]
    for name in ("plain20", "resnet20"):
        config = ROOT / "configs" / "classification" / f"shapes_{name}.yaml"
        argv = ["--config", str(config), f"output_dir={tmp_path / name}", *short]
        assert tool.main(argv) == 0
    png = tmp_path / "degradation.png"
    argv = ["--curves", str(tmp_path / "plain20"), str(tmp_path / "resnet20"), "--output", str(png)]
    assert tool.main(argv) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "plain20" in out and "resnet20" in out
    for name in ("plain20", "resnet20"):
        run = read_run(tmp_path / name)
        assert [r["iteration"] for r in run.val] == [39, 78]  # 5000 images, 128 per batch
        # both learn: from chance (80% for five classes) to clearly better in two epochs
        assert run.train[0]["train_err"] > 60 and run.final_train_error() < 75
