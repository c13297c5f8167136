"""Plot the loss and AP curves of a training run (its metrics.jsonl) to a PNG.

resdet plot output/shapes/demo_R18_C4 [--output curves.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.config.cli import add_logging_arguments, configure_logging


def main(argv: list[str] | None = None) -> int:
    """Plot a run's curves; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="output directory of a run (or a metrics.jsonl)")
    parser.add_argument("--output", type=Path, help="PNG to write (default RUN/curves.png)")
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    from detection.evaluation.curves import plot_training_curves
    from detection.utils.metrics import read_metrics

    try:
        records = read_metrics(args.run)
    except FileNotFoundError as e:
        parser.exit(2, f"error: {e}\n")
    if not any("total_loss" in r for r in records):
        parser.exit(2, f"error: {args.run} has no training records yet\n")
    output = args.output or (args.run if args.run.is_dir() else args.run.parent) / "curves.png"
    plot_training_curves(records, output, args.run.name)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
