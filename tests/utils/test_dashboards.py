"""Dashboards beside metrics.jsonl: TensorBoard's own reader finds the records, Weights & Biases
runs offline (no network), and a missing package is one notice (TensorBoard) or a clear error
(W&B, which was asked for)."""

from __future__ import annotations

import logging
import sys

import pytest

from detection.config import load_config
from detection.config.schema import DashboardConfig
from detection.engine.trainer import Trainer
from detection.utils import metrics as M

RECORDS = [
    {"iteration": 10, "total_loss": 1.5, "lr": 0.01, "precision": "fp32"},
    {"iteration": 20, "total_loss": 0.75, "lr": 0.01, "precision": "fp32"},
]


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'resdet[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def test_tensorboard_holds_the_records(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (pip install 'resdet[tensorboard]')",
    )
    writer = M.MetricsWriter(tmp_path, True, DashboardConfig(tensorboard=True))
    for record in RECORDS:
        writer.write(dict(record))
    writer.close()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["lr", "total_loss"]
    loss = [(e.step, e.value) for e in events.Scalars("total_loss")]
    assert loss == [(10, 1.5), (20, 0.75)]
    assert M.read_metrics(tmp_path) == RECORDS


def test_missing_tensorboard_is_one_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    M._notice.cache_clear()
    with caplog.at_level(logging.WARNING, logger=M.__name__):
        for _ in range(2):
            writer = M.MetricsWriter(tmp_path, True, DashboardConfig(tensorboard=True))
            assert writer.tb is None
    notices = [r.message for r in caplog.records if "TensorBoard logging is off" in r.message]
    assert len(notices) == 1 and "resdet[tensorboard]" in notices[0]
    writer.write(dict(RECORDS[0]))
    assert M.read_metrics(tmp_path) == RECORDS[:1]
    caplog.clear()
    M._notice.cache_clear()
    with caplog.at_level(logging.WARNING, logger=M.__name__):
        M.MetricsWriter(tmp_path, True, DashboardConfig(tensorboard=False))
    assert not caplog.records  # switched off: nothing to say


def test_wandb_asked_for_but_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"resdet\[wandb\]"):
        M.MetricsWriter(tmp_path, True, DashboardConfig(tensorboard=False, wandb=True))


def test_training_logs_to_wandb_offline(tiny_config, offline_wandb):
    path, out = tiny_config
    cfg = load_config(
        path, ["solver.max_iter=2", "dashboards.wandb=true", "dashboards.wandb_project=t"]
    )
    Trainer(cfg, log=lambda m: None).train()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (b"total_loss", b"loss_rpn_cls", b"time_per_iter"):
        assert key in data, key  # the metric names reached the run's log
    assert b"roi_heads" in data  # and the resolved config
