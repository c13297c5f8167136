"""Split a COCO json into train / val jsons (images stay put), or keep classes.

    resdet split ann.json --out-dir data/split --every 5            # 5th to val
    resdet split ann.json --out-dir data/split --val-fraction 0.2 --seed 0
    resdet split ann.json --out-dir data/sub --classes circle,square   # no split

--every K sends the K-th, 2K-th, ... image of the file's order to val (deterministic);
--val-fraction F draws round(F * images) val images at random with --seed. Without either, one
file OUT_DIR/<input name> is written with only the --classes kept. Per-class image and box
counts are printed for every output. Both outputs keep each image's file_name, so train and
evaluate with the input's image folder: data.train.annotations=OUT_DIR/train.json
data.train.images=IMAGES data.test.annotations=OUT_DIR/val.json data.test.images=IMAGES.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detection.config.cli import configure_logging, tool_parser
from detection.data.split import class_counts, keep_classes, split_coco, val_indices
from detection.utils.io import write_json


def _parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    parser.add_argument("annotations", help="COCO-format json to split")
    parser.add_argument("--out-dir", required=True, help="folder for train.json and val.json")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--every", type=int, metavar="K", help="every K-th image to val")
    how.add_argument("--val-fraction", type=float, metavar="F", help="random fraction to val")
    parser.add_argument("--seed", type=int, default=0, help="seed of --val-fraction's draw")
    parser.add_argument("--classes", help="comma-separated class names to keep (default: all)")
    return parser


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path} as json: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path} is not a COCO-format json (no 'images' list)")
    if not isinstance(data.get("categories"), list):
        raise ValueError(f"{path} is not a COCO-format json (no 'categories' list)")
    return data


def _summary(path: Path, data: dict) -> str:
    lines = [f"wrote {path}: {len(data['images'])} images, {len(data['annotations'])} boxes"]
    lines += [
        f"  {name:<20} {images:>6} images {boxes:>7} boxes"
        for name, images, boxes in class_counts(data)
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Split (and filter) the json; returns the exit status (2: bad input, nothing written)."""
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    source = Path(args.annotations)
    try:
        data = _read(source)
        if args.classes:
            data = keep_classes(data, [c.strip() for c in args.classes.split(",") if c.strip()])
        if args.every is None and args.val_fraction is None:
            outputs = {source.name: data}
        else:
            val = val_indices(
                len(data["images"]),
                every=args.every,
                val_fraction=args.val_fraction,
                seed=args.seed,
            )
            train, test = split_coco(data, val)
            outputs = {"train.json": train, "val.json": test}
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    out_dir = Path(args.out_dir)
    if out_dir.resolve() == source.parent.resolve() and source.name in outputs:
        parser.exit(2, f"{parser.prog}: error: --out-dir would overwrite the input {source}\n")
    for name, part in outputs.items():
        path = write_json(out_dir / name, part)
        print(_summary(path, part))
    return 0


if __name__ == "__main__":
    sys.exit(main())
