"""Compare runs' metrics.json as the paper's table: mAP@.5, mAP@[.5,.95], changes.

    resdet compare --baseline output/vgg16 output/r50 output/r101 [--format csv] \
        [--plot compare.png] [--paper]

A run is a metrics.json file or a folder holding metrics.json or eval/metrics.json (what
resdet evaluate writes). Each run is named by its embedded config's backbone; changes are
absolute (points) and relative (percent) against the baseline. --paper adds the paper's own
COCO-val numbers (VGG-16, ResNet-101), labelled as literature, with changes against the paper's
VGG-16.
"""

from __future__ import annotations

import sys

from detection.config.cli import configure_logging, tool_parser
from detection.evaluation.compare import (
    comparison_rows,
    dataset_mismatch,
    format_csv,
    format_markdown,
    load_entry,
    plot_comparison,
)


def _parser():
    parser = tool_parser(__doc__)
    parser.add_argument(
        "--baseline", required=True, metavar="RUN", help="the reference run (the paper: VGG-16)"
    )
    parser.add_argument("runs", nargs="*", metavar="RUN", help="runs compared to the baseline")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--plot", metavar="PNG", help="also draw a bar chart into this file")
    parser.add_argument("--paper", action="store_true", help="add the paper's COCO-val rows")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table (and draw the plot); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    try:
        baseline = load_entry(args.baseline)
        runs = [load_entry(run) for run in args.runs]
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    warning = dataset_mismatch([baseline, *runs])
    if warning:
        print(warning, file=sys.stderr)
    rows = comparison_rows(baseline, runs, paper=args.paper)
    print(format_markdown(rows) if args.format == "markdown" else format_csv(rows), end="\n")
    if args.plot:
        try:
            path = plot_comparison(rows, args.plot)
        except RuntimeError as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
