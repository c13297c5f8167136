"""solver.max_seconds: the schedule scaled to the iterations that fit in a time budget.

The trainer's clock is replaced by one that advances two seconds per iteration, so the decision
is exact wherever the test runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from detection.config import ConfigError, load_config
from detection.engine import budget
from detection.engine.budget import replanned_steps, scaled_steps
from detection.engine.trainer import Trainer
from detection.evaluation.evaluator import training_evaluator

SECONDS_PER_ITER = 2.0


def test_scaled_steps_keep_their_fractions():
    assert scaled_steps([240], 300, 1000) == [800]
    assert scaled_steps([6, 9], 12, 30) == [15, 22]  # 22.5 rounds to even
    assert scaled_steps([1, 11], 12, 2) == []  # at 0 or at the end: no step


def test_a_budget_must_be_positive(tiny_config):
    path, _ = tiny_config
    with pytest.raises(ConfigError, match="max_seconds must be > 0"):
        load_config(path, ["solver.max_seconds=0"])


def _train(path, monkeypatch, overrides, *, resume=False):
    cfg = load_config(path, ["solver.max_iter=8", "solver.steps=[4]", *overrides])
    lines: list[str] = []
    trainer = Trainer(cfg, log=lines.append, resume=resume)
    if resume:
        trainer.resume()
    # the clock: two seconds per iteration done (as the hook reads it after each step)
    first = trainer.iteration
    monkeypatch.setattr(
        budget.time, "perf_counter", lambda: SECONDS_PER_ITER * (trainer.iteration - first)
    )
    trainer.train()
    return trainer, lines


def _lrs(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["iteration"]: r["lr"] for r in records if "lr" in r}


def test_the_schedule_stretches_to_the_budget(tiny_config, monkeypatch):
    path, out = tiny_config
    trainer, lines = _train(path, monkeypatch, ["solver.max_seconds=32", "solver.log_period=1"])
    # the 8-iteration schedule ends before 10 are timed: the decision comes at its last step but
    # one, 7 (2 left out, 5 timed at 2 s); 18 s are left: 9 more
    assert trainer.iteration == trainer.max_iter == 16
    said = [line for line in lines if line.startswith("time budget solver.max_seconds=32")]
    assert said and "max_iter=16" in said[0] and "LR steps at [8]" in said[0], lines
    assert any("16 iterations in 32 s of 32 s (+0.0%)" in line for line in lines), lines
    lrs = _lrs(out)
    assert max(lrs) == 16
    # the moved step: the LR of the 9th iteration (scheduler index 8) is the first decayed one
    assert lrs[8] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.001)
    # the budget's decision is kept in the checkpoint; the config stays as given
    ckpt = torch.load(out / "model_final.pth", weights_only=False)
    assert ckpt["budget"]["max_iter"] == 16
    assert ckpt["config"]["solver"]["max_iter"] == 8


def test_a_cosine_decay_waits_for_the_budget_and_ends_with_it(tiny_config, monkeypatch):
    path, out = tiny_config
    overrides = ["solver.max_seconds=32", "solver.log_period=1", "solver.lr_schedule=cosine"]
    trainer, lines = _train(path, monkeypatch, overrides)
    # decided at 7 as above: max_iter 16, the cosine ending there instead of at the config's 8
    assert trainer.iteration == trainer.max_iter == 16
    said = [line for line in lines if line.startswith("time budget solver.max_seconds=32")]
    assert said and "max_iter=16" in said[0] and "cosine LR decay to 0 at 16" in said[0], lines
    lrs = _lrs(out)  # the LR of iteration k is the scheduler's at index k - 1
    # held at base_lr after the 2-iteration warmup until the decision (the 8-iteration cosine
    # would have been at 0.0085 by iteration 3)
    assert [lrs[k] for k in (3, 4, 5, 6, 7)] == pytest.approx([0.01] * 5)
    for k in (8, 12, 16):
        assert lrs[k] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * (k - 1) / 16))), k


def test_a_short_budget_shrinks_the_schedule(tiny_config, monkeypatch):
    path, _ = tiny_config
    # after 10 iterations (8 timed), 20 s of a 14 s budget are spent: training stops there
    overrides = ["solver.max_iter=12", "solver.steps=[6]", "solver.max_seconds=14"]
    trainer, lines = _train(path, monkeypatch, overrides)
    assert trainer.iteration == trainer.max_iter == 10
    assert any("max_iter=10" in line and "LR steps at [5]" in line for line in lines), lines


def test_a_resumed_run_keeps_the_decision(tiny_config, monkeypatch):
    path, out = tiny_config
    overrides = ["solver.max_seconds=32", "solver.checkpoint_period=12"]
    whole, _ = _train(path, monkeypatch, overrides)
    final = {k: v.clone() for k, v in whole.model.state_dict().items()}
    # the same run stopped at its checkpoint of iteration 12, then resumed
    (out / "last_checkpoint").write_text("model_0000012.pth")
    resumed, lines = _train(path, monkeypatch, overrides, resume=True)
    assert resumed.iteration == resumed.max_iter == 16
    assert not any(line.startswith("time budget solver") for line in lines)  # not decided again
    assert any("16 iterations in 32 s" in line for line in lines), lines
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, final[name]), name


def test_replanned_steps_keep_the_taken_ones():
    # step 6 of 8 placed at 22 of 30; at iteration 21 the end moves to 26: 19.5 -> 20, not
    # before the next iteration (22)
    assert replanned_steps([6], 8, [22], 21, 26) == [22]
    assert replanned_steps([6], 8, [22], 10, 16) == [12]  # not taken yet: moves back
    assert replanned_steps([6], 8, [22], 23, 25) == [22]  # taken: stays
    assert replanned_steps([2, 6], 8, [5, 15], 7, 40) == [5, 30]
    assert replanned_steps([6], 8, [22], 21, 22) == []  # at the end: no step


def test_a_run_that_slows_down_is_cut_back_to_its_budget(tiny_config, monkeypatch):
    path, out = tiny_config
    cfg = load_config(
        path, ["solver.max_iter=8", "solver.steps=[6]", "solver.max_seconds=60"]
        + ["solver.log_period=1"]
    )  # fmt: skip
    lines: list[str] = []
    trainer = Trainer(cfg, log=lines.append)
    # 2 s per iteration up to iteration 20, then 4 s (another job took half the machine)
    clock = lambda: 2.0 * min(trainer.iteration, 20) + 4.0 * max(0, trainer.iteration - 20)  # noqa: E731
    monkeypatch.setattr(budget.time, "perf_counter", clock)
    trainer.train()
    # decided at 7 (the schedule's last step but one): 46 s left at 2 s -> 30, step 6/8 -> 22;
    # looks every 8 iterations: at 15 nothing moves; at 23, 22 s since 15 (2.75 s/iteration)
    # with 8 s left -> 23 + 2 = 25; the step at 22 is taken and stays
    said = [line for line in lines if line.startswith("time budget")]
    assert "max_iter=30" in said[0] and "LR steps at [22]" in said[0], said
    assert "at iteration 23" in said[1] and "max_iter=25 (was 30)" in said[1], said
    assert "LR steps at [22] (were [22])" in said[1] and len(said) == 3, said
    assert trainer.iteration == trainer.max_iter == 25
    assert "25 iterations in 60 s of 60 s (+0.0%)" in said[-1], said
    lrs = _lrs(out)
    # the step at 22: the 23rd iteration (scheduler index 22) is the first decayed one
    assert lrs[22] == pytest.approx(0.01) and lrs[23] == pytest.approx(0.001)


def test_a_budget_that_ends_before_the_config_max_iter_still_writes_the_result(
    tiny_config, monkeypatch
):
    # the final evaluation writes eval/metrics.json however the budget moved the end: this one
    # stops at iteration 10 of the config's 12 (it used to be taken for a periodic evaluation,
    # kept in memory, and the run had no result file)
    path, out = tiny_config
    overrides = ["solver.max_iter=12", "solver.steps=[6]", "solver.max_seconds=14"]
    cfg = load_config(path, [*overrides, "test.eval_period=0"])
    trainer = Trainer(cfg, log=lambda m: None, evaluate=training_evaluator(cfg, 0, 1))
    monkeypatch.setattr(budget.time, "perf_counter", lambda: SECONDS_PER_ITER * trainer.iteration)
    result = trainer.train()
    assert trainer.iteration == trainer.max_iter == 10
    written = json.loads((out / "eval" / "metrics.json").read_text())
    assert written["bbox"]["AP"] == pytest.approx(result["eval"]["bbox"]["AP"])
