"""model_best.pth by test.best_metric, early stopping by solver.patience, and their resume.

The evaluations are scripted (AP per iteration), so which one is best is known in advance."""

import pytest
import torch
from helpers import read_jsonl

from detection.config import ConfigError, load_config
from detection.engine.hooks import BestCheckpoint
from detection.engine.trainer import Trainer


def scripted(ap, *, ap50=None, seen=None, crash_at=None, calls=None):
    """An `evaluate` returning AP (and AP50) by iteration; records the weights it saw (and, in
    `calls`, each call's iteration and `final` flag)."""

    def evaluate(model, iteration, final=None):
        if calls is not None:
            calls.append((iteration, final))
        if iteration == crash_at:
            raise RuntimeError(f"simulated crash in the evaluation at {iteration}")
        if seen is not None:
            seen[iteration] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bbox = {"AP": ap[iteration], "AP50": (ap50 or ap)[iteration]}
        return {"bbox": bbox, "iteration": iteration}

    return evaluate


def load(path):
    return torch.load(path, weights_only=True)


def best_records(out):
    return [r for r in read_jsonl(out / "metrics.jsonl") if "best_checkpoint" in r]


@pytest.mark.parametrize(("metric", "best_at"), [("AP", 2), ("AP50", 3)])
def test_best_checkpoint_is_chosen_by_the_metric(tiny_config, metric, best_at):
    path, out = tiny_config
    cfg = load_config(
        path,
        [
            "test.eval_period=1",
            "solver.max_iter=3",
            "solver.checkpoint_period=100",  # no periodic checkpoint: only best and final
            f"test.best_metric={metric}",
        ],
    )
    ap, ap50 = {1: 1.0, 2: 3.0, 3: 2.0}, {1: 5.0, 2: float("nan"), 3: 6.0}
    seen = {}
    pointer_during_training = []

    def evaluate(model, iteration, final=None):
        pointer_during_training.append((out / "last_checkpoint").exists())
        return scripted(ap, ap50=ap50, seen=seen)(model, iteration, final)

    result = Trainer(cfg, evaluate=evaluate).train()
    assert sorted(seen) == [1, 2, 3] and result["eval"]["iteration"] == 3
    best = load(out / "model_best.pth")
    assert best["iteration"] == best_at
    assert best["model"].keys() == seen[best_at].keys()
    for k, v in seen[best_at].items():
        assert torch.equal(best["model"][k], v), k
    weights = best["model"]["roi_heads.predictor.cls_score.weight"]
    assert not torch.equal(weights, seen[5 - best_at]["roi_heads.predictor.cls_score.weight"])
    # model_best.pth (at 1, 2) never moves the pointer: --resume continues the last periodic
    # or final checkpoint (model_final.pth is written before the final evaluation)
    assert pointer_during_training == [False, False, True]
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    # every new best is recorded (a NaN AP50 is no improvement)
    expected = {"AP": [(1, 1.0), (2, 3.0)], "AP50": [(1, 5.0), (3, 6.0)]}[metric]
    assert [(r["iteration"], r[f"best/{metric}"]) for r in best_records(out)] == expected
    assert {r["best_checkpoint"] for r in best_records(out)} == {"model_best.pth"}
    final = load(out / "model_final.pth")
    stale = 3 - best_at
    assert final["best"] == {
        "metric": metric,
        "value": dict(expected)[best_at],
        "iteration": best_at,
        "stale": stale,
        "evaluated": 3,
    }


def test_no_best_checkpoint_with_only_the_final_evaluation(tiny_config):
    path, out = tiny_config
    cfg = load_config(path, ["test.eval_period=0", "solver.max_iter=1"])
    result = Trainer(cfg, evaluate=scripted({1: 1.0})).train()
    assert result["eval"]["bbox"]["AP"] == 1.0
    assert not (out / "model_best.pth").exists() and not best_records(out)


