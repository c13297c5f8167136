"""Write dataset images with their boxes drawn, as the model receives them.

    resdet browse --config shapes/Base-shapes.yaml --output browse \
        --num 20 [--split test] [KEY=VALUE ...]

The train split goes through the training augmentation (multi-scale resize, flip, jitter);
the test split is resized as the model resizes it at test time.
"""

from __future__ import annotations

import argparse
import sys

from detection.config.cli import (
    add_config_arguments,
    add_logging_arguments,
    config_from_args,
    configure_logging,
    print_config,
)
from detection.data import browse_dataset


def main(argv: list[str] | None = None) -> int:
    """Write the drawn images; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    add_logging_arguments(parser)
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the images")
    parser.add_argument("--num", type=int, default=20, help="number of images to write")
    args, cfg = config_from_args(parser, argv)
    configure_logging(args)
    print_config(cfg)
    written = browse_dataset(cfg, args.split, args.output, args.num)
    print(f"wrote {len(written)} images to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
