"""A run's metrics.jsonl: one JSON object per line, each with its "iteration", written by
MetricsWriter (the trainers, rank 0, with TensorBoard where installed) and read back by
read_metrics, the one reader of every tool, analysis and plot. A run killed while writing leaves
a torn last line: read_metrics skips it with a warning, and a resumed run drops it
(MetricsWriter.truncate)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FILENAME = "metrics.jsonl"


def metrics_path(run: str | os.PathLike) -> Path:
    """The metrics.jsonl of a run folder; a path that is not a folder is taken as the file."""
    run = Path(run)
    return run / FILENAME if run.is_dir() else run


def _lines(path: Path) -> list[tuple[int, str, dict[str, Any] | None]]:
    """(line number, line, its record or None where it is not JSON) for each line of `path`."""
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            out.append((i, line, json.loads(line)))
        except json.JSONDecodeError:
            out.append((i, line, None))
    return out


def read_metrics(run: str | os.PathLike, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (`run` is its output folder, or the file itself),
    in file order. Lines that are not JSON (a killed run's torn last line) are skipped with a
    warning. A missing file is a FileNotFoundError, or no records with `missing_ok`."""
    path = metrics_path(run)
    if not path.is_file():
        if missing_ok:
            return []
        raise FileNotFoundError(f"no {FILENAME} in {run}")
    records = []
    for i, _, record in _lines(path):
        if record is None:
            logger.warning("%s:%d is not JSON; skipped (a run killed while writing it)", path, i)
        else:
            records.append(record)
    return records


class MetricsWriter:
    """Appends one JSON object per record to metrics.jsonl (and TensorBoard when installed)."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / FILENAME
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` (it must hold "iteration"); numbers also go to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "iteration" and isinstance(v, int | float) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, record["iteration"])
            self.tb.flush()

    def truncate(self, iteration: int) -> None:
        """Drop the records written after `iteration`: a run resumed there redoes them (torn
        lines from a kill go too); a fresh run (0) starts a fresh file."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [
            line
            for _, line, record in _lines(self.path)
            if record is not None and record.get("iteration", 0) <= iteration
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        """Close the TensorBoard writer (metrics.jsonl is closed after every record)."""
        if self.tb is not None:
            self.tb.close()
