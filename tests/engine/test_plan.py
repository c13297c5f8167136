"""What training settles from its data before the first iteration: classes, a schedule in
epochs, and a usable test set (a bad one fails within seconds, nothing written)."""

from __future__ import annotations

import json
import time

import pytest

from detection.config import ConfigError, load_config
from detection.data import build_dataset
from detection.engine.plan import epochs_to_iterations
from detection.engine.trainer import Trainer


def test_num_classes_null_takes_the_training_sets_classes(tiny_config):
    path, out = tiny_config
    cfg = load_config(path, ["model.roi_heads.num_classes=null", "solver.max_iter=1"])
    lines = []
    trainer = Trainer(cfg, log=lines.append)
    names = build_dataset(cfg, "train").class_names
    assert cfg.model.roi_heads.num_classes == len(names) == 5
    assert trainer.model.roi_heads.predictor.cls_score.out_features == 6  # with background
    said = [line for line in lines if line.startswith("model.roi_heads.num_classes=5")]
    assert said and ", ".join(names) in said[0]
    trainer.train()
    saved = (out / "config.yaml").read_text()
    assert "num_classes: 5" in saved  # the checkpoint and config.yaml hold the resolved count


def test_a_count_that_disagrees_with_the_data_names_both(tiny_config):
    path, out = tiny_config
    cfg = load_config(path, ["model.roi_heads.num_classes=3"])
    with pytest.raises(ConfigError, match=r"has 5 classes \(circle.*num_classes=3"):
        Trainer(cfg, log=lambda m: None)
    assert not out.exists()


def test_building_without_data_needs_a_count():
    from detection import build_model

    cfg = load_config("configs/shapes/demo_R18_FPN.yaml", ["model.roi_heads.num_classes=null"])
    with pytest.raises(ConfigError, match="num_classes is null"):
        build_model(cfg, load_weights=False)
    model = build_model(cfg, load_weights=False, class_names=["a", "b"])
    assert model.roi_heads.predictor.cls_score.out_features == 3


def test_epochs_become_iterations(tiny_config):
    path, _ = tiny_config
    cfg = load_config(
        path, ["solver.max_epochs=3", "solver.step_epochs=[2]", "solver.ims_per_batch=4"]
    )
    lines = []
    assert epochs_to_iterations(cfg, 10, lines.append) == 3  # ceil(10 / 4)
    assert cfg.solver.max_iter == 9 and cfg.solver.steps == [6]
    assert "3 epochs of 3 iterations" in lines[0] and "6 (epoch 2)" in lines[0]
    # without step_epochs the steps keep the config's shape: the 1x schedule's 2/3 and 8/9
    cfg = load_config(
        path,
        ["solver.max_epochs=9", "solver.ims_per_batch=2"]
        + ["solver.max_iter=90000", "solver.steps=[60000, 80000]"],
    )
    epochs_to_iterations(cfg, 20, lines.append)
    assert cfg.solver.max_iter == 90 and cfg.solver.steps == [60, 80]
    # real/scratch_R18_FPN.yaml's 300 iterations, step at 240, warmup 100: one epoch of 292
    # images keep the step at 80% and the warmup ends at that step, not after it
    cfg = load_config("configs/real/scratch_R18_FPN.yaml", ["solver.max_epochs=1"])
    assert (cfg.solver.max_iter, cfg.solver.steps, cfg.solver.warmup_iters) == (300, [240], 100)
    epochs_to_iterations(cfg, 292, lines.append)
    assert (cfg.solver.max_iter, cfg.solver.steps, cfg.solver.warmup_iters) == (73, [58], 58)
    said = "LR steps at iterations 58 (epoch 0.795); warmup cut to 58 iterations"
    assert lines[-1].endswith(said)
    # a cosine decay has no step for the warmup to end at: the warmup stays within max_iter
    cfg = load_config(
        "configs/real/scratch_R18_FPN.yaml", ["solver.max_epochs=1", "solver.lr_schedule=cosine"]
    )
    epochs_to_iterations(cfg, 292, lines.append)
    assert (cfg.solver.max_iter, cfg.solver.warmup_iters) == (73, 73)
    assert lines[-1].endswith("solver.max_iter=73; cosine LR decay; warmup cut to 73 iterations")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["solver.step_epochs=[1]"], "step_epochs needs solver.max_epochs"),
        (["solver.max_epochs=0"], "max_epochs must be > 0"),
        (["solver.max_epochs=4", "solver.step_epochs=[3, 2]"], "must be increasing"),
        (["solver.max_epochs=4", "solver.step_epochs=[4]"], r"inside \(0, solver.max_epochs=4\)"),
    ],
)
def test_bad_epoch_schedules_are_config_errors(tiny_config, overrides, message):
    path, _ = tiny_config
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_training_in_epochs_logs_both(tiny_config):
    path, out = tiny_config
    cfg = load_config(path, ["solver.max_epochs=0.005", "solver.log_period=1"])
    lines = []
    trainer = Trainer(cfg, log=lines.append)
    n = len(trainer.dataset)
    assert trainer.max_iter == cfg.solver.max_iter == round(0.005 * -(-n // 2))
    trainer.train()
    iteration_lines = [line for line in lines if line.startswith("iter ")]
    assert iteration_lines and all("(epoch " in line for line in iteration_lines)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["iteration"] for r in records) == trainer.max_iter


def broken_json(tmp_path, datasets_root):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    return [f"data.test.annotations={bad}", f"data.test.images={datasets_root}/shapes/val"]


def missing_folder(tmp_path, datasets_root):
    ann = datasets_root / "shapes" / "annotations" / "instances_val.json"
    return [f"data.test.annotations={ann}", f"data.test.images={tmp_path}/no_such_folder"]


def other_classes(tmp_path, datasets_root):
    ann = json.loads((datasets_root / "shapes/annotations/instances_val.json").read_text())
    ann["categories"] = ann["categories"][:3]
    keep = {c["id"] for c in ann["categories"]}
    ann["annotations"] = [a for a in ann["annotations"] if a["category_id"] in keep]
    path = tmp_path / "three.json"
    path.write_text(json.dumps(ann))
    return [f"data.test.annotations={path}", f"data.test.images={datasets_root}/shapes/val"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t, d: [f"data.test.annotations={t}/missing.json"], "missing.json"),
        (broken_json, "bad.json"),
        (missing_folder, "no_such_folder"),
        (other_classes, "has the classes"),
    ],
)
def test_a_bad_test_set_fails_before_the_first_iteration(
    tiny_config, tmp_path, datasets_root, make, message
):
    path, out = tiny_config
    overrides = ["data.test.name=null", "test.eval_period=0", *make(tmp_path, datasets_root)]
    if not any(o.startswith("data.test.images") for o in overrides):
        overrides.append(f"data.test.images={datasets_root}/shapes/val")
    cfg = load_config(path, overrides)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg, log=lambda m: None, evaluate=lambda *a, **k: {})
    assert time.perf_counter() - start < 30
    assert not out.exists()  # nothing written


def test_a_run_that_never_evaluates_does_not_open_the_test_set(tiny_config, tmp_path):
    path, _ = tiny_config
    overrides = ["data.test.name=null", f"data.test.annotations={tmp_path}/missing.json",
                 f"data.test.images={tmp_path}", "test.eval_period=-1"]  # fmt: skip
    Trainer(load_config(path, overrides), log=lambda m: None, evaluate=lambda *a, **k: {})
