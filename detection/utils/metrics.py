"""A run's metrics.jsonl: one JSON object per line, each with its "iteration", written by
MetricsWriter (the trainers, rank 0, with TensorBoard where installed) and read back by
read_metrics, the one reader of every tool, analysis and plot. A run killed while writing leaves
a torn last line: read_metrics skips it with a warning, and a resumed run drops it
(MetricsWriter.truncate)."""

from __future__ import annotations

import functools
import hashlib
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
    """Appends one JSON object per record to metrics.jsonl, and sends the numbers to the
    dashboards the config asks for (`dashboards`: TensorBoard where installed, Weights & Biases
    when switched on); `config` is the run's resolved config as a dict, for W&B."""

    def __init__(
        self, output_dir: Path, enabled: bool, dashboards=None, config: dict | None = None
    ) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / FILENAME
        self.tb = self.wandb = None
        if not enabled or dashboards is None:
            return
        if dashboards.tensorboard:
            self.tb = _tensorboard(Path(output_dir) / "tensorboard")
        if dashboards.wandb:
            self.wandb = _wandb_run(Path(output_dir), dashboards.wandb_project, config or {})

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` (it must hold "iteration"); numbers also go to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        numbers = {
            k: v
            for k, v in record.items()
            if k != "iteration" and isinstance(v, int | float) and not isinstance(v, bool)
        }
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, record["iteration"])
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(numbers, step=record["iteration"])

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
        """Close the dashboards (metrics.jsonl is closed after every record)."""
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


@functools.cache
def _notice(message: str) -> None:
    logger.warning(message)


def _tensorboard(folder: Path):
    """A TensorBoard SummaryWriter, or None (with one notice) where TensorBoard is missing."""
    try:
        import tensorboard  # noqa: F401 -- torch's writer needs the package itself
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        _notice(
            "TensorBoard logging is off: the tensorboard package is not installed (pip install "
            "'resdet[tensorboard]'; dashboards.tensorboard=false silences this)"
        )
        return None
    return SummaryWriter(str(folder))


def _wandb_run(output_dir: Path, project: str, config: dict):
    """A Weights & Biases run named after the output folder; one id per folder, so a resumed
    run continues the same W&B run. Missing wandb is an error: it was asked for."""
    try:
        import wandb
    except ImportError:
        raise ImportError(
            "dashboards.wandb=true needs Weights & Biases: pip install 'resdet[wandb]' "
            "(or set dashboards.wandb=false)"
        ) from None
    run_id = hashlib.sha1(str(output_dir.resolve()).encode()).hexdigest()[:12]
    return wandb.init(
        project=project,
        name=output_dir.name,
        id=run_id,
        resume="allow",
        dir=str(output_dir),
        config=config,
    )
