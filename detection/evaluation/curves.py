"""A training run's loss and AP curves drawn to a PNG, from its metrics.jsonl records (read
with detection.utils.metrics.read_metrics)."""

from __future__ import annotations

from pathlib import Path

from ..utils.figures import pyplot

LOSSES = ("total_loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box")


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
