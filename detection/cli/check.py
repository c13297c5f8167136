"""Check a config's datasets before training: annotations, image files, decoding.

    resdet check --config coco/faster_rcnn_R50_C4_1x.yaml
    resdet check --config CFG --split train --no-decode   # seconds, not minutes

Prints, per split, the usable images and boxes and every problem with the ids it concerns:
missing, empty, truncated or non-image files, NaN / negative / out-of-image boxes, unknown
categories. Exit status: 0 no problems, 1 problems found (training stops on them unless
data.skip_bad_images=true), 2 the dataset cannot be used at all (not COCO, unsafe paths).
"""

from __future__ import annotations

import logging
import sys

from detection.config.cli import (
    add_config_arguments,
    config_from_args,
    configure_logging,
    tool_parser,
)
from detection.data.check import check_dataset


def main(argv: list[str] | None = None) -> int:
    """Check the datasets; returns 0 (clean), 1 (problems) or 2 (unusable)."""
    parser = tool_parser(__doc__)
    add_config_arguments(parser)
    parser.add_argument("--split", choices=("train", "test", "all"), default="all")
    parser.add_argument(
        "--no-decode", action="store_true", help="skip decoding the images (only stat them)"
    )
    parser.add_argument("--workers", type=int, default=2, help="decoding threads")
    args, cfg = config_from_args(parser, argv)
    configure_logging(args)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    problems = 0
    data_log = logging.getLogger("detection.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)  # the report says what the dataset's warnings would
    try:
        for split in splits:
            report = check_dataset(cfg, split, decode=not args.no_decode, workers=args.workers)
            print(report.format())
            problems += report.num_problems
    except (ValueError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    finally:
        data_log.setLevel(level)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
