"""List the weights resdet takes by name (--weights NAME), or fetch them now.

    resdet weights                                 # the names, their sources, what is cached
    resdet weights fasterrcnn_resnet50_fpn_coco    # download (hash checked) and convert now

A name works wherever a detector checkpoint does: `resdet infer --weights NAME`, `resdet
evaluate --weights NAME`, `model.weights=NAME` (fine-tuning), Predictor.from_pretrained(NAME).
The file is downloaded into the torch hub cache on first use (TORCH_HOME moves it) and
converted once; without a network, the error says where to put a copy.
"""

from __future__ import annotations

import argparse
import sys

from detection.config.cli import configure_logging, tool_parser


def _parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    parser.add_argument("name", nargs="?", help="published weights to fetch and convert now")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """List the published weights, or fetch one; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    from detection.modeling.zoo import (
        DETECTORS,
        converted_path,
        hub_checkpoints_dir,
        pretrained_checkpoint,
    )

    if args.name is None:
        print("Published detectors (--weights NAME, model.weights=NAME, from_pretrained(NAME)):")
        for name, detector in DETECTORS.items():
            cached = converted_path(detector)
            state = f"cached: {cached}" if cached.is_file() else "downloaded on first use"
            print(f"  {name}\n      {detector.description}\n      {detector.url}; {state}")
            if detector.aliases:
                print(f"      also called: {', '.join(detector.aliases)}")
        print(
            "ImageNet backbones (model.backbone.weights=NAME): torchvision's names, e.g. "
            "IMAGENET1K_V1,\n  downloaded on first use.\n"
            f"Cache: {hub_checkpoints_dir()} (TORCH_HOME moves it)"
        )
        return 0
    try:
        path = pretrained_checkpoint(args.name, progress=not args.no_progress)
    except KeyError as e:
        parser.exit(2, f"{parser.prog}: error: {e.args[0]}\n")
    except (OSError, ValueError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
