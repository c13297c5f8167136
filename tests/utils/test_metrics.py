"""metrics.jsonl: what MetricsWriter writes, read_metrics reads back, a killed run's torn last
line skipped with a warning; a resumed run's truncate keeps the records up to its checkpoint."""

import json
import logging

import pytest

from detection.utils.metrics import MetricsWriter, read_metrics

RECORDS = [
    {"iteration": 1, "total_loss": 2.5, "lr": 0.01},
    {"iteration": 2, "bbox/AP": 1.25},
    {"iteration": 2, "total_loss": 2.0, "lr": 0.02, "precision": "fp32"},
    {"iteration": 4, "total_loss": 1.5, "lr": 0.02},
]


def _write(folder, records, enabled=True):
    writer = MetricsWriter(folder, enabled)
    for record in records:
        writer.write(record)
    writer.close()
    return folder / "metrics.jsonl"


def test_read_back_what_was_written_from_the_folder_or_the_file(tmp_path):
    path = _write(tmp_path, RECORDS)
    assert read_metrics(tmp_path) == RECORDS
    assert read_metrics(path) == RECORDS
    assert [json.loads(line) for line in path.read_text().splitlines()] == RECORDS


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = _write(tmp_path, RECORDS)
    with path.open("a") as f:
        f.write('{"iteration": 5, "total_lo')  # the kill came mid-write
    with caplog.at_level(logging.WARNING, logger="detection"):
        assert read_metrics(tmp_path) == RECORDS
    assert f"{path}:5 is not JSON; skipped" in caplog.text


def test_a_missing_file_is_an_error_or_no_records(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no metrics.jsonl in {tmp_path}"):
        read_metrics(tmp_path)
    assert read_metrics(tmp_path, missing_ok=True) == []
    assert read_metrics(tmp_path / "gone", missing_ok=True) == []


def test_truncate_keeps_the_records_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = _write(tmp_path, RECORDS)
    with path.open("a") as f:
        f.write('{"iteration": 5, "total_lo')
    lines = path.read_text().splitlines()
    MetricsWriter(tmp_path, True).truncate(2)
    assert path.read_text().splitlines() == lines[:3]
    MetricsWriter(tmp_path, True).truncate(0)  # a fresh run starts a fresh file
    assert read_metrics(tmp_path) == []


def test_other_ranks_write_nothing(tmp_path):
    _write(tmp_path, RECORDS, enabled=False)
    assert not (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "tensorboard").exists()
