"""A training run's loss and AP curves (its metrics.jsonl), read and drawn to a PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..utils.figures import pyplot

logger = logging.getLogger(__name__)

LOSSES = ("total_loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box")


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (or of that file); lines that are not JSON (a
    killed run's torn last line) are skipped with a warning."""
    path = run_dir / "metrics.jsonl" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s:%d is not JSON; skipped", path, i)
    return records


def plot_training_curves(records: list[dict], output: Path, title: str) -> None:
    """The training losses (log scale) and, when the run evaluated, AP / AP50, into `output`."""
    plt = pyplot("plotting training curves")  # matplotlib on first use
    train = [r for r in records if "total_loss" in r]
    evals = [r for r in records if "bbox/AP" in r]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(12 if evals else 7, 4.5))
    axes = axes if evals else [axes]
    for key in LOSSES:
        pts = [(r["iteration"], r[key]) for r in train if key in r]
        if pts:
            axes[0].plot(*zip(*pts, strict=True), label=key, lw=2 if key == "total_loss" else 1)
    axes[0].set(xlabel="iteration", ylabel="loss", title=f"{title}: training losses")
    axes[0].set_yscale("log")
    axes[0].legend()
    if evals:
        for key in ("bbox/AP", "bbox/AP50"):
            pts = [(r["iteration"], r[key]) for r in evals if key in r]
            axes[1].plot(*zip(*pts, strict=True), marker="o", label=key.split("/")[1])
        axes[1].set(xlabel="iteration", ylabel="percent", title=f"{title}: COCO box AP")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
