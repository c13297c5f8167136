"""Convert LabelMe JSON files (rectangles, polygons) to one COCO-format json.

    resdet convert-labelme --labelme-dir my_photos --output my_photos.json

Every .json under the folder is read; its imagePath names the image. Rectangles become boxes,
polygons their bounding boxes; other shapes (circle, line, point) are skipped and counted.
Categories: the labels found, sorted (or --categories in the given order), ids 1..K. A file
without its image is skipped and counted; an unknown label (with --categories) or a size that
differs from the image stops the conversion, naming the file and shape.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from detection.cli._common import write_import
from detection.config.cli import add_logging_arguments, configure_logging


def main(argv: list[str] | None = None) -> int:
    """Convert and write the COCO json; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labelme-dir", required=True, help="folder of LabelMe .json files")
    parser.add_argument("--output", required=True, help="COCO json to write")
    parser.add_argument(
        "--categories", help="comma-separated class names, in label order (default: all labels)"
    )
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    from detection.data.labelme import convert_labelme

    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    try:
        coco, report = convert_labelme(args.labelme_dir, categories)
    except (OSError, ValueError) as e:
        parser.exit(1, f"{parser.prog}: {e}\n")
    return write_import(coco, report, args.output, Path(os.path.abspath(args.labelme_dir)))


if __name__ == "__main__":
    sys.exit(main())
