"""Learning-rate schedule and optimizer parameter groups."""

import json
import math

import pytest
import torch
from torch import nn

from detection.config import ConfigError, load_config
from detection.engine.optim import build_optimizer, build_scheduler, param_groups


def lrs_of(cfg) -> list[float]:
    """The LR of every iteration of cfg's schedule, on a one-layer model."""
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.solver.max_iter):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_and_steps():
    cfg = load_config(
        None,
        [
            "solver.base_lr=0.02",
            "solver.warmup_iters=100",
            "solver.warmup_factor=0.001",
            "solver.steps=[300, 400]",
            "solver.max_iter=500",
            "solver.gamma=0.1",
        ],
    )
    lrs = lrs_of(cfg)
    assert lrs[0] == pytest.approx(0.02 * 0.001)  # warmup start
    assert lrs[50] == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))  # half way: linear
    assert lrs[100] == pytest.approx(0.02)  # after warmup
    assert lrs[299] == pytest.approx(0.02)
    assert lrs[300] == pytest.approx(0.002)  # first step
    assert lrs[400] == pytest.approx(0.0002)  # second step
    assert lrs[-1] == pytest.approx(0.0002)  # the end
    assert all(a <= b for a, b in zip(lrs[:100], lrs[1:101], strict=True))


def test_weight_decay_groups():
    cfg = load_config(None, ["solver.weight_decay=1e-4", "solver.weight_decay_norm=0.0"])
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.Linear(4, 2)
    )
    model[0].weight.requires_grad_(False)
    groups = {g["weight_decay"]: g["params"] for g in param_groups(model, cfg)}
    norm_params = {id(p) for m in (model[1], model[2]) for p in m.parameters()}
    assert {id(p) for p in groups[0.0]} == norm_params
    assert {id(p) for p in groups[1e-4]} == {
        id(model[0].bias),
        id(model[3].weight),
        id(model[3].bias),
    }
    cfg = load_config(None, ["solver.weight_decay_bias=0.0"])
    groups = {g["weight_decay"]: g["params"] for g in param_groups(model, cfg)}
    assert id(model[3].bias) in {id(p) for p in groups[0.0]}
    total = sum(len(g["params"]) for g in param_groups(model, cfg))
    assert total == sum(p.requires_grad for p in model.parameters())
    assert isinstance(build_optimizer(model, cfg), torch.optim.SGD)


def test_cpu_optimizer_is_fused_and_updates_as_plain_sgd():
    cfg = load_config(None, ["solver.base_lr=0.02", "solver.weight_decay=1e-4"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GroupNorm(4, 16), nn.Linear(16, 3))
    twin = nn.Sequential(nn.Linear(8, 16), nn.GroupNorm(4, 16), nn.Linear(16, 3))
    twin.load_state_dict(model.state_dict())
    opt = build_optimizer(model, cfg)
    assert opt.defaults["fused"]
    # the reference: torch's single-tensor SGD with the same parameter groups
    ref = torch.optim.SGD(
        param_groups(twin, cfg), lr=0.02, momentum=0.9, foreach=False, fused=False
    )
    for _ in range(5):
        x = torch.randn(4, 8)
        for net, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            net(x).square().sum().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_no_fused_sgd_with_a_grad_scaler():
    """Fused SGD leaves its momentum uninitialised when a GradScaler skips its first step."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    cfg = load_config(None)
    assert build_optimizer(model, cfg).defaults["fused"]  # CPU has the fused kernel
    scaled = build_optimizer(model, cfg, grad_scaling=True).defaults
    assert not scaled["fused"] and scaled["foreach"]


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_cosine_and_linear_decay_end_at_max_iter(decay):
    cfg = load_config(
        None,
        [
            "solver.base_lr=0.02",
            "solver.warmup_iters=10",
            "solver.warmup_factor=0.1",
            "solver.steps=[50]",  # unused by these decays
            "solver.max_iter=100",
            f"solver.lr_schedule={decay}",
        ],
    )
    lrs = lrs_of(cfg)
    if decay == "cosine":
        shape = lambda t: 0.5 * (1 + math.cos(math.pi * t))  # noqa: E731
    else:
        shape = lambda t: 1 - t  # noqa: E731
    assert lrs[0] == pytest.approx(0.02 * 0.1)  # the warmup multiplies the decay
    assert lrs[5] == pytest.approx(0.02 * shape(0.05) * (0.1 * 0.5 + 0.5))
    for it in (10, 50, 51, 75, 99):  # no step at 50: a smooth decay towards 0 at 100
        assert lrs[it] == pytest.approx(0.02 * shape(it / 100)), it
    assert lrs[50] == pytest.approx(0.01)  # half way: half the LR, on either curve
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert 0 < lrs[-1] < 0.02 * 0.011  # nearly 0 at the last iteration, never below


def test_an_unknown_lr_schedule_is_refused():
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(None, ["solver.lr_schedule=poly"])


def test_a_resumed_run_follows_the_configs_longer_cosine(tiny_config):
    from detection.engine.trainer import Trainer

    path, out = tiny_config
    base = ["solver.lr_schedule=cosine", "solver.checkpoint_period=100"]
    Trainer(load_config(path, [*base, "solver.max_iter=4"]), log=lambda m: None).train()
    cfg = load_config(path, [*base, "solver.max_iter=8"])
    trainer = Trainer(cfg, log=lambda m: None, resume=True)
    with pytest.warns(UserWarning, match="changed schedule"):
        trainer.resume()
    assert trainer.iteration == 4
    trainer.train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["iteration"]: r["lr"] for r in records if "lr" in r}
    # iteration k runs at the scheduler's LR of index k - 1: the 8-iteration cosine from 5 on,
    # not the 4-iteration one (which ends at 0 and would leave the extension without updates)
    for k in (5, 6, 7, 8):
        assert lrs[k] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * (k - 1) / 8))), k
