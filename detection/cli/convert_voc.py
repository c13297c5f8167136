"""Convert Pascal VOC XML annotations to one COCO-format json.

    resdet convert-voc --voc-root VOCdevkit/VOC2007 --output voc07_trainval.json \
        --image-set VOCdevkit/VOC2007/ImageSets/Main/trainval.txt

Categories are the XML class names sorted (or --categories in the given order), ids 1..K.
Objects marked difficult become iscrowd=1 boxes, which COCO evaluation ignores and training
drops (--difficult drop leaves them out). Boxes: VOC's 1-based inclusive corners become
COCO [x, y, w, h] with x = xmin - 1, w = xmax - xmin + 1. Train on the result with
data.train.annotations=OUTPUT data.train.images=<voc-root>/JPEGImages.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detection.config.cli import add_logging_arguments, configure_logging
from detection.data.voc import convert_voc


def main(argv: list[str] | None = None) -> int:
    """Convert and write the COCO json; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc-root", required=True, help="folder holding the VOC subfolders")
    parser.add_argument("--output", required=True, help="COCO json to write")
    parser.add_argument("--images-subdir", default="JPEGImages")
    parser.add_argument("--annotations-subdir", default="Annotations")
    parser.add_argument("--image-set", help="file of image ids to convert (default: every XML)")
    parser.add_argument(
        "--categories", help="comma-separated class names, in label order (default: XML names)"
    )
    parser.add_argument(
        "--difficult",
        choices=("crowd", "drop"),
        default="crowd",
        help="difficult objects: iscrowd=1 (ignored in evaluation) or dropped",
    )
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    try:
        coco = convert_voc(
            args.voc_root,
            images_subdir=args.images_subdir,
            annotations_subdir=args.annotations_subdir,
            image_set=args.image_set,
            categories=categories,
            difficult=args.difficult,
        )
    except (OSError, ValueError) as e:
        parser.exit(1, f"{parser.prog}: {e}\n")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(coco))
    crowd = sum(a["iscrowd"] for a in coco["annotations"])
    print(
        f"wrote {output}: {len(coco['images'])} images, {len(coco['annotations'])} boxes "
        f"({crowd} difficult as iscrowd), {len(coco['categories'])} categories: "
        + ", ".join(c["name"] for c in coco["categories"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
