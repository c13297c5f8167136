"""Ablation sets: the shipped set files, their format's errors, and a tiny run end to end."""

import csv
import sys
from pathlib import Path

import pytest

from detection.analysis.ablation import load_ablation_set, schedule_differences
from detection.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from detection.cli.ablation import main  # noqa: E402

SETS = ROOT / "configs" / "shapes" / "ablations"


@pytest.mark.parametrize(
    "name, members, backbones",
    [
        (
            "plain_vs_residual",
            ["plain18", "R18_A", "plain34", "R34_A"],
            [("resnet18", "none"), ("resnet18", "A"), ("resnet34", "none"), ("resnet34", "A")],
        ),
        (
            "shortcuts",
            ["R34_A", "R34_B", "R34_C"],
            [("resnet34", "A"), ("resnet34", "B"), ("resnet34", "C")],
        ),
    ],
)
def test_shipped_sets(name, members, backbones):
    ablation = load_ablation_set(SETS / f"{name}.yaml")
    assert [m.name for m in ablation.members] == members
    assert ablation.baseline == members[0]
    configs = {m.name: ablation.member_config(m) for m in ablation.members}
    got = [(c.model.backbone.name, c.model.backbone.shortcut) for c in configs.values()]
    assert got == backbones
    assert schedule_differences(configs) == []  # one schedule for all members
    assert {c.model.roi_heads.box_head for c in configs.values()} == {"res5"}
    dirs = {c.output_dir for c in configs.values()}
    assert dirs == {f"output/shapes/ablations/{name}/{m}" for m in members}


def _write_set(tmp_path: Path, body: str) -> Path:
    (tmp_path / "m.yaml").write_text("model: {backbone: {name: resnet18}}\n")
    path = tmp_path / "set.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    "body, error, message",
    [
        ("members: [m.yaml]\nmember: []\n", ConfigError, "unknown key"),
        ("members: []\n", ConfigError, "non-empty list"),
        ("members: [nope.yaml]\n", FileNotFoundError, "relative to the set file"),
        ("members: [m.yaml, m.yaml]\n", ConfigError, "used twice"),
        ("members: [m.yaml]\nbaseline: other\n", ConfigError, "not a member"),
        ("members: [m.yaml]\noverrides: model.backbone.name=resnet34\n", ConfigError, "list"),
    ],
)
def test_set_errors(tmp_path, body, error, message):
    with pytest.raises(error, match=message):
        load_ablation_set(_write_set(tmp_path, body))


def test_member_overrides_and_output_dir(tmp_path):
    body = (
        "members: [m.yaml, {config: m.yaml, name: deep, overrides: [model.backbone.name=resnet34]}]"
        "\nbaseline: deep\noverrides: [solver.max_iter=7]\n"
    )
    ablation = load_ablation_set(_write_set(tmp_path, body), tmp_path / "runs")
    assert ablation.name == "set" and ablation.baseline == "deep"
    m, deep = (ablation.member_config(x, ["seed=5"]) for x in ablation.members)
    assert (m.model.backbone.name, deep.model.backbone.name) == ("resnet18", "resnet34")
    assert m.solver.max_iter == deep.solver.max_iter == 7 and deep.seed == 5
    assert deep.output_dir == str(tmp_path / "runs" / "deep")
    with pytest.raises(ConfigError, match="--output-dir"):
        ablation.member_config(ablation.members[0], ["output_dir=x"])


TINY = """\
_base_: {root}/configs/shapes/Base-shapes.yaml
model:
  backbone: {{name: resnet18, norm: GN, freeze_at: 0, shortcut: {shortcut}}}
  rpn: {{pre_nms_topk_train: 256, post_nms_topk_train: 32, pre_nms_topk_test: 256,
         post_nms_topk_test: 16}}
  roi_heads: {{batch_size_per_image: 16, pooler_resolution: 8}}
input: {{min_size_train: [128], max_size_train: 192, min_size_test: 128, max_size_test: 192,
        flip: false}}
data:
  train: {{annotations: {train}, images: {images}}}
  test: {{annotations: {test}, images: {images}}}
  num_workers: 0
  aspect_ratio_grouping: false
solver: {{ims_per_batch: 2, base_lr: 0.01, max_iter: 3, steps: [2], warmup_iters: 1,
          checkpoint_period: 100, log_period: 1}}
test: {{eval_period: 0}}
"""


