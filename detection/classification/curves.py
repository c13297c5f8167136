"""Training and validation error curves of classification runs, the paper's Fig. 4 / Fig. 6:
thin lines the training error, bold the validation error, one colour per run."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..utils.figures import pyplot, save_figure

logger = logging.getLogger(__name__)


@dataclass
class RunCurves:
    """A run's training records (iteration, epoch, train_err) and validation records
    (iteration, val/top1_err), read from its metrics.jsonl."""

    name: str
    train: list[dict]
    val: list[dict]

    def final_train_error(self) -> float:
        """Mean training top-1 error (%) over the last epoch's records (the last record alone
        covers only solver.log_period iterations)."""
        last_epoch = self.train[-1]["epoch"] - 1.0
        tail = [r for r in self.train if r["epoch"] > last_epoch] or self.train[-1:]
        return sum(r["train_err"] for r in tail) / len(tail)

    def final_val_error(self) -> float | None:
        """The last validation top-1 error (%), None when the run never validated."""
        return self.val[-1]["val/top1_err"] if self.val else None


def read_run(run_dir: str | os.PathLike) -> RunCurves:
    """The curves of a classification run folder (its metrics.jsonl); torn lines are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a classification run?")
    train, val = [], []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d is not JSON (a killed run's last line?); skipped", path, i)
            continue
        if "train_err" in record:
            train.append(record)
        elif "val/top1_err" in record:
            val.append(record)
    if not train:
        raise ValueError(f"{path} has no training records (train_err): not a classifier run?")
    return RunCurves(Path(run_dir).name, train, val)


def plot_error_curves(runs: list[RunCurves], output: str | os.PathLike, title: str = "") -> Path:
    """Training (thin) and validation (bold, markers) top-1 error against iterations."""
    plt = pyplot("plotting error curves")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, run in enumerate(runs):
        color = f"C{i}"
        ax.plot(
            [r["iteration"] for r in run.train],
            [r["train_err"] for r in run.train],
            color=color,
            lw=1,
            alpha=0.8,
            label=f"{run.name} train ({run.final_train_error():.1f}%)",
        )
        if run.val:
            ax.plot(
                [r["iteration"] for r in run.val],
                [r["val/top1_err"] for r in run.val],
                color=color,
                lw=2.5,
                marker="o",
                ms=3,
                label=f"{run.name} val ({run.final_val_error():.1f}%)",
            )
    ax.set(xlabel="iteration", ylabel="top-1 error (%)", title=title or "training / val error")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, output)


def summary_table(runs: list[RunCurves]) -> str:
    """Final training error (last epoch's mean) and validation error of each run, as text."""
    width = max(len(r.name) for r in runs)
    lines = [f"{'run':<{width}}  iterations  train err  val err"]
    for r in runs:
        val = r.final_val_error()
        lines.append(
            f"{r.name:<{width}}  {r.train[-1]['iteration']:>10}  {r.final_train_error():>8.2f}%"
            f"  {'-' if val is None else f'{val:.2f}%':>7}"
        )
    return "\n".join(lines)
