"""Plot the loss and AP curves of a training run (its metrics.jsonl) to a PNG.

python tools/plot_metrics.py output/shapes/demo_R18_C4 [--output curves.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detection.config.cli import add_logging_arguments, configure_logging
from detection.utils.figures import pyplot

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
            print(f"warning: {path}:{i} is not JSON; skipped", file=sys.stderr)
    return records


def plot(records: list[dict], output: Path, title: str) -> None:
    """The training losses (log scale) and, when the run evaluated, AP / AP50, into `output`."""
    plt = pyplot("tools/plot_metrics.py")  # matplotlib on first use: --help stays quick
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


def main(argv: list[str] | None = None) -> int:
    """Plot a run's curves; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="output directory of a run (or a metrics.jsonl)")
    parser.add_argument("--output", type=Path, help="PNG to write (default RUN/curves.png)")
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    try:
        records = read_metrics(args.run)
    except FileNotFoundError as e:
        parser.exit(2, f"error: {e}\n")
    if not any("total_loss" in r for r in records):
        parser.exit(2, f"error: {args.run} has no training records yet\n")
    output = args.output or (args.run if args.run.is_dir() else args.run.parent) / "curves.png"
    plot(records, output, args.run.name)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