def test_run_ablation_end_to_end(tmp_path, subset, shapes_val, capsys):
    train, test = subset(8, "train"), subset(3, "test")
    for shortcut, name in (("none", "plain"), ("B", "res")):
        (tmp_path / f"{name}.yaml").write_text(
            TINY.format(root=ROOT, shortcut=shortcut, train=train, test=test, images=shapes_val[1])
        )
    (tmp_path / "tiny.yaml").write_text(
        "description: tiny plain vs residual\nmembers: [plain.yaml, res.yaml]\n"
        f"output_dir: {tmp_path / 'runs'}\n"
    )
    assert main([str(tmp_path / "tiny.yaml"), "seed=1"]) == 0
    printed = capsys.readouterr().out
    assert "tiny plain vs residual" in printed and "| plain | plain-18 |" in printed
    runs = tmp_path / "runs"
    for member in ("plain", "res"):
        assert (runs / member / "eval" / "metrics.json").is_file()
        assert (runs / member / "model_final.pth").is_file()
    with (runs / "ablation.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["member"], r["model"], r["baseline"]) for r in rows] == [
        ("plain", "plain-18", "True"),
        ("res", "ResNet-18 B", "False"),
    ]
    assert all(r["status"] == "ok" and r["iterations"] == "3" for r in rows)
    assert all(float(r["final_loss"]) > 0 and r["map"] != "" and r["map50"] != "" for r in rows)
    # option B adds the projection shortcuts (res3..res5 first blocks): more parameters
    assert int(rows[1]["params"]) > int(rows[0]["params"])
    assert float(rows[1]["delta_map"]) == pytest.approx(
        float(rows[1]["map"]) - float(rows[0]["map"]), abs=1e-3
    )
    assert (runs / "ablation.md").read_text().startswith("**tiny plain vs residual**")

    # --reuse: both members are evaluated with the same config, nothing is retrained
    stamp = (runs / "res" / "model_final.pth").stat().st_mtime_ns
    assert main([str(tmp_path / "tiny.yaml"), "seed=1", "--reuse"]) == 0
    assert (runs / "res" / "model_final.pth").stat().st_mtime_ns == stamp
    assert "reusing" in capsys.readouterr().err
    with (runs / "ablation.csv").open() as f:
        assert list(csv.DictReader(f)) == rows


def test_a_failing_member_is_reported(tmp_path, monkeypatch, capsys):
    import detection.analysis.ablation as ablation

    def diverge(cfg, **kwargs):
        if cfg.model.backbone.shortcut == "none":
            raise FloatingPointError("non-finite loss at iteration 2: loss_box=nan")
        raise ConfigError("this member is not trained in this test")

    monkeypatch.setattr(ablation, "train_and_evaluate", diverge)
    (tmp_path / "plain.yaml").write_text("model: {backbone: {name: resnet18, shortcut: none}}\n")
    (tmp_path / "s.yaml").write_text(f"members: [plain.yaml]\noutput_dir: {tmp_path / 'o'}\n")
    assert main([str(tmp_path / "s.yaml")]) == 1
    printed = capsys.readouterr().out
    assert (
        "| plain | plain-18 | n/a | n/a | baseline | baseline | n/a | failed: non-finite" in printed
    )
    assert (tmp_path / "o" / "ablation.csv").is_file()


def test_a_run_that_took_its_classes_or_iterations_from_the_data_is_done(tiny_config):
    """--reuse: a config with num_classes null or a schedule in epochs equals the record of the
    run it made, which holds the resolved values."""
    from detection.analysis.ablation import as_trained
    from detection.config import load_config, to_dict

    path, _ = tiny_config
    given = to_dict(load_config(path, ["model.roi_heads.num_classes=null", "solver.max_epochs=2"]))
    trained = to_dict(load_config(path, ["model.roi_heads.num_classes=5", "solver.max_epochs=2"]))
    trained["solver"].update(max_iter=40, steps=[27], warmup_iters=2)
    assert as_trained(given, trained) == trained
    other = to_dict(load_config(path, ["model.roi_heads.num_classes=3", "seed=1"]))
    assert as_trained(given, other) != other  # a different seed stays different
