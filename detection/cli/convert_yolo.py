"""Convert YOLO labels (data.yaml or classes.txt) to COCO json, one per split.

    resdet convert-yolo --yolo-root my_data --split train --output my_data/train.json
    resdet convert-yolo --yolo-root my_data --split val --output my_data/val.json

The class list comes from data.yaml (`names:`) or classes.txt / obj.names; class k becomes
category k + 1. An image without a label file (or with an empty one) is kept without objects.
Boxes partly outside the image are clipped; boxes without area, wholly outside or not finite,
and label files without an image are skipped and counted (with file and line). A line that is
not `class cx cy w h` or names an unknown class stops the conversion, naming file and line.
The command prints the overrides to use it with: data.test.* for a test or val split, data.train.*
for any other.
"""

from __future__ import annotations

import argparse
import sys

from detection.config.cli import add_logging_arguments, configure_logging


def main(argv: list[str] | None = None) -> int:
    """Convert one split and write the COCO json; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--yolo-root", required=True, help="folder with data.yaml or classes.txt")
    parser.add_argument(
        "--split",
        help="train, val (or valid), test, or another key of data.yaml (e.g. trainval); "
        "default: every image under images/",
    )
    parser.add_argument("--output", required=True, help="COCO json to write")
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    from detection.cli._common import write_import
    from detection.data.yolo import SPLIT_ALIASES, convert_yolo

    try:
        coco, report = convert_yolo(args.yolo_root, args.split)
    except (OSError, ValueError) as e:
        parser.exit(1, f"{parser.prog}: {e}\n")
    evaluation = args.split in (*SPLIT_ALIASES["val"], *SPLIT_ALIASES["test"])
    return write_import(coco, report, args.output, coco["info"]["images_root"], evaluation)


if __name__ == "__main__":
    sys.exit(main())
