"""Convert torchvision's Faster R-CNN weights into a resdet checkpoint.

    resdet convert-weights --source torchvision \
        --input fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --output R50_FPN_torchvision.pth

The checkpoint holds the weights, the config that reproduces torchvision's
fasterrcnn_resnet50_fpn and COCO's class names; every tensor is checked against that model
before anything is written. (`--weights fasterrcnn_resnet50_fpn_coco` does this by itself,
downloading the file first: see `resdet weights`.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.config.cli import add_logging_arguments, configure_logging


def main(argv: list[str] | None = None) -> int:
    """Convert and write the checkpoint; returns the exit status."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--source", choices=["torchvision"], default="torchvision")
    parser.add_argument("--input", required=True, help="state dict of fasterrcnn_resnet50_fpn")
    parser.add_argument("--output", required=True, help="checkpoint to write")
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    # the detector's modules (torchvision's ops, ~1.5 s) are imported once the arguments are good
    import torch

    from detection.modeling.zoo import torchvision_fpn_checkpoint
    from detection.utils.io import atomic_write

    try:
        state = torch.load(args.input, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        parser.exit(2, f"error: input not found: {args.input}\n")
    except Exception as e:
        parser.exit(2, f"error: cannot read {args.input} with weights_only=True: {e}\n")
    try:
        checkpoint = torchvision_fpn_checkpoint(state)
    except ValueError as e:
        parser.exit(2, f"error: {args.input}: {e}\n")
    atomic_write(Path(args.output), lambda f: torch.save(checkpoint, f), binary=True)
    print(
        f"wrote {args.output}: {len(checkpoint['model'])} tensors, config of "
        "fasterrcnn_resnet50_fpn"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