def test_patience_stops_training(tiny_config):
    path, out = tiny_config
    cfg = load_config(
        path,
        [
            "test.eval_period=1",
            "solver.patience=2",
            "solver.max_iter=20",
            "solver.log_period=3",
            "solver.checkpoint_period=100",
        ],
    )
    ap = {1: 1.0, 2: 3.0, 3: 2.0, 4: 3.0}  # a tie (4) is no improvement
    seen, lines, calls = {}, [], []
    result = Trainer(cfg, evaluate=scripted(ap, seen=seen, calls=calls), log=lines.append).train()
    # the evaluation at 4 ends training; the final evaluation (the one that writes eval/) runs
    # on that same model, flagged final, and does not count as one more without improvement
    assert sorted(seen) == [1, 2, 3, 4] and result["eval"]["iteration"] == 4
    assert calls == [(1, False), (2, False), (3, False), (4, False), (4, True)]
    assert any(
        "early stop at iteration 4: bbox/AP has not improved for 2 evaluations "
        "(solver.patience=2); the best, bbox/AP=3, was at iteration 2 (model_best.pth)" in line
        for line in lines
    ), lines
    assert load(out / "model_final.pth")["iteration"] == 4
    assert load(out / "model_best.pth")["iteration"] == 2
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    # the losses of the last, partial log period (iteration 4 of 3..6) are written too
    records = [r for r in read_jsonl(out / "metrics.jsonl") if "total_loss" in r]
    assert [r["iteration"] for r in records] == [3, 4] and result["iteration"] == 4


def test_resume_continues_the_best_and_the_patience_count(tiny_config, tmp_path):
    """A run that crashes in its evaluation at 4 and is resumed from model_0000003.pth stops
    where the uninterrupted run stops, with the same best: had the checkpoint not kept the
    count of evaluations without improvement (1 at iteration 3), it would run on past 4; had it
    not kept the best AP (3), the AP of 2 at 4 would be a new best."""
    path, out = tiny_config
    ap = {1: 1.0, 2: 3.0, 3: 2.0, 4: 2.0, 5: 9.0, 6: 9.5}
    overrides = [
        "test.eval_period=1",
        "solver.patience=2",
        "solver.max_iter=6",
        "solver.checkpoint_period=3",
    ]
    whole = load_config(path, [*overrides, f"output_dir={tmp_path / 'whole'}"])
    Trainer(whole, evaluate=scripted(ap)).train()
    expected = load(tmp_path / "whole/model_final.pth")
    assert expected["iteration"] == 4 and expected["best"]["stale"] == 2

    cfg = load_config(path, overrides)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(cfg, evaluate=scripted(ap, crash_at=4)).train()
    assert (out / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert load(out / "model_0000003.pth")["best"]["stale"] == 1
    trainer = Trainer(cfg, evaluate=scripted(ap))
    trainer.resume()
    assert trainer.iteration == 3 and trainer.best.value == 3.0
    trainer.train()
    final = load(out / "model_final.pth")
    assert final["iteration"] == 4 and final["best"] == expected["best"]
    assert load(out / "model_best.pth")["iteration"] == 2
    for k, v in expected["model"].items():
        assert torch.equal(final["model"][k], v), k  # exact resume
    # the metrics file holds each record once, as the uninterrupted run's
    assert best_records(out) == best_records(tmp_path / "whole")


@pytest.mark.parametrize("eval_period", [0, -1])
def test_patience_needs_periodic_evaluation(tiny_config, eval_period):
    path, _ = tiny_config
    overrides = ["solver.patience=2", f"test.eval_period={eval_period}"]
    with pytest.raises(ConfigError, match=r"solver.patience=2 counts periodic evaluations"):
        load_config(path, overrides)


def test_resume_ranked_by_another_metric_starts_afresh():
    best = BestCheckpoint("AP50", patience=2, enabled=True)
    state = {"metric": "AP", "value": 3.0, "iteration": 2, "stale": 1, "evaluated": 3}
    problem = best.load_state_dict(state)
    assert "kept the best bbox/AP, this run ranks by test.best_metric=AP50" in problem
    assert (best.value, best.iteration, best.stale) == (None, None, 0)
    assert BestCheckpoint("AP", 2, True).load_state_dict(state) is None
