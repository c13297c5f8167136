"""What several commands share beyond detection.config.cli: the --device option, and how an
importer's COCO json is written and reported."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from detection.utils.device import DEVICE_HELP, describe_device, resolve_device


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device, `auto` by default: CUDA when available, else the CPU."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def chosen_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """args.device resolved (`auto` -> cuda or cpu); a device that cannot be used exits with
    status 2 saying why. What was chosen is said by say_device, once the inputs are checked
    (an error stays the only line a bad command prints)."""
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    args.device_line = describe_device(device, args.device)
    return device


def say_device(args: argparse.Namespace) -> None:
    """Print on stderr which device chosen_device chose, and why (the first process only)."""
    if os.environ.get("RANK", "0") == "0" and getattr(args, "device_line", None):
        print(args.device_line, file=sys.stderr, flush=True)


def write_import(coco: dict, report, output: str, images_root, evaluation: bool = False) -> int:
    """Write an importer's COCO json, print what it holds, what was skipped, and how to use it
    (an `evaluation` split as data.test, any other as data.train)."""
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    names = ", ".join(c["name"] for c in coco["categories"])
    print(
        f"wrote {path}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
        f"{len(coco['categories'])} categories: {names}"
    )
    if report.counts:
        print(report.format())
    if evaluation:
        print(f"evaluate with: data.test.annotations={path} data.test.images={images_root}")
    else:
        print(f"train with: data.train.annotations={path} data.train.images={images_root}")
    return 0
