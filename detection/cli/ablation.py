"""Train and evaluate each member of an ablation set; print and write the table.

resdet ablation shapes/ablations/plain_vs_residual.yaml
resdet ablation shapes/ablations/shortcuts.yaml solver.max_iter=600
resdet ablation SET --reuse        # keep members already evaluated (same config)

A set file lists member configs (relative to it), a baseline member, overrides for all members
and an output folder (detection/analysis/ablation.py documents the format). Member <m> runs in
<output_dir>/<m> as resdet train would (checkpoints, metrics.jsonl, eval/metrics.json). The
table (mAP@.5, mAP@[.5,.95], changes against the baseline, parameters, final training loss) is
printed and written to <output_dir>/ablation.md and ablation.csv. KEY=VALUE overrides after the
flags apply to every member.
"""

from __future__ import annotations

import sys

from detection.analysis.ablation import (
    ablation_rows,
    format_ablation_markdown,
    load_ablation_set,
    run_ablation,
    write_tables,
)
from detection.cli._common import add_device_argument, chosen_device, say_device
from detection.config import ConfigError
from detection.config.cli import configure_logging, tool_parser
from detection.config.loader import resolve_config_path
from detection.data import ImageReadError


def main(argv: list[str] | None = None) -> int:
    """Run the set and write its table; returns 1 when a member failed."""
    parser = tool_parser(__doc__)
    parser.add_argument(
        "set", metavar="SET", help="ablation set file (YAML), or a shipped set's name"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every member"
    )
    parser.add_argument("--output-dir", help="overrides the set's output_dir")
    parser.add_argument(
        "--resume", action="store_true", help="continue each member from its last_checkpoint"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="skip members whose eval/metrics.json holds the same config",
    )
    add_device_argument(parser)
    # intermixed: overrides may follow flags (SET --output-dir D KEY=VALUE) as in other tools
    args = parser.parse_intermixed_args(argv)
    configure_logging(args)
    args.device = chosen_device(parser, args)
    try:
        ablation = load_ablation_set(resolve_config_path(args.set), args.output_dir)
        say_device(args)
        results = run_ablation(
            ablation, args.overrides, device=args.device, resume=args.resume, reuse=args.reuse
        )
    except (ConfigError, FileNotFoundError, ImageReadError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    rows = ablation_rows(results, ablation.baseline)
    title = ablation.description or ablation.name
    print(format_ablation_markdown(rows, title))
    paths = write_tables(rows, ablation.output_dir, title)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
